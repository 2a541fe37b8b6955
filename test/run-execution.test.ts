import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Target } from '../src/graph/types.js';
import { LOCK_FILE } from '../src/repository/local.js';
import {
  executeTasks,
  inWorkDir,
  reportJsonText,
  summaryText,
  sweepDeadRuns,
  withLockedRepository,
  type TaskFailure,
  type TaskReport,
} from '../src/run/execution.js';
import { runPaths } from '../src/run/paths.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { createMemoryLogger } from '../src/util/log.js';

// The runner skeleton that build and verify-load share (src/run/execution.ts):
// the repository's lock for the run, tasks through the scheduler at most N at
// once, each task's outcome as a status in its report (failed with its error,
// cancelled by an interrupt, never started), its work directory and those of
// runs that are gone, the summary line and the JSON report. Real tasks, real timers, a real lock file.

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'falco-probes-execution-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

type Status = 'waiting' | 'done' | 'failed' | 'cancelled' | 'skipped';
interface Item {
  n: number;
  report: TaskReport<Status>;
}
const itemsOf = (count: number): Item[] =>
  Array.from({ length: count }, (_, n) => ({ n, report: { label: `//t:${n}`, status: 'waiting' } }));

/** build's statuses: an interrupted task is cancelled. */
const STATUSES = { failed: 'failed', cancelled: 'cancelled', notStarted: 'skipped' } as const;
const markDone = (item: Item) => {
  item.report.status = 'done';
};

/** Progress that records what the skeleton told it. */
function recordingProgress() {
  const events: string[] = [];
  return { events, started: (label: string) => events.push(`start ${label}`), stop: () => events.push('stop') };
}

test('the lock is held for the run: a second runner is refused, or waits (saying for whom) and runs once the first released it', async (t) => {
  const dir = await tempDir(t);
  const repositoryDir = join(dir, 'repository');
  const lockFile = join(repositoryDir, LOCK_FILE);
  const logger = createMemoryLogger();
  const base = { repositoryDir, waitLock: false, logger };

  let releaseFirst!: () => void;
  const firstHolds = new Promise<void>((resolve) => (releaseFirst = resolve));
  let entered!: () => void;
  const firstEntered = new Promise<void>((resolve) => (entered = resolve));
  const order: string[] = [];
  const first = withLockedRepository({ ...base, command: 'first' }, async (repo) => {
    assert.equal(repo.root, repositoryDir);
    assert.equal(await exists(lockFile), true, 'the lock file exists while the run holds it');
    entered();
    await firstHolds;
    order.push('first done');
    return 'first result';
  });
  await firstEntered;

  await assert.rejects(
    withLockedRepository({ ...base, command: 'second' }, async () => 'never'),
    (err: unknown) => err instanceof FalcoProbesError && err.kind === 'lock' && /locked by another runner: pid \d+/.test(err.message),
  );

  const waiting = withLockedRepository({ ...base, waitLock: true, command: 'third' }, async () => {
    order.push('third ran');
    return 'third result';
  });
  // An interrupt stops a runner that waits for the lock.
  const interrupt = new AbortController();
  const interrupted = withLockedRepository({ ...base, waitLock: true, command: 'fourth', signal: interrupt.signal }, async () => 'never');
  await sleep(300);
  assert.deepEqual(order, [], 'nobody ran while the first held the lock');
  interrupt.abort(new Error('interrupted by SIGINT'));
  await assert.rejects(interrupted);
  releaseFirst();
  assert.equal(await first, 'first result');
  assert.equal(await waiting, 'third result');
  assert.deepEqual(order, ['first done', 'third ran']);
  assert.ok(
    logger.lines.some((l) => new RegExp(`^waiting for the repository lock held by pid ${process.pid} on `).test(l)),
    logger.lines.join('\n'),
  );
  assert.equal(await exists(lockFile), false, 'released when the run ended');

  // A run that throws releases the lock too.
  await assert.rejects(
    withLockedRepository({ ...base, command: 'thrower' }, async () => {
      throw new Error('boom');
    }),
    /boom/,
  );
  assert.equal(await exists(lockFile), false);
});

