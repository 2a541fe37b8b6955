import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFile, cp } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { runCli, withTempDir } from './helpers/cli.js';
import { obtainDebianKernels, loaderFileFor } from './helpers/kernel-headers.js';
import { descriptors, OS, startDebMirror, writeProject } from './build-e2e-project.js';
import { readIndex } from '../src/repository/index-file.js';
import type { BuildReport } from '../src/run/runner.js';
import { skipOrFail } from './helpers/require.js';

// Faults that must fail one target with its reason and leave the rest and
// the repository alone: a driver that does not compile, a lockfile sha256
// that the mirror's bytes do not match, a mirror that is down.

const TIMEOUT = 600_000;

/** A loopback port nobody listens on (connections are refused at once). */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

test('a failed compile, a checksum mismatch and a dead mirror fail their targets; the others go on under --keep-going', {
  timeout: TIMEOUT,
}, async (t) => {
  const obtained = await obtainDebianKernels();
  if (!obtained.ok) return skipOrFail(t, obtained.skip);
  const [k61, k612] = descriptors(obtained.kernels) as [ReturnType<typeof descriptors>[number], ReturnType<typeof descriptors>[number]];

  await withTempDir(async (dir) => {
    const mirror = await startDebMirror(dir, obtained.kernels);
    try {
      const root = join(dir, 'project');
      // The 6.1 kernel once as it is, once with a lockfile sha256 the mirror's bytes do not have.
      // The copy is another upload of the package (Debian revision + 1 in uname -v): Falco's
      // loaders name a Debian artifact by that version, so the copy publishes its own file.
      const badSum = {
        ...k61,
        name: `${k61.name}-badsum`,
        version: k61.version.replace(/(Debian \d+\.\d+\.\d+-)(\d+)/, (_, head: string, rev: string) => `${head}${Number(rev) + 1}`),
        packages: k61.packages.map((p, i) => (i === 0 ? { ...p, sha256: 'f'.repeat(64) } : p)),
      };
      assert.notEqual(badSum.version, k61.version);
      await writeProject(root, {
        kernels: [k61, badSum],
        mirrorUrl: mirror.url,
        // A second driver that cannot compile, for 6.1 kernels only.
        extraDrivers: `  - name: broken
    version: 0.9.0
    source:
      path: examples/broken
    recipe: kbuild
    bpfDir: .
    object: probe.o
    kinds: [bpf]
    kernels:
      max: "6.2"
`,
        // Another OS whose only mirror is down.
        extraOses: { downdeb: { mirrorUrl: `http://127.0.0.1:${await deadPort()}/debian`, kernels: [k612] } },
      });
      await cp(join(root, 'examples', 'probe'), join(root, 'examples', 'broken'), { recursive: true });
      await appendFile(join(root, 'examples', 'broken', 'probe.c'), '\n#error this driver does not compile\n');
      const args = ['build', '--fetch-via', 'http', '--cache', join(dir, 'cache'), '--json'];
      const repo = join(root, 'repository');

      // Without --keep-going (-j 1): the first target (downdeb's, the OSes in order) fails, nothing else starts.
      const stop = await runCli([...args, '-j', '1'], { cwd: root, timeoutMs: TIMEOUT });
      assert.equal(stop.code, 1, stop.stderr);
      const stopped = JSON.parse(stop.stdout) as BuildReport;
      assert.deepEqual(
        stopped.results.map((r) => [r.label, r.status]),
        [
          [`//probes/downdeb:${k612.name}`, 'failed'],
          [`//probes/${OS}:${k61.name}-broken-0.9.0`, 'skipped'],
          [`//probes/${OS}:${k61.name}-example-1.0.0`, 'skipped'],
          [`//probes/${OS}:${badSum.name}-broken-0.9.0`, 'skipped'],
          [`//probes/${OS}:${badSum.name}-example-1.0.0`, 'skipped'],
        ],
      );
      assert.match(stop.stderr, /4 not started/);

      const run = await runCli([...args, '-j', '2', '--keep-going'], { cwd: root, timeoutMs: TIMEOUT });
      assert.equal(run.code, 1, run.stderr);
      const report = JSON.parse(run.stdout) as BuildReport;
      const byLabel = new Map(report.results.map((r) => [r.label, r]));
      const at = (label: string) => byLabel.get(label)!;
      assert.equal(at(`//probes/${OS}:${k61.name}-example-1.0.0`).status, 'built');
      assert.equal(at(`//probes/${OS}:${k61.name}-broken-0.9.0`).errorKind, 'build');
      assert.equal(at(`//probes/${OS}:${badSum.name}-example-1.0.0`).errorKind, 'checksum');
      assert.equal(at(`//probes/${OS}:${badSum.name}-broken-0.9.0`).errorKind, 'checksum');
      assert.match(at(`//probes/${OS}:${badSum.name}-example-1.0.0`).error!, /sha256 mismatch: expected f{64}, got [0-9a-f]{64}/);
      assert.equal(at(`//probes/downdeb:${k612.name}`).errorKind, 'network');
      assert.match(at(`//probes/downdeb:${k612.name}`).error!, /127\.0\.0\.1/);
      assert.deepEqual([report.built, report.failed, report.skipped], [1, 4, 0]);
      // The failed compile's log tail is shown, with the compiler's own words, and the kept work directory named.
      assert.match(run.stderr, /this driver does not compile/);
      assert.match(run.stderr, /work directory kept for inspection: .*\.falco-probes\/work\//);

      // The index holds exactly the one good probe and agrees with the files.
      const index = await readIndex(repo);
      assert.deepEqual(
        index.probes.map((p) => p.file),
        [`1.0.0/x86_64/${loaderFileFor(obtained.kernels[0]!)}`],
      );
      assert.equal(spawnSync('sha256sum', ['-c', '--quiet', 'SHA256SUMS'], { cwd: repo }).status, 0);
    } finally {
      await mirror.close();
    }
  });
});
