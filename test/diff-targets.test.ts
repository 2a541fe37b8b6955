import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, withTempDir } from './helpers/cli.js';

// diff-targets through the real binary: added, removed and rekeyed targets,
// the labels a PR's CI builds (with a label filter), and the markdown table.

const t = (name: string, key: string, arch = 'x86_64') => ({
  label: `//probes/debian12:${name}`,
  name,
  key: key.repeat(64).slice(0, 64),
  os: 'debian12',
  arch,
  kind: 'kmod',
  driver: 'scap',
  driverVersion: '0.23.2',
  output: `0.23.2/${arch}/${name}.ko`,
  labels: ['os:debian12', `arch:${arch}`],
});

test('diff-targets: added, removed, rekeyed; labels to build; markdown', async () => {
  await withTempDir(async (dir) => {
    const old = [t('a', '1'), t('b', '2'), t('c', '3'), t('d', '4', 'aarch64')];
    const now = [t('a', '1'), t('b', '9'), t('e', '5'), t('d', '8', 'aarch64')];
    await writeFile(join(dir, 'old.json'), JSON.stringify({ version: 1, targets: old }));
    await writeFile(join(dir, 'new.json'), JSON.stringify({ version: 1, targets: now }));
    const cli = (...args: string[]) => runCli(['diff-targets', 'old.json', 'new.json', ...args], { cwd: dir });
    const json = await cli('--json');
    assert.equal(json.code, 0, json.stderr);
    const d = JSON.parse(json.stdout) as {
      added: { name: string }[];
      removed: { name: string }[];
      rekeyed: { after: { name: string } }[];
      unchanged: number;
    };
    assert.deepEqual(
      [d.added.map((x) => x.name), d.removed.map((x) => x.name), d.rekeyed.map((x) => x.after.name), d.unchanged],
      [['e'], ['c'], ['b', 'd'], 1],
    );
    assert.equal((await cli('--format', 'labels')).stdout, '//probes/debian12:b\n//probes/debian12:d\n//probes/debian12:e\n');
    assert.equal((await cli('--format', 'labels', '--label', 'arch=x86_64')).stdout, '//probes/debian12:b\n//probes/debian12:e\n');
    const md = (await cli()).stdout;
    assert.match(md, /^### Targets: 1 added, 1 removed, 2 rekeyed \(4 → 4; 1 unchanged\)$/m);
    assert.match(md, /^\| rekeyed \| `\/\/probes\/debian12:b` \| x86_64 \| kmod \| `222222222222` → `999999999999` \|$/m);
    assert.match((await cli('--max-rows', '1')).stdout, /… and 3 more/);
    const same = await runCli(['diff-targets', 'old.json', 'old.json'], { cwd: dir });
    assert.match(same.stdout, /nothing to build/);
    const bad = await cli('--format', 'json', '--json', '--format', 'text');
    assert.equal(bad.code, 2);
  });
});
