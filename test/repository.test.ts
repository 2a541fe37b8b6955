import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, execFileSync } from 'node:child_process';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { withTempDir } from './helpers/cli.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { sha256Hex } from '../src/util/hash.js';
import { LocalRepository, LOCK_FILE } from '../src/repository/local.js';
import { parseIndexText, readIndex } from '../src/repository/index-file.js';
import { acquireLock } from '../src/repository/lock.js';
import type { Target } from '../src/graph/types.js';

// The local repository with real files: publishing rules, index and
// SHA256SUMS on disk (checked with the real sha256sum), the lock.

function target(name: string, key: string): Target {
  return {
    label: `//probes/testos:${name}`,
    name,
    os: 'testos',
    kernel: { name, release: name, version: '#1 SMP', machine: 'x86_64', kernelVersion: '1', targetId: 'testos', packages: [] },
    osRelease: { ID: 'testos' },
    driver: {
      name: 'example',
      version: '1.0.0',
      source: { path: 'examples/probe' },
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

const KEY_A = 'a'.repeat(64);
const KEY_B = 'b'.repeat(64);

async function built(dir: string, bytes: string): Promise<{ file: string; sha256: string; size: number }> {
  const file = join(dir, `built-${sha256Hex(bytes).slice(0, 8)}.o`);
  await writeFile(file, bytes);
  return { file, sha256: sha256Hex(bytes), size: Buffer.byteLength(bytes) };
}

test('publish writes the probe, index.json and SHA256SUMS that sha256sum accepts', async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, 'repo');
    const repo = await LocalRepository.openForWrite(root);
    const b = await built(dir, 'probe one');
    const r = await repo.publish(target('6.1.0-1', KEY_A), b.file, b);
    assert.equal(r.status, 'published');
    await repo.close();
    assert.equal(await readFile(join(root, '1.0.0/x86_64/falco_testos_6.1.0-1_1.o'), 'utf8'), 'probe one');
    const index = await readIndex(root);
    assert.deepEqual(
      index.probes.map((p) => [p.file, p.key, p.sha256, p.size]),
      [['1.0.0/x86_64/falco_testos_6.1.0-1_1.o', KEY_A, b.sha256, 9]],
    );
    const check = spawnSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: root, encoding: 'utf8' });
    assert.equal(check.status, 0, check.stderr);
    assert.match(check.stdout, /falco_testos_6\.1\.0-1_1\.o: OK/);
    // The lock is gone after close.
    await assert.rejects(stat(join(root, LOCK_FILE)), { code: 'ENOENT' });
  });
});

test('same bytes: nothing is written (same mtime); a new key with the same bytes only updates the index', async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, 'repo');
    const repo = await LocalRepository.openForWrite(root);
    const b = await built(dir, 'bytes');
    await repo.publish(target('k1', KEY_A), b.file, b);
    const probe = join(root, '1.0.0/x86_64/falco_testos_k1_1.o');
    const before = await stat(probe);
    const indexBefore = await stat(join(root, 'index.json'));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal((await repo.publish(target('k1', KEY_A), b.file, b)).status, 'unchanged');
    assert.equal((await stat(join(root, 'index.json'))).mtimeMs, indexBefore.mtimeMs);
    assert.equal((await repo.publish(target('k1', KEY_B), b.file, b)).status, 'rekeyed');
    assert.equal((await stat(probe)).mtimeMs, before.mtimeMs);
    await repo.close();
    assert.equal((await readIndex(root)).probes[0]!.key, KEY_B);
  });
});

test('other bytes for a published file fail with kind reproducibility and keep the published probe', async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, 'repo');
    const repo = await LocalRepository.openForWrite(root);
    const first = await built(dir, 'first build');
    const second = await built(dir, 'second build');
    await repo.publish(target('k1', KEY_A), first.file, first);
    for (const key of [KEY_A, KEY_B]) {
      await assert.rejects(repo.publish(target('k1', key), second.file, second), (err: unknown) => {
        assert.ok(err instanceof FalcoProbesError);
        assert.equal(err.kind, 'reproducibility');
        assert.match(err.message, /kept the published probe|kept it/);
        return true;
      });
    }
    await repo.close();
    assert.equal(await readFile(join(root, '1.0.0/x86_64/falco_testos_k1_1.o'), 'utf8'), 'first build');
    assert.equal((await readIndex(root)).probes[0]!.sha256, first.sha256);
    assert.equal((await readIndex(root)).probes[0]!.key, KEY_A);
  });
});

test('a deleted probe is restored by a rebuild with the same bytes; other bytes are refused', async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, 'repo');
    const repo = await LocalRepository.openForWrite(root);
    const b = await built(dir, 'the probe');
    await repo.publish(target('k1', KEY_A), b.file, b);
    await rm(join(root, '1.0.0/x86_64/falco_testos_k1_1.o'));
    const other = await built(dir, 'not the probe');
    await assert.rejects(repo.publish(target('k1', KEY_A), other.file, other), { kind: 'reproducibility' });
    assert.equal((await repo.publish(target('k1', KEY_A), b.file, b)).status, 'restored');
    await repo.close();
    assert.equal(await readFile(join(root, '1.0.0/x86_64/falco_testos_k1_1.o'), 'utf8'), 'the probe');
  });
});