test('at most `jobs` tasks at once; each report gets its ms and status, a failure its kind and message, and the rest run with keepGoing', async () => {
  const items = itemsOf(7);
  const progress = recordingProgress();
  let running = 0;
  let most = 0;
  const done: number[] = [];
  const failures: [number, TaskFailure][] = [];
  await executeTasks(items, {
    jobs: 3,
    keepGoing: true,
    progress,
    statuses: STATUSES,
    work: async ({ n }) => {
      running++;
      most = Math.max(most, running);
      await sleep(20 + (n % 3) * 10);
      running--;
      if (n === 2) throw new FalcoProbesError('build', 'make exited with 2\nthe rest of the log');
      if (n === 4) throw new Error('plain error');
      return n * 10;
    },
    done: (item, value, ms) => {
      assert.equal(value, item.n * 10);
      assert.ok(ms >= 15, `ms ${ms}`);
      item.report.status = 'done';
      done.push(item.n);
    },
    failed: (item, failure) => failures.push([item.n, failure]),
  });
  assert.equal(most, 3, 'three tasks ran at once, never more');
  assert.deepEqual(
    done.sort((a, b) => a - b),
    [0, 1, 3, 5, 6],
  );
  assert.deepEqual(
    items.map((i) => i.report.status),
    ['done', 'done', 'failed', 'done', 'failed', 'done', 'done'],
  );
  for (const { report } of items) assert.ok(Number.isInteger(report.ms) && report.ms! >= 15, `${report.label}: ms ${report.ms}`);
  assert.equal(items[2]!.report.errorKind, 'build');
  assert.match(items[2]!.report.error!, /^make exited with 2\nthe rest of the log/);
  assert.equal(items[4]!.report.errorKind, 'internal');
  assert.equal(items[4]!.report.error, 'plain error');
  assert.deepEqual(
    failures.map(([n, f]) => [n, f.cancelled, f.reason]),
    [
      [2, false, '[build] make exited with 2'],
      [4, false, '[internal] plain error'],
    ],
  );
  assert.equal(progress.events.filter((e) => e.startsWith('start ')).length, 7);
  assert.equal(progress.events.at(-1), 'stop', 'the progress is stopped once, after every task');
  assert.equal(progress.events.filter((e) => e === 'stop').length, 1);
});

test('without keepGoing the first failure starts nothing more: the running ones finish, the others are not started', async () => {
  const items = itemsOf(6);
  const progress = recordingProgress();
  await executeTasks(items, {
    jobs: 2,
    keepGoing: false,
    progress,
    statuses: STATUSES,
    work: async ({ n }) => {
      await sleep(n === 0 ? 10 : 60);
      if (n === 0) throw new FalcoProbesError('network', 'unreachable');
    },
    done: markDone,
    failed: () => {},
  });
  assert.deepEqual(
    items.map((i) => i.report.status),
    ['failed', 'done', 'skipped', 'skipped', 'skipped', 'skipped'],
  );
  assert.equal(items[2]!.report.ms, undefined, 'a task never started has no time');
  assert.deepEqual(progress.events, ['start //t:0', 'start //t:1', 'stop']);
});

test('an interrupt: running tasks are cancelled, not failed (or failed where the runner says so), and nothing starts after it', async () => {
  for (const cancelledAs of ['cancelled', 'failed'] as const) {
    const items = itemsOf(5);
    const interrupt = new AbortController();
    const failures: TaskFailure[] = [];
    const run = executeTasks(items, {
      jobs: 2,
      keepGoing: true,
      signal: interrupt.signal,
      progress: recordingProgress(),
      statuses: { ...STATUSES, cancelled: cancelledAs },
      // A task that takes until it is stopped, as a compile or a VM does.
      work: ({ n }) =>
        new Promise<void>((resolve, reject) => {
          if (n === 0) setTimeout(resolve, 10);
          else interrupt.signal.addEventListener('abort', () => reject(new Error(`task ${n} was cancelled`)), { once: true });
        }),
      done: markDone,
      failed: (_item, failure) => failures.push(failure),
    });
    await sleep(100);
    interrupt.abort(new Error('interrupted by SIGTERM'));
    await run;
    assert.deepEqual(
      items.map((i) => i.report.status),
      ['done', cancelledAs, cancelledAs, 'skipped', 'skipped'],
      cancelledAs,
    );
    assert.ok(failures.every((f) => f.cancelled));
    if (cancelledAs === 'cancelled') {
      assert.equal(items[1]!.report.errorKind, undefined, 'a cancelled task has no error');
      assert.deepEqual(
        failures.map((f) => f.reason),
        ['', ''],
      );
    } else {
      assert.equal(items[1]!.report.error, 'task 1 was cancelled');
      assert.equal(failures[0]!.reason, '[internal] task 1 was cancelled');
    }
  }
});

