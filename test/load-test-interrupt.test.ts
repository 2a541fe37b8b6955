import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdir, readdir, symlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { loadBuildGraph } from '../src/graph/load.js';
import { readIndex } from '../src/repository/index-file.js';
import { LocalRepository } from '../src/repository/local.js';
import { sha256File } from '../src/util/hash.js';
import type { VerifyReport } from '../src/verify/run.js';
import {
  bpfDriverEntry,
  descriptors,
  REPOSITORY_NAME,
  spawnCli,
  startDebMirror,
  waitFor,
  writeProject,
  type SpawnedCli,
} from './build-e2e-project.js';
import { PROJECT_ROOT, runCli, withTempDir } from './helpers/cli.js';
import { obtainLoadTestHost } from './helpers/kernel-image.js';
import { killEverythingUnder, processesUnder, survivorsAfter, temporariesUnder } from './helpers/leftovers.js';
import { skipOrFail } from './helpers/require.js';

// The load test interrupted for real, through the binary, with qemu booting
// a real Debian kernel (TCG, so a boot takes seconds): Ctrl-C (SIGINT) or
// SIGTERM stops the running VMs, which are reported `cancelled` as build
// reports its interrupted targets (not failed, nothing recorded in the
// index), the targets not started `skipped`, and the run exits 130 or 143
// leaving no process and no work directory. kill -9 leaves its work
// directory (and its VM, in a process group of its own, as a killed build
// leaves its compilers): the next load test removes it, saying so.
// Two copies of examples/refused (a BPF object needing no headers, so
// compiled here in a second), published as build would publish them.

const execFileAsync = promisify(execFile);
const TIMEOUT = 600_000;
const literally = (text: string) => text.replace(/[.+*?^$()[\]{}|\\]/g, '\\$&');

/** examples/refused under two names: two targets of the one kernel. */
const DRIVERS = bpfDriverEntry('refused-one', '0.1.0') + bpfDriverEntry('refused-two', '0.1.1');

