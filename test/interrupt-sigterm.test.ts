import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, withTempDir } from './helpers/cli.js';
import { obtainDebianKernels } from './helpers/kernel-headers.js';
import { skipOrFail } from './helpers/require.js';
import { killEverythingUnder, processesUnder, survivorsAfter, temporariesUnder } from './helpers/leftovers.js';
import { descriptors, OS, spawnCli, startDebMirror, waitFor, writeProject, type SpawnedCli } from './build-e2e-project.js';
import type { BuildReport } from '../src/run/runner.js';

// SIGTERM (what CI runners, systemd, `timeout` and `pkill` send) stops a
// build as Ctrl-C does, through the real binary: the running targets are
// reported as cancelled, not failed; make and every compiler it started are
// killed (they run in process groups of their own, which a signal to the
// runner alone does not reach); the cancelled targets' work directories and
// every temporary go; the exit status is 143 (128 + SIGTERM), as a shell
// reports a process TERM stopped. A second SIGTERM exits at once, and still
// leaves no process behind. One real Debian 6.1 kernel, two copies of the
// example probe (two targets at once, -j 2).

const TIMEOUT = 600_000;

const secondDriver = `  - name: example-two
    version: 2.0.0
    source:
      path: examples/probe
    recipe: kbuild
    bpfDir: .
    object: probe.o
    kinds: [bpf]
`;

test('SIGTERM mid-build: running targets cancelled, no process of the build left, no work or temporaries, exit 143; a second SIGTERM exits at once', {
  timeout: TIMEOUT,
}, async (t) => {
  const obtained = await obtainDebianKernels();
  if (!obtained.ok) return skipOrFail(t, obtained.skip);
  const kernels = [obtained.kernels.find((k) => k.series === '6.1') ?? obtained.kernels[0]!];
  await withTempDir(async (dir) => {
    const mirror = await startDebMirror(dir, kernels);
    const root = join(dir, 'project');
    const cache = join(dir, 'cache');
    const work = join(root, '.falco-probes', 'work');
    const logs = join(root, '.falco-probes', 'logs', OS);
    const args = ['build', '-j', '2', '--fetch-via', 'http', '--cache', cache, '--json'];
    try {
      await writeProject(root, { kernels: descriptors(kernels), mirrorUrl: mirror.url, extraDrivers: secondDriver });
      const unpacking = async () =>
        (await readdir(join(cache, 'trees')).catch(() => [] as string[])).some((n) => n.includes('.extract-')) ? true : undefined;
      // Both logs show clang at work, and compilers run in the work directories now.
      const bothCompiling = async () => {
        const names = await readdir(logs).catch(() => [] as string[]);
        if (names.length < 2) return undefined;
        for (const n of names) if (!/^clang /m.test(await readFile(join(logs, n), 'utf8').catch(() => ''))) return undefined;
        return (await processesUnder(work)).length > 0 ? true : undefined;
      };
      /** A run that builds both targets again (the repository emptied, the logs gone). */
      const again = async () => {
        await rm(join(root, 'repository'), { recursive: true, force: true });
        await rm(logs, { recursive: true, force: true });
        return spawnCli(args, root, TIMEOUT);
      };
      /** SIGTERM to the runner alone (as `kill PID` or pkill send it), `times` times; its exit and report. */
      const terminate = async (run: SpawnedCli, times: number) => {
        for (let i = 0; i < times; i++) run.child.kill('SIGTERM');
        const exit = await run.exited;
        assert.equal(exit.code, 143, `exit status after SIGTERM: ${run.stderr()}`);
        assert.match(run.stderr(), /SIGTERM: stopping; what runs is cancelled/);
        assert.deepEqual(await survivorsAfter(dir, 3000), [], 'processes of the build survived SIGTERM');
      };
      const cancelledCleanly = async (run: SpawnedCli, what: string) => {
        const report = JSON.parse(run.stdout()) as BuildReport;
        assert.equal(report.failed, 0, `${what}: ${run.stderr()}`);
        assert.ok((report.cancelled ?? 0) >= 1, `${what}: nothing reported as cancelled: ${run.stderr()}`);
        // A target may finish in the moment between the check and the signal: built then, never failed.
        for (const r of report.results)
          assert.ok(['cancelled', 'skipped', 'built'].includes(r.status), `${what}: ${r.label} is ${r.status}`);
        assert.doesNotMatch(run.stderr(), /FAILED|last lines of|kept for inspection/, what);
        assert.match(run.stderr(), /interrupted: .*cancelled/, what);
        assert.deepEqual(await temporariesUnder(dir), [], `${what}: work directories or temporaries left`);
        return report;
      };

      // While the kernel's packages are being unpacked (work in this process).
      let run = await again();
      await waitFor('a package to be unpacking', unpacking, 240_000, 20);
      await terminate(run, 1);
      await cancelledCleanly(run, 'SIGTERM while unpacking');

      // While both targets compile: make and clang run in process groups of their own.
      run = await again();
      await waitFor('both targets to be compiling', bothCompiling, 240_000, 20);
      await terminate(run, 1);
      await cancelledCleanly(run, 'SIGTERM while compiling');

      // Twice: the second one exits at once (its work directories are swept by the next run), and no compiler outlives it.
      run = await again();
      await waitFor('both targets to be compiling', bothCompiling, 240_000, 20);
      await terminate(run, 2);

      // The next run builds both, sweeps what the hurried exit left, and leaves nothing either.
      await rm(join(root, 'repository'), { recursive: true, force: true });
      const full = await runCli(args, { cwd: root, timeoutMs: TIMEOUT });
      assert.equal(full.code, 0, full.stderr);
      assert.equal((JSON.parse(full.stdout) as BuildReport).built, 2);
      assert.deepEqual(await readdir(work), []);
      assert.deepEqual(await temporariesUnder(dir), []);
    } finally {
      await mirror.close();
      await killEverythingUnder(dir);
    }
  });
});
