import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { readIndex, writeIndex } from '../src/repository/index-file.js';
import type { ProbeEntry } from '../src/repository/types.js';
import { sha256Hex } from '../src/util/hash.js';
import { runCli, withTempDir } from './helpers/cli.js';

// publish --refuse: artifacts whose recorded load test (verify-load) refused
// them stay out of the published repository and are named; the others are
// published; what is already published is never taken away.

function bpfObject(dir: string, value: number): Buffer {
  const src = join(dir, `p${value}.c`);
  execFileSync('sh', [
    '-c',
    `printf '%s\\n' 'int v = ${value};' '__attribute__((section("raw_tracepoint/x"), used)) int p(void *c) { return v; }' > ${src}`,
  ]);
  execFileSync('clang', ['-target', 'bpf', '-O2', '-c', src, '-o', join(dir, `p${value}.o`)], { timeout: 60_000 });
  return execFileSync('cat', [join(dir, `p${value}.o`)]);
}

test('publish --refuse refused holds back a refused artifact, publishes the loaded one, names what it held', async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, 'project');
    const from = join(root, 'repository');
    await mkdir(join(root, 'kernels'), { recursive: true });
    await writeFile(join(root, 'kernels', 'drivers.yaml'), 'builder:\n  kind: host\n  clang: "14.0.6"\ndrivers: []\n');
    const entries: ProbeEntry[] = [];
    for (const [i, verdict] of (['loaded', 'refused'] as const).entries()) {
      const bytes = bpfObject(dir, i + 1);
      const file = `1.0.0/x86_64/example_debian_6.1.${50 + i}-1-amd64_1.o`;
      await mkdir(join(from, '1.0.0', 'x86_64'), { recursive: true });
      await writeFile(join(from, file), bytes);
      entries.push({
        file,
        key: sha256Hex(`key ${i}`),
        sha256: sha256Hex(bytes),
        size: bytes.length,
        os: 'debian12',
        kernel: `6.1.0-${50 + i}-amd64`,
        driver: 'example',
        driverVersion: '1.0.0',
        arch: 'x86_64',
        kind: 'bpf',
        load: {
          verdict,
          kernelImageSha256: sha256Hex('image'),
          message: verdict === 'refused' ? "prog 'p': R0 invalid mem access" : 'loaded 1 program',
        },
      });
    }
    await writeIndex(from, { version: 1, probes: entries });
    const to = join(dir, 'published');

    const bad = await runCli(['publish', '--to', to, '--refuse', 'rejected'], { cwd: root });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--refuse expects refused, no-boot, timeout or unknown/);

    const r = await runCli(['publish', '--to', to, '--refuse', 'refused,unknown'], { cwd: root });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^held back 1\.0\.0\/x86_64\/example_debian_6\.1\.51-1-amd64_1\.o \(refused\)$/m);
    assert.match(r.stderr, /not published, its load test says refused \(prog 'p': R0 invalid mem access\)/);
    const published = await readIndex(to);
    assert.deepEqual(
      published.probes.map((p) => p.file),
      [entries[0]!.file],
    );
    await assert.rejects(stat(join(to, entries[1]!.file)), 'the refused artifact was not copied');
    assert.doesNotMatch(await readFile(join(to, 'SHA256SUMS'), 'utf8'), /6\.1\.51/);

    // Without the flag it is published like any other.
    const all = await runCli(['publish', '--to', to], { cwd: root });
    assert.equal(all.code, 0, all.stderr);
    assert.equal((await readIndex(to)).probes.length, 2);
  });
});