test('a probe on disk without an index entry (killed between the two writes) is adopted when the bytes agree', async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, 'repo');
    await mkdir(join(root, '1.0.0/x86_64'), { recursive: true });
    await writeFile(join(root, '1.0.0/x86_64/falco_testos_k1_1.o'), 'orphan');
    await writeFile(join(root, '1.0.0/x86_64/falco_testos_k2_1.o'), 'orphan two');
    const repo = await LocalRepository.openForWrite(root);
    const same = await built(dir, 'orphan');
    const other = await built(dir, 'different');
    assert.equal((await repo.publish(target('k1', KEY_A), same.file, same)).status, 'adopted');
    await assert.rejects(repo.publish(target('k2', KEY_A), other.file, other), { kind: 'reproducibility' });
    await repo.close();
    assert.deepEqual(
      (await readIndex(root)).probes.map((p) => p.file),
      ['1.0.0/x86_64/falco_testos_k1_1.o'],
    );
  });
});

test('many publishes at once: every one lands in the index', async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, 'repo');
    const repo = await LocalRepository.openForWrite(root);
    const names = Array.from({ length: 40 }, (_, i) => `k${i}`);
    const files = await Promise.all(names.map((n) => built(dir, `probe ${n}`)));
    await Promise.all(names.map((n, i) => repo.publish(target(n, KEY_A), files[i]!.file, files[i]!)));
    await repo.close();
    const index = await readIndex(root);
    assert.equal(index.probes.length, 40);
    const sums = (await readFile(join(root, 'SHA256SUMS'), 'utf8')).trim().split('\n');
    assert.equal(sums.length, 40);
    assert.equal(spawnSync('sha256sum', ['-c', '--quiet', 'SHA256SUMS'], { cwd: root }).status, 0);
  });
});

test('a malformed index is a clear error naming the file, line and column', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'index.json');
    assert.throws(
      () => parseIndexText('{\n  "version": 1,\n  "probes": [,]\n}\n', file),
      (err: unknown) => {
        assert.ok(err instanceof FalcoProbesError);
        assert.equal(err.kind, 'config');
        assert.match(err.format(), new RegExp(`^${file}:3:\\d+: malformed repository index`));
        return true;
      },
    );
    const entry = {
      file: '1.0.0/x86_64/p.o',
      key: KEY_A,
      sha256: 'nothex',
      size: 1,
      os: 'o',
      kernel: 'k',
      driver: 'd',
      driverVersion: '1',
      arch: 'x86_64',
      kind: 'bpf',
    };
    const text = JSON.stringify({ version: 1, probes: [entry] }, null, 2);
    assert.throws(
      () => parseIndexText(text, file),
      (err: unknown) => {
        assert.ok(err instanceof FalcoProbesError);
        assert.match(err.format(), new RegExp(`^${file}:7:\\d+: malformed repository index: probes\\.0\\.sha256 must match`));
        return true;
      },
    );
    const outside = JSON.stringify({ version: 1, probes: [{ ...entry, sha256: KEY_A, file: '../../etc/passwd' }] }, null, 2);
    assert.throws(() => parseIndexText(outside, file), /refusing repository path/);
    // readIndex of a repository with such a file refuses to open it for writing.
    await writeFile(file, '{"version": 2, "probes": []}');
    await assert.rejects(LocalRepository.openForWrite(dir), /version must be equal to constant/);
    await assert.rejects(stat(join(dir, LOCK_FILE)), { code: 'ENOENT' }, 'the lock is released after a failed open');
  });
});

test('a second writer fails on the lock, naming the holder; --wait-lock waits for the release', async () => {
  await withTempDir(async (dir) => {
    const first = await LocalRepository.openForWrite(dir);
    await assert.rejects(LocalRepository.openForWrite(dir), (err: unknown) => {
      assert.ok(err instanceof FalcoProbesError);
      assert.equal(err.kind, 'lock');
      assert.match(err.message, new RegExp(`pid ${process.pid} on ${hostname()}`));
      return true;
    });
    let waited = false;
    const second = LocalRepository.openForWrite(dir, { wait: true, pollMs: 20, onWait: () => (waited = true) });
    await new Promise((r) => setTimeout(r, 100));
    await first.close();
    const repo = await second;
    assert.ok(waited);
    await repo.close();
  });
});

test('a lock left by a dead process (kill -9) is broken', async () => {
  await withTempDir(async (dir) => {
    // A real process that is gone by now: its pid is free (or reused, which the check also handles by staying locked).
    const dead = Number(execFileSync('sh', ['-c', 'sh -c "echo \\$\\$"'], { encoding: 'utf8' }).trim());
    await writeFile(join(dir, LOCK_FILE), JSON.stringify({ pid: dead, host: hostname(), since: '2020-01-01T00:00:00.000Z' }));
    const lock = await acquireLock(join(dir, LOCK_FILE));
    assert.equal(JSON.parse(await readFile(join(dir, LOCK_FILE), 'utf8')).pid, process.pid);
    await lock.release();
    // A lock from another host is not broken: its pid cannot be checked from here.
    await writeFile(join(dir, LOCK_FILE), JSON.stringify({ pid: dead, host: 'elsewhere.invalid', since: 'x' }));
    await assert.rejects(acquireLock(join(dir, LOCK_FILE)), /locked by another runner: pid \d+ on elsewhere\.invalid/);
  });
});

test('temporary files a killed writer left are removed by the next writer (which holds the lock)', async () => {
  await withTempDir(async (dir) => {
    await mkdir(join(dir, '.falco-probes-tmp'), { recursive: true });
    await writeFile(join(dir, '.falco-probes-tmp', 'falco_x_1.o.123.abcdef01.tmp'), 'half a probe');
    await writeFile(join(dir, '.index.json.123.abcdef01.tmp'), '{"version":');
    await writeFile(join(dir, '.SHA256SUMS.123.abcdef01.tmp'), 'ab');
    const repo = await LocalRepository.openForWrite(dir);
    const { readdir } = await import('node:fs/promises');
    assert.deepEqual((await readdir(dir)).sort(), [LOCK_FILE]);
    await repo.close();
    assert.deepEqual(await readdir(dir), []);
  });
});