test('a work directory per target and run: removed when done or failed, kept when asked; those of dead runs are removed first', async (t) => {
  const dir = await tempDir(t);
  const paths = runPaths(dir);
  const target = { key: 'a'.repeat(64) } as Target;
  const work = join(paths.state, 'work');
  // A dead run's directory for this target (pid 2^22 + 1 is above Linux's pid_max) and a live one's (this process's parent).
  const dead = join(work, `${target.key}-4194305`);
  const live = join(work, `${target.key}-${process.ppid}`);
  await mkdir(dead, { recursive: true });
  await mkdir(live, { recursive: true });

  const value = await inWorkDir(paths, target, async (workDir) => {
    assert.equal(workDir, paths.workDir(target));
    await mkdir(workDir, { recursive: true });
    await writeFile(join(workDir, 'object.o'), 'bytes');
    return 42;
  });
  assert.equal(value, 42);
  assert.deepEqual(await readdir(work), [`${target.key}-${process.ppid}`], "the dead run's and its own are gone; a live run's stays");

  let keptDir = '';
  await assert.rejects(
    inWorkDir(
      paths,
      target,
      async (workDir) => {
        await mkdir(workDir, { recursive: true });
        throw new Error('compile failed');
      },
      {
        purpose: 'verify',
        keep: (error, workDir) => {
          keptDir = workDir;
          return (error as Error).message === 'compile failed';
        },
      },
    ),
    /compile failed/,
  );
  assert.equal(keptDir, paths.workDir(target, 'verify'));
  assert.equal(await exists(keptDir), true, 'kept for inspection');
  await assert.rejects(
    inWorkDir(paths, target, async (workDir) => {
      await mkdir(workDir, { recursive: true });
      throw new Error('download failed');
    }),
  );
  assert.equal(await exists(paths.workDir(target)), false, 'a failure not kept is removed');
});

test("what runs that are gone left: their work directories (build's and the load test's), temporaries of the state and the logs; one line", async (t) => {
  const dir = await tempDir(t);
  const paths = runPaths(dir);
  const key = 'b'.repeat(64);
  // pid 2^22 + 1 is above Linux's pid_max: a run that is gone; this process's parent is alive.
  const dead = 4194305;
  const work = join(paths.state, 'work');
  const gone = [
    join(work, `${key}-${dead}`),
    join(work, `${key}-verify-${dead}`),
    join(paths.state, 'cache', `.graph.json.${dead}.0badc0de.tmp`),
    join(paths.state, 'logs', 'debian12', `.6.1.0-1-amd64-scap.verify-load.log.${dead}.0badc0de.tmp`),
  ];
  const kept = [join(work, `${key}-verify-${process.ppid}`), join(paths.state, 'logs', 'debian12', '6.1.0-1-amd64-scap.verify-load.log')];
  for (const d of [gone[0]!, gone[1]!, kept[0]!]) await mkdir(join(d, 'tree'), { recursive: true });
  for (const f of [gone[2]!, gone[3]!, kept[1]!]) {
    await mkdir(join(f, '..'), { recursive: true });
    await writeFile(f, 'partial');
  }
  const logger = createMemoryLogger();
  assert.equal(await sweepDeadRuns(paths, logger), 4);
  assert.deepEqual(logger.lines, ['removed 4 work directories and temporaries of runs that are gone']);
  for (const p of gone) assert.equal(await exists(p), false, `${p} is removed`);
  for (const p of kept) assert.equal(await exists(p), true, `${p} stays: its run is alive, or it is no temporary`);
  assert.equal(await sweepDeadRuns(paths, logger), 0);
  assert.equal(logger.lines.length, 1, 'nothing removed, nothing said');
  assert.equal(await sweepDeadRuns(runPaths(join(dir, 'elsewhere')), logger), 0, 'a project without state');
});

test('the summary line and the JSON report', () => {
  assert.equal(
    summaryText(3, ['1 built', '2 up to date'], 61_000, '; repository /r'),
    '3 targets: 1 built, 2 up to date in 1m01s; repository /r',
  );
  assert.equal(summaryText(1, ['1 loaded'], 1234), '1 targets: 1 loaded in 1.2s');
  const text = reportJsonText({ repository: '/r', elapsedMs: 1234.6, results: [{ label: 'x' }] });
  assert.ok(text.endsWith('}\n'));
  assert.deepEqual(Object.keys(JSON.parse(text) as object), ['repository', 'elapsedMs', 'results'], 'the fields keep their order');
  assert.deepEqual(JSON.parse(text), { repository: '/r', elapsedMs: 1235, results: [{ label: 'x' }] });
  assert.equal(text, `${JSON.stringify({ repository: '/r', elapsedMs: 1235, results: [{ label: 'x' }] }, null, 2)}\n`);
});
