import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCli, withTempDir } from './helpers/cli.js';
import { obtainDebianKernels } from './helpers/kernel-headers.js';
import { descriptors, startDebMirror, syntheticKernel, writeProject } from './build-e2e-project.js';
import { readIndex } from '../src/repository/index-file.js';
import type { BuildReport } from '../src/run/runner.js';
import { skipOrFail } from './helpers/require.js';

// Targets no builder on this machine can build (here: an aarch64 kernel on an
// x86_64 machine), through the real binary: `build` stops before building
// anything and names them; with --skip-unbuildable (the main job passes it)
// the rest is built and they are reported; `plan` marks them. The example
// probe on a real Debian kernel is what builds.

const TIMEOUT = 600_000;

test('an aarch64 target on x86_64: build stops naming it; --skip-unbuildable builds the rest and reports it; plan marks it', {
  timeout: TIMEOUT,
}, async (t) => {
  if (process.arch !== 'x64') return t.skip(`this test needs an x86_64 machine (this is ${process.arch})`);
  const obtained = await obtainDebianKernels();
  if (!obtained.ok) return skipOrFail(t, obtained.skip);
  const kernels = obtained.kernels.slice(0, 1);
  await withTempDir(async (dir) => {
    const mirror = await startDebMirror(dir, kernels);
    try {
      const root = join(dir, 'project');
      const arm = { ...syntheticKernel('6.1.0-90-arm64'), machine: 'aarch64' as const };
      await writeProject(root, { kernels: [...descriptors(kernels), arm], mirrorUrl: mirror.url });
      const build = (...args: string[]) =>
        runCli(['build', '--fetch-via', 'http', '--cache', join(dir, 'cache'), '--json', ...args], { cwd: root, timeoutMs: TIMEOUT });
      const repo = join(root, 'repository');
      const armLabel = '//probes/testdeb:6.1.0-90-arm64';

      const plan = await runCli(['plan', '--shards', '1'], { cwd: root });
      assert.equal(plan.code, 0, plan.stderr);
      assert.match(
        plan.stderr,
        /warning: 1 target cannot be built here: for aarch64; this machine builds x86_64 only \(\/\/probes\/testdeb:6\.1\.0-90-arm64\)/,
      );
      const armLine = plan.stdout.split('\n').find((l) => l.includes(armLabel));
      assert.match(armLine ?? '', /not buildable here: for aarch64/);
      const x86Line = plan.stdout.split('\n').find((l) => l.includes(kernels[0]!.release));
      assert.doesNotMatch(x86Line ?? 'missing', /not buildable/);
      const planJson = JSON.parse((await runCli(['plan', '--shards', '1', '--json'], { cwd: root })).stdout) as {
        plan: { targets: { label: string; notBuildableHere?: string }[] }[];
      };
      assert.deepEqual(
        planJson.plan[0]!.targets.filter((x) => x.notBuildableHere).map((x) => x.label),
        [armLabel],
      );

      const stopped = await build();
      assert.equal(stopped.code, 2, stopped.stderr);
      assert.match(
        stopped.stderr,
        /error: 1 target cannot be built here: for aarch64; this machine builds x86_64 only \(\/\/probes\/testdeb:6\.1\.0-90-arm64\)/,
      );
      assert.match(stopped.stderr, /hint: nothing was built; .*--skip-unbuildable/);
      assert.deepEqual((await readIndex(repo).catch(() => ({ probes: [] }))).probes, [], 'nothing was built or published');

      const skipped = await build('--skip-unbuildable');
      assert.equal(skipped.code, 0, skipped.stderr);
      assert.match(skipped.stderr, /warning: 1 target not built here: for aarch64/);
      assert.match(skipped.stderr, /2 targets: 1 built, 0 up to date, 1 skipped \(no builder here\)/);
      const report = JSON.parse(skipped.stdout) as BuildReport & { unbuildable: number };
      assert.equal(report.built, 1);
      assert.equal(report.unbuildable, 1);
      assert.equal(report.results.find((r) => r.label === armLabel)?.status, 'unbuildable');
      const index = await readIndex(repo);
      assert.deepEqual(
        index.probes.map((p) => p.file.split('/')[1]),
        ['x86_64'],
      );

      // Nothing left to build that can be built: the run says so and still exits 0.
      const again = await build('--skip-unbuildable');
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stderr, /2 targets: 0 built, 1 up to date, 1 skipped \(no builder here\)/);
    } finally {
      await mirror.close();
    }
  });
});
