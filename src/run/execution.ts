import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Target } from '../graph/types.js';
import { LocalRepository, type RepositoryOptions } from '../repository/local.js';
import { errorKindOf, errorMessage, type ErrorKind } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { sweepTemporaries } from '../fetch/sweep.js';
import { removeStaleWorkDirs, sweepRunState, type RunPaths } from './paths.js';
import { formatDuration } from './progress.js';
import { runScheduled } from './scheduler.js';

// The skeleton of a run over targets, shared by `build` (runner.ts) and
// `verify-load` (verify/run.ts), as wireit's execution/base.ts serves its
// executions: the repository's lock held for the run, the targets through
// the scheduler at most `jobs` at once, progress as each starts and ends,
// each target's outcome as a status in its report (failed with its error's
// kind and message; cancelled by an interrupt, not failed; never started),
// its private work directory (and those runs that are gone left behind), the
// summary line and the JSON report. A runner supplies its work per target and
// its own outcome fields.

export interface LockedRunOptions {
  repositoryDir: string;
  /** Written into the lock, for whoever finds it held (`falco-probes build`). */
  command: string;
  /** Wait for another runner's lock instead of failing (`--wait-lock`). */
  waitLock: boolean;
  logger: Logger;
  /** An interrupt stops the waiting. */
  signal?: AbortSignal;
  /** How the repository is read (its memo, --verify-all). */
  repository?: RepositoryOptions;
}

/** Run `fn` with the repository opened for writing: its lock held, released when `fn` ends however it ends. */
export async function withLockedRepository<R>(o: LockedRunOptions, fn: (repo: LocalRepository) => Promise<R>): Promise<R> {
  const repo = await LocalRepository.openForWrite(o.repositoryDir, {
    ...o.repository,
    wait: o.waitLock,
    command: o.command,
    onWait: (h) => o.logger.info(`waiting for the repository lock held by pid ${h.pid} on ${h.host}`),
    ...(o.signal ? { signal: o.signal } : {}),
  });
  try {
    return await fn(repo);
  } finally {
    await repo.close();
  }
}

/** The fields of a target's report that the skeleton fills; a runner's report adds its own. */
export interface TaskReport<S extends string> {
  label: string;
  status: S;
  /** Milliseconds its work took (started tasks). */
  ms?: number;
  /** A failed task: its error's kind and message. */
  errorKind?: ErrorKind | 'internal';
  error?: string;
}

/** A task that threw, as the skeleton recorded it. */
export interface TaskFailure {
  error: unknown;
  ms: number;
  /** The run was interrupted: the task was stopped, not broken. */
  cancelled: boolean;
  /** One line for the progress: `[kind] first line of the message` (failures only). */
  reason: string;
}

/** An item to run: whatever the runner needs, and the report the skeleton fills. */
export interface Task {
  report: TaskReport<string>;
}

/** The statuses a task's report can take. */
type StatusOf<I extends Task> = I['report']['status'];

export interface ExecuteOptions<I extends Task, V> {
  /** At most this many tasks at once. */
  jobs: number;
  /** Without it the first failure stops new tasks from starting (the running ones finish). */
  keepGoing: boolean;
  /** An interrupt: no task starts after it, and the tasks it stops are cancelled. */
  signal?: AbortSignal;
  /** Told when each task starts, and stopped when all have ended. */
  progress: { started(label: string): void; stop(): void };
  /** The statuses of the runner's reports for a failed task, one an interrupt stopped, and one never started. */
  statuses: { failed: StatusOf<I>; cancelled: StatusOf<I>; notStarted: StatusOf<I> };
  work(item: I): Promise<V>;
  /** A task that returned after `ms`: `report.ms` is set; fill in the rest and say it. */
  done(item: I, value: V, ms: number): void;
  /** A task that threw: `report` has its status, `ms`, and (when that status is `statuses.failed`) errorKind and error; say it. */
  failed(item: I, failure: TaskFailure): void;
}

/** Run `items` through the scheduler; each item's report ends with its outcome. */
export async function executeTasks<I extends Task, V>(items: readonly I[], o: ExecuteOptions<I, V>): Promise<void> {
  const outcomes = await runScheduled(items, (item) => o.work(item), {
    jobs: o.jobs,
    keepGoing: o.keepGoing,
    ...(o.signal ? { signal: o.signal } : {}),
    onStart: (item) => o.progress.started(item.report.label),
    onFinish: (item, outcome) => {
      if (outcome.status === 'skipped') return;
      const r: I['report'] = item.report;
      r.ms = Math.round(outcome.ms);
      if (outcome.status === 'ok') {
        o.done(item, outcome.value, outcome.ms);
        return;
      }
      const failure: TaskFailure = { error: outcome.error, ms: outcome.ms, cancelled: o.signal?.aborted === true, reason: '' };
      r.status = failure.cancelled ? o.statuses.cancelled : o.statuses.failed;
      if (r.status === o.statuses.failed) {
        r.errorKind = errorKindOf(outcome.error);
        r.error = errorMessage(outcome.error);
        failure.reason = `[${r.errorKind}] ${r.error.split('\n')[0]}`;
      }
      o.failed(item, failure);
    },
  });
  // Tasks never started because of an earlier failure (or an interrupt) were skipped by the scheduler without a callback.
  for (const [i, outcome] of outcomes.entries()) if (outcome.status === 'skipped') items[i]!.report.status = o.statuses.notStarted;
  o.progress.stop();
}

/**
 * Run `fn` in the target's private work directory (`purpose` tells a
 * runner's apart from another's), removing those of dead runs first and its
 * own when `fn` ends, unless `keep` says a failure is worth inspecting.
 */
export async function inWorkDir<V>(
  paths: RunPaths,
  target: Target,
  fn: (workDir: string) => Promise<V>,
  options: { purpose?: string; keep?: (error: unknown, workDir: string) => boolean } = {},
): Promise<V> {
  await removeStaleWorkDirs(paths, target);
  const workDir = paths.workDir(target, options.purpose);
  let value: V;
  try {
    value = await fn(workDir);
  } catch (error) {
    if (!options.keep?.(error, workDir)) await rm(workDir, { recursive: true, force: true });
    throw error;
  }
  await rm(workDir, { recursive: true, force: true });
  return value;
}

/**
 * Remove what runs that are gone (killed: nothing of theirs ran to its end)
 * left in the project's state: their work directories, whichever runner made
 * them, the state's temporaries and those of the logs (a console log is
 * written whole under a temporary name); one line says how many. Every run
 * does it, one with nothing to do too: a few readdirs.
 */
export async function sweepDeadRuns(paths: RunPaths, logger: Logger): Promise<number> {
  let swept = await sweepRunState(paths);
  const logs = join(paths.state, 'logs');
  for (const os of await readdir(logs).catch(() => [] as string[])) swept += (await sweepTemporaries(join(logs, os))).length;
  if (swept) logger.info(`removed ${swept} work director${swept === 1 ? 'y' : 'ies'} and temporaries of runs that are gone`);
  return swept;
}

/** The summary's one line for people: `N targets: <parts> in <time><tail>`. */
export function summaryText(targets: number, parts: readonly string[], elapsedMs: number, tail = ''): string {
  return `${targets} targets: ${parts.join(', ')} in ${formatDuration(elapsedMs)}${tail}`;
}

/** A report's `--json` form: its fields in their order, milliseconds whole, one document ending in a newline. */
export function reportJsonText<R extends { elapsedMs: number }>(report: R): string {
  return `${JSON.stringify({ ...report, elapsedMs: Math.round(report.elapsedMs) }, null, 2)}\n`;
}
