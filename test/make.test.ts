import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFile, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fg from 'fast-glob';
import { generate } from '../src/generate/generate.js';
import { sha256Hex } from '../src/util/hash.js';
import { runCli, withTempDir } from './helpers/cli.js';
import { kernel, makeProject, writeLockfileFor } from './helpers/graph-project.js';
import type { KernelDescriptor } from '../src/config/types.js';

// The generated Makefile with real GNU make. The runner is replaced by a
// stand-in (FALCO_PROBES) that, like `falco-probes build //probes/<os>:<name>`,
// publishes the one target's file under repository/ (here: its key, written
// atomically, at the output targets.json gives the label) and logs the call;
// the Makefile is the real one.

const STAND_IN = `#!/bin/sh
# stand-in for "falco-probes build //probes/OS:NAME --wait-lock -j 1"
set -eu
[ "$1" = build ] || { echo "unexpected command $1" >&2; exit 2; }
label=$2
case " $* " in *" --wait-lock -j 1 "*) ;; *) echo "no --wait-lock -j 1: $*" >&2; exit 2 ;; esac
[ -n "$FALCO_PROBES_KEY" ] || { echo "no FALCO_PROBES_KEY" >&2; exit 2; }
out=$(node -e 'const t = JSON.parse(require("fs").readFileSync("generated/targets.json", "utf8")).targets.find((x) => x.label === process.argv[1]); if (!t) process.exit(3); process.stdout.write("repository/" + t.output);' "$label")
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
printf '%s\\n' "$FALCO_PROBES_KEY" > "$tmp"
mv -f "$tmp" "$out"
printf '%s\\n' "\${label#*:}" >> "$STAND_IN_LOG"
`;

type Make = (args: string[]) => { code: number; stdout: string; stderr: string };

function makeIn(root: string): Make {
  return (args) => {
    const r = spawnSync('make', ['-f', 'generated/Makefile', `FALCO_PROBES=sh ${join(root, 'stand-in.sh')}`, ...args], {
      cwd: root,
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, STAND_IN_LOG: join(root, 'calls.log'), MAKEFLAGS: '' },
    });
    if (r.error) throw r.error;
    return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
  };
}

/** Target names in `make -n` output (the recipes make would run). */
const planned = (stdout: string) =>
  stdout
    .split('\n')
    .filter((l) => l.includes(' build //probes/'))
    .map((l) => / build \/\/probes\/[^:\s]+:(\S+) /.exec(l)![1]!)
    .sort();

const calls = async (root: string) => (await readFile(join(root, 'calls.log'), 'utf8').catch(() => '')).split('\n').filter(Boolean);

