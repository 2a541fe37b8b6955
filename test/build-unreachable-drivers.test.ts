import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cp, mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, withTempDir, PROJECT_ROOT } from './helpers/cli.js';
import { obtainDebianKernels } from './helpers/kernel-headers.js';
import { closedPort, startMirror } from './helpers/server.js';
import { descriptors, spawnCli, startDebMirror, syntheticKernel, waitFor, writeProject } from './build-e2e-project.js';
import { readIndex } from '../src/repository/index-file.js';
import { LOCK_FILE } from '../src/repository/local.js';
import { treeHash } from '../src/util/tree-hash.js';
import type { BuildReport } from '../src/run/runner.js';
import { skipOrFail } from './helpers/require.js';

// `falco-probes build` with a driver whose source cannot be downloaded, through
// the real binary: without --skip-unreachable-drivers nothing is built and
// the run fails with one line per such driver; with it, the other drivers'
// targets are built and the run succeeds, saying what it skipped. Wrong bytes
// served through --driver-mirror are an error either way. The example probe
// on a real Debian kernel is the driver that builds.

const TIMEOUT = 600_000;

/** A tarball-sourced driver entry for drivers.yaml (the example probe's kbuild layout, so it would build). */
function tarballDriver(url: string, tree: string): string {
  return `  - name: falco
    version: 10.2.0+driver
    source:
      url: ${url}
      strip: 1
      tree: ${tree}
    recipe: kbuild
    kinds: [bpf]
    bpfDir: .
    object: probe.o
`;
}

test('build --help documents --driver-mirror and --skip-unreachable-drivers; build-probe documents --driver-mirror', async () => {
  await withTempDir(async (dir) => {
    const build = await runCli(['build', '--help'], { cwd: dir });
    assert.equal(build.code, 0);
    assert.match(build.stdout, /--driver-mirror P=URL/);
    assert.match(build.stdout, /FALCO_PROBES_DRIVER_MIRROR/);
    assert.match(build.stdout, /--skip-unreachable-drivers/);
    const probe = await runCli(['build-probe', '--help'], { cwd: dir });
    assert.match(probe.stdout, /--driver-mirror P=URL/);
    const bad = await runCli(['build', '--driver-mirror', 'no-equals-sign'], { cwd: dir });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--driver-mirror expects PREFIX=URL/);
    const badEnv = await runCli(['build'], { cwd: dir, env: { FALCO_PROBES_DRIVER_MIRROR: 'https://x.invalid/=ftp://y/' } });
    assert.equal(badEnv.code, 2);
    assert.match(badEnv.stderr, /FALCO_PROBES_DRIVER_MIRROR https:\/\/x\.invalid\/: not an http\(s\) or file URL/);
  });
});