test('the load test interrupted: SIGINT and SIGTERM cancel the running VMs (exit 130, 143), nothing left; kill -9 leaves a work directory the next run removes', {
  timeout: TIMEOUT,
}, async (t) => {
  const obtained = await obtainLoadTestHost(REPOSITORY_NAME);
  if (!obtained.ok) return skipOrFail(t, obtained.skip);
  const { image } = obtained;

  await withTempDir(async (dir) => {
    const mirror = await startDebMirror(dir, [image.kernel]);
    const root = join(dir, 'project');
    const work = join(root, '.falco-probes', 'work');
    const repositoryDir = join(root, 'repository');
    try {
      // The image package beside the headers in the mirror's pool, and in the lockfile with role image.
      await mkdir(dirname(join(dir, 'mirror', image.filename)), { recursive: true });
      await symlink(image.debPath, join(dir, 'mirror', image.filename));
      const kernels = descriptors([image.kernel]).map((k) => ({ ...k, packages: [...k.packages, image.ref] }));
      await writeProject(root, { kernels, mirrorUrl: mirror.url, extraDrivers: DRIVERS });
      await cp(join(PROJECT_ROOT, 'examples', 'refused'), join(root, 'examples', 'refused'), { recursive: true });
      const targets = (await loadBuildGraph(root)).targets.filter((x) => x.driver.name.startsWith('refused-'));
      assert.equal(targets.length, 2);
      const object = join(dir, 'refused.o');
      await execFileAsync('clang', ['-O2', '-g', '-target', 'bpf', '-c', join(root, 'examples/refused/probe.c'), '-o', object]);
      const digest = await sha256File(object);
      const repo = await LocalRepository.openForWrite(repositoryDir);
      try {
        for (const target of targets) await repo.publish(target, object, digest);
      } finally {
        await repo.close();
      }
      const labels = targets.map((x) => x.label);
      const loadTest = (jobs: number, ...args: string[]) => [
        'load-test',
        ...labels,
        '-j',
        String(jobs),
        '--accel',
        'tcg',
        '--fetch-via',
        'http',
        '--cache',
        join(dir, 'cache'),
        '--json',
        ...args,
      ];
      /** Resolves once `n` VMs of the run are booting (qemu names its initramfs in the work directory). */
      const vmsRunning = (n: number) =>
        waitFor(`${n} VM(s) to be booting`, async () => ((await processesUnder(work)).length >= n ? true : undefined), TIMEOUT, 20);

      /** `sig` once the run's VMs boot: the exit status, the JSON report, nothing left behind. */
      const interrupt = async (sig: 'SIGINT' | 'SIGTERM', jobs: number, status: number): Promise<VerifyReport> => {
        const run: SpawnedCli = spawnCli(loadTest(jobs), root, TIMEOUT);
        await vmsRunning(jobs);
        run.child.kill(sig);
        const exit = await run.exited;
        const stderr = run.stderr();
        assert.equal(exit.code, status, `${sig}: ${stderr}`);
        assert.match(stderr, new RegExp(`${sig}: stopping`));
        const report = JSON.parse(run.stdout()) as VerifyReport;
        assert.deepEqual(await survivorsAfter(dir, 3000), [], `${sig}: processes of the load test survived`);
        assert.deepEqual(await temporariesUnder(dir), [], `${sig}: work directories or temporaries left`);
        assert.equal(report.counts.failed, 0, stderr);
        assert.equal(report.counts.cancelled, jobs, stderr);
        assert.equal(report.passed, false);
        assert.doesNotMatch(stderr, /FAILED|could not be checked/, sig);
        // Each cancelled VM's line, as build says a cancelled target's, and the summary with build's word.
        for (const r of report.results)
          if (r.status === 'cancelled') assert.match(stderr, new RegExp(`\\] cancelled ${literally(r.label)}\\n`));
        assert.match(stderr, new RegExp(`interrupted: 2 targets: 0 loaded, .*, ${jobs} cancelled(, ${2 - jobs} not started)? in `));
        assert.ok(
          (await readIndex(repositoryDir)).probes.every((p) => p.load === undefined),
          'a cancelled VM records no verdict',
        );
        return report;
      };

      // Ctrl-C with one VM at once: the booting one is cancelled, the other never started.
      const int = await interrupt('SIGINT', 1, 130);
      assert.deepEqual(
        int.results.map((r) => [r.label, r.status]),
        labels.map((label, i) => [label, i === 0 ? 'cancelled' : 'skipped']),
      );
      assert.equal(int.results[0]!.errorKind, undefined, 'a cancelled target has no error');
      assert.equal(int.counts.skipped, 1);

      // SIGTERM with both booting: both cancelled.
      const term = await interrupt('SIGTERM', 2, 143);
      assert.deepEqual(
        term.results.map((r) => r.status),
        ['cancelled', 'cancelled'],
      );

      // kill -9: the runner dies at once; its work directory stays. Its VM runs in a process group of its own,
      // and the kernel kills it with the runner (qemu.ts: setpriv --pdeathsig).
      const killed = spawnCli(loadTest(1), root, TIMEOUT);
      await vmsRunning(1);
      killed.child.kill('SIGKILL');
      assert.equal((await killed.exited).signal, 'SIGKILL');
      const left = await readdir(work);
      assert.deepEqual(left, [`${targets[0]!.key}-verify-${killed.child.pid}`], 'the killed run left its work directory (the initramfs)');
      assert.deepEqual(await survivorsAfter(dir, 3000), [], "the killed run's VM died with it");

      // The next run removes it, says so, boots both (refused: exit 1), and leaves nothing.
      const next = await runCli(loadTest(2), { cwd: root, timeoutMs: TIMEOUT });
      assert.equal(next.code, 1, next.stderr);
      assert.match(next.stderr, /^removed 1 work directory and temporaries of runs that are gone$/m);
      const report = JSON.parse(next.stdout) as VerifyReport;
      assert.deepEqual(
        report.results.map((r) => [r.status, r.verdict]),
        [
          ['verified', 'refused'],
          ['verified', 'refused'],
        ],
      );
      // Each verdict's line: the verdict in capitals, its time, then the kernel's reason and the accelerator.
      for (const label of labels)
        assert.match(
          next.stderr,
          new RegExp(
            `^error: \\[[12]/2\\] REFUSED ${literally(label)} after \\S+: prog 'read_past_value': invalid access to map value.* \\(tcg\\)$`,
            'm',
          ),
        );
      assert.deepEqual(await temporariesUnder(dir), []);
      assert.deepEqual(await survivorsAfter(dir, 3000), []);
    } finally {
      await mirror.close();
      await killEverythingUnder(dir);
    }
  });
});