test('make decides by key: -q after a build, exactly the changed and the new targets after a lockfile change, -j4 safe', async () => {
  await withTempDir(async (root) => {
    const kernels: KernelDescriptor[] = [
      kernel('6.1.0-50-amd64'),
      kernel('6.1.0-50-cloud-amd64', { flavour: 'cloud-amd64' }),
      kernel('6.12.9+deb12-amd64'),
      kernel('5.15.0-24~20.04.3-generic'),
      kernel('6.13.2-1-amd64'), // above falco's range: example only
    ];
    await makeProject(root, { oses: { debian12: kernels, other: [kernel('5.10.0-30-arm64', { machine: 'aarch64' })] } });
    await writeFile(join(root, 'stand-in.sh'), STAND_IN);
    await generate(root);
    const make = makeIn(root);
    const targets = JSON.parse(await readFile(join(root, 'generated', 'targets.json'), 'utf8')).targets as {
      name: string;
      key: string;
      output: string;
      os: string;
    }[];
    assert.equal(targets.length, 11);

    assert.equal(make(['-q']).code, 1, 'nothing built yet');
    const full = make(['-j4', 'all']);
    assert.equal(full.code, 0, full.stderr);
    assert.equal((await calls(root)).length, 11);
    for (const t of targets)
      assert.equal(await readFile(join(root, 'repository', t.output), 'utf8'), `${t.key}\n`, `${t.output} holds its key`);
    const leftovers = (await fg('repository/**', { cwd: root, dot: true })).filter((f) => f.includes('.tmp.'));
    assert.deepEqual(leftovers, [], 'no temporary files left by the parallel run');
    assert.equal(make(['-q']).code, 0, 'make -q: everything up to date');
    assert.deepEqual(planned(make(['-n']).stdout), []);

    // The same lockfile rewritten (new mtime, same bytes), and generate again: still up to date.
    await utimes(join(root, 'kernels', 'debian12.lock.yaml'), new Date(), new Date());
    await generate(root);
    assert.equal(make(['-q']).code, 0);

    // One kernel's package sha256 changes: exactly its targets are out of date.
    const changed = kernels.map((k) =>
      k.name === '6.1.0-50-cloud-amd64'
        ? { ...k, packages: k.packages.map((p, i) => (i === 0 ? { ...p, sha256: sha256Hex('rebuilt package') } : p)) }
        : k,
    );
    await writeLockfileFor(root, 'debian12', changed);
    await generate(root);
    assert.equal(make(['-q']).code, 1);
    assert.deepEqual(planned(make(['-n']).stdout), ['6.1.0-50-cloud-amd64-example-1.0.0', '6.1.0-50-cloud-amd64-falco-9.1.0+driver']);
    assert.deepEqual(planned(make(['-n', 'other']).stdout), [], 'the other OS is untouched');
    assert.equal(make(['-j4']).code, 0);
    assert.equal((await calls(root)).length, 13);
    assert.equal(make(['-q']).code, 0);

    // A new kernel: exactly its targets.
    await writeLockfileFor(root, 'debian12', [...changed, kernel('6.1.0-51-amd64')]);
    await generate(root);
    assert.deepEqual(planned(make(['-n']).stdout), ['6.1.0-51-amd64-example-1.0.0', '6.1.0-51-amd64-falco-9.1.0+driver']);
    assert.equal(make(['-j4', 'debian12']).code, 0);
    assert.equal(make(['-q']).code, 0);

    // An edit to the local driver's source moves every example key, and only those.
    await appendFile(join(root, 'drivers', 'example', 'probe.c'), '/* changed */\n');
    await generate(root);
    const rebuild = planned(make(['-n']).stdout);
    assert.equal(rebuild.length, 7);
    assert.ok(
      rebuild.every((n) => n.endsWith('-example-1.0.0')),
      rebuild.join(' '),
    );
    // ...while a kbuild leftover in it (ignored by the tree hash) moves nothing.
    assert.equal(make(['-j4']).code, 0);
    assert.equal(make(['-q']).code, 0);
    await writeFile(join(root, 'drivers', 'example', '.probe.o.cmd'), 'cmd_probe.o := clang ...\n');
    await writeFile(join(root, 'drivers', 'example', 'probe.o'), 'object');
    await generate(root);
    assert.equal(make(['-q']).code, 0);

    // Lost local state (.falco-probes/) with the repository kept: generate dates the stamps of
    // probes the index holds for their key, so nothing is rebuilt; without an index, everything is.
    await rm(join(root, '.falco-probes'), { recursive: true });
    assert.equal(make(['-q']).code, 1);
    const now = JSON.parse(await readFile(join(root, 'generated', 'targets.json'), 'utf8')).targets as typeof targets;
    const { serializeIndex } = await import('../src/repository/index-file.js');
    const probes = [];
    for (const t of now) {
      const bytes = await readFile(join(root, 'repository', t.output));
      probes.push({
        file: t.output,
        key: t.key,
        sha256: sha256Hex(bytes),
        size: bytes.length,
        os: t.os,
        kernel: t.name,
        driver: 'd',
        driverVersion: 'v',
        arch: 'x86_64',
        kind: 'bpf',
      });
    }
    await writeFile(join(root, 'repository', 'index.json'), serializeIndex({ version: 1, probes }));
    const restored = await runCli(['generate'], { cwd: root });
    assert.equal(restored.code, 0, restored.stderr);
    assert.match(restored.stdout, new RegExp(`make key stamps: ${now.length} created for probes the repository holds`));
    assert.equal(make(['-q']).code, 0, 'the published probes are kept');
  });
});

test('the Makefile refuses to run outside the project root', async () => {
  await withTempDir(async (root) => {
    await makeProject(root, { oses: { debian12: [kernel('6.1.0-50-amd64')] } });
    await generate(root);
    const r = spawnSync('make', ['-f', join(root, 'generated', 'Makefile'), '-n'], {
      cwd: join(root, 'generated'),
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, MAKEFLAGS: '' },
    });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /run make from the project root/);
  });
});