test('an unreachable driver source: exit 1 before building anything, one line; with --skip-unreachable-drivers the rest is built (exit 0) and the line printed', {
  timeout: TIMEOUT,
}, async (t) => {
  const obtained = await obtainDebianKernels();
  if (!obtained.ok) return skipOrFail(t, obtained.skip);
  const kernels = obtained.kernels.slice(0, 1);
  await withTempDir(async (dir) => {
    const mirror = await startDebMirror(dir, kernels);
    try {
      const root = join(dir, 'project');
      const cache = join(dir, 'cache');
      const port = await closedPort();
      const url = `http://127.0.0.1:${port}/falcosecurity/libs/archive/refs/tags/10.2.0%2Bdriver.tar.gz`;
      const tree = await treeHash(join(PROJECT_ROOT, 'examples', 'probe'));
      await writeProject(root, { kernels: descriptors(kernels), mirrorUrl: mirror.url, extraDrivers: tarballDriver(url, tree) });
      const build = (...args: string[]) =>
        runCli(['build', '--fetch-via', 'http', '--cache', cache, '--json', ...args], { cwd: root, timeoutMs: TIMEOUT });
      const repo = join(root, 'repository');
      const escaped = url.replace(/[.+%?]/g, '\\$&');

      // The dry run reads no driver source: both targets would build.
      const dry = await build('--dry-run');
      assert.equal(dry.code, 0, dry.stderr);
      assert.equal((JSON.parse(dry.stdout) as BuildReport).results.filter((r) => r.status === 'would-build').length, 2);

      const stopped = await build();
      assert.equal(stopped.code, 1, stopped.stderr);
      const lines = stopped.stderr.split('\n').filter((l) => l.includes('is unreachable'));
      assert.equal(lines.length, 1, stopped.stderr);
      assert.match(
        lines[0]!,
        new RegExp(
          `^error: driver falco 10\\.2\\.0\\+driver: source ${escaped} is unreachable \\(.+\\); its 1 target cannot be built\\. Serve it with --driver-mirror http://127\\.0\\.0\\.1:${port}/falcosecurity/libs/archive/refs/tags/=URL, or pass --skip-unreachable-drivers to build the rest without it$`,
        ),
      );
      assert.match(stopped.stderr, /hint: nothing was built; --skip-unreachable-drivers/);
      const before = await readIndex(repo).catch(() => ({ probes: [] }));
      assert.deepEqual(before.probes, [], 'nothing was built or published');

      const skipped = await build('--skip-unreachable-drivers');
      assert.equal(skipped.code, 0, skipped.stderr);
      const warned = skipped.stderr.split('\n').filter((l) => l.includes('is unreachable'));
      assert.equal(warned.length, 1, skipped.stderr);
      assert.match(
        warned[0]!,
        new RegExp(
          `^warning: driver falco 10\\.2\\.0\\+driver: source ${escaped} is unreachable \\(.+\\); its 1 target was not built\\. Serve it with --driver-mirror http://127\\.0\\.0\\.1:${port}/falcosecurity/libs/archive/refs/tags/=URL, or build where it can be downloaded$`,
        ),
      );
      assert.match(skipped.stderr, /2 targets: 1 built, 0 up to date, 1 skipped \(driver source unreachable\)/);
      const report = JSON.parse(skipped.stdout) as BuildReport;
      assert.equal(report.built, 1);
      assert.equal(report.unreachable, 1);
      assert.deepEqual(report.results.map((r) => r.status).sort(), ['built', 'unreachable']);
      const index = await readIndex(repo);
      assert.equal(index.probes.length, 1);
      assert.ok(index.probes[0]!.file.startsWith('1.0.0/'), index.probes[0]!.file);

      // The same source served through --driver-mirror, with other bytes than the pin: an error, skip flag or not.
      const wrong = join(dir, 'wrong');
      await mkdir(join(wrong, 'top'), { recursive: true });
      await cp(join(PROJECT_ROOT, 'examples', 'probe'), join(wrong, 'top', 'x'), { recursive: true });
      await cp(join(PROJECT_ROOT, 'README.md'), join(wrong, 'top', 'x', 'EXTRA'));
      execFileSync('tar', ['-C', join(wrong, 'top'), '-czf', join(wrong, 'libs.tar.gz'), 'x']);
      const served = await startMirror({ files: { 'libs/10.2.0+driver.tar.gz': await readFile(join(wrong, 'libs.tar.gz')) } });
      try {
        const bad = await build(
          '--skip-unreachable-drivers',
          '--driver-mirror',
          `http://127.0.0.1:${port}/falcosecurity/libs/archive/refs/tags/=${served.url}/libs/`,
        );
        assert.equal(bad.code, 1, bad.stderr);
        assert.match(
          bad.stderr,
          new RegExp(
            `error: .*driver falco 10\\.2\\.0\\+driver: tree hash mismatch for ${escaped}: the pin says ${tree}, the unpacked tarball \\(strip 1\\) is [0-9a-f]{64}`,
          ),
        );
        assert.doesNotMatch(bad.stderr, /is unreachable/);
        assert.deepEqual(served.requests, ['libs/10.2.0+driver.tar.gz']);
        assert.deepEqual(
          (await readdir(join(cache, 'drivers')).catch(() => [])).filter(
            (n) => n.startsWith('tree-') || n.includes('.tmp') || n.includes('.part'),
          ),
          [],
        );
      } finally {
        await served.close();
      }
    } finally {
      await mirror.close();
    }
  });
});

test('Ctrl-C while a driver source downloads: the run ends as interrupted (130), nothing built, the lock released', {
  timeout: 120_000,
}, async () => {
  await withTempDir(async (dir) => {
    // The sources are obtained before any kernel package is fetched: a kernel whose packages are never served will do.
    const stalling = await startMirror({ files: {} });
    stalling.faults.set('libs/10.2.0+driver.tar.gz', { kind: 'stall' });
    try {
      const root = join(dir, 'project');
      const url = `${stalling.url}/libs/10.2.0%2Bdriver.tar.gz`;
      await writeProject(root, {
        kernels: [syntheticKernel('6.1.0-1-amd64')],
        mirrorUrl: 'http://127.0.0.1:9/unused',
        extraDrivers: tarballDriver(url, 'c'.repeat(64)),
      });
      const run = spawnCli(['build', '--cache', join(dir, 'cache'), '--skip-unreachable-drivers', '//probes/...'], root, 60_000);
      await waitFor('the driver source request', async () => (stalling.requests.length ? true : undefined), 30_000);
      run.child.kill('SIGINT');
      const exit = await run.exited;
      assert.equal(exit.code, 130, run.stderr());
      assert.match(run.stderr(), /interrupted: 2 targets: 0 built/);
      assert.doesNotMatch(run.stderr(), /is unreachable/);
      await assert.rejects(readFile(join(root, 'repository', LOCK_FILE)), 'no lock left behind');
    } finally {
      await stalling.close();
    }
  });
});
