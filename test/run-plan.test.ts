import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, rm, writeFile, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { withTempDir } from './helpers/cli.js';
import { sha256Hex } from '../src/util/hash.js';
import { LocalRepository } from '../src/repository/local.js';
import { planTargets } from '../src/run/plan.js';
import type { Target } from '../src/graph/types.js';

// Out-of-date decisions against a real repository on disk: only the index
// entry, its key and the file's sha256 count; timestamps do not.

function target(name: string, key: string): Target {
  return {
    label: `//probes/testos:${name}`,
    name,
    os: 'testos',
    kernel: { name, release: name, version: '#1', machine: 'x86_64', kernelVersion: '1', targetId: 'testos', packages: [] },
    osRelease: { ID: 'testos' },
    driver: {
      name: 'example',
      version: '1.0.0',
      source: { path: 'x' },
      recipe: 'kbuild',
      bpfDir: '.',
      kinds: ['bpf'],
      object: 'probe.o',
      sourceSha256: '0'.repeat(64),
    },
    builder: { kind: 'host', clang: '14.0.6' },
    kind: 'bpf',
    arch: 'x86_64',
    key,
    probeFile: `falco_testos_${name}_1.o`,
    output: `1.0.0/x86_64/falco_testos_${name}_1.o`,
  };
}

test('each reason, and up to date regardless of modification times', async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, 'repo');
    const keyA = sha256Hex('a');
    const names = ['fresh', 'rekeyed', 'deleted', 'damaged', 'touched', 'never'];
    const repo = await LocalRepository.openForWrite(root);
    for (const n of names.slice(0, 5)) {
      const file = join(dir, `${n}.o`);
      await writeFile(file, `probe ${n}`);
      await repo.publish(target(n, keyA), file, { sha256: sha256Hex(`probe ${n}`), size: `probe ${n}`.length });
    }
    await repo.close();
    const path = (n: string) => join(root, target(n, keyA).output);
    await rm(path('deleted'));
    await appendFile(path('damaged'), 'x');
    await utimes(path('touched'), new Date('2001-01-01'), new Date('2001-01-01'));

    const targets = names.map((n) => target(n, n === 'rekeyed' ? sha256Hex('b') : keyA));
    const plan = await planTargets(targets, await LocalRepository.read(root));
    assert.deepEqual(
      plan.map((p) => [p.target.name, p.reason]),
      [
        ['fresh', undefined],
        ['rekeyed', 'key-changed'],
        ['deleted', 'file-missing'],
        ['damaged', 'file-corrupt'],
        ['touched', undefined],
        ['never', 'no-probe'],
      ],
    );
    assert.match(plan[1]!.detail!, /index has key [0-9a-f]{12}, target has [0-9a-f]{12}/);
  });
});

test('a file replaced by other bytes of the same size is corrupt (the hash decides, not the size)', async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, 'repo');
    const repo = await LocalRepository.openForWrite(root);
    const file = join(dir, 'p.o');
    await writeFile(file, 'AAAA');
    const t = target('k', sha256Hex('k'));
    await repo.publish(t, file, { sha256: sha256Hex('AAAA'), size: 4 });
    await repo.close();
    await writeFile(join(root, t.output), 'BBBB');
    const [p] = await planTargets([t], await LocalRepository.read(root));
    assert.equal(p!.reason, 'file-corrupt');
  });
});
