import type { Logger } from '../util/log.js';

// What a person sees while a run (`build`, the load test) goes through its
// targets. On a terminal: one live line that is redrawn (done/total,
// running, failed, elapsed, ETA). In CI or piped: one line per finished
// target. Both end with the runner's summary line. Each runner names its
// own work (`ProgressWords`); the counting, the lines' form and the timer
// are this one implementation.

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '?';
  const s = Math.round(ms / 1000);
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)}s`;
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

export interface ProgressCounts {
  total: number;
  done: number;
  running: number;
  failed: number;
}

/** How a finished target ended: well (`note` in parentheses), or not (`reason` after its time). */
export type Finished =
  | { ok: true; note?: string; ms: number }
  /** `word` names how it ended, in capitals (default FAILED; the load test's REFUSED, NO-BOOT...). */
  | { ok: false; reason: string; ms: number; word?: string };

export interface Progress {
  started(label: string): void;
  finished(label: string, result: Finished): void;
  /** A target that never started (stopped after a failure). */
  skipped(label: string): void;
  /** Stopped by an interrupt (Ctrl-C, TERM): not a failure. */
  cancelled(label: string): void;
  /** Stop the live line; call before printing the summary. */
  stop(): void;
  counts(): ProgressCounts;
}

/** What a runner's lines call its work. */
export interface ProgressWords {
  /** A target that ended well: `[3/9] built //probes/...` (default `built`). */
  done: string;
  /** What runs, in the live line: `2 running` (default), the load test's `2 VMs running`. */
  running?: { one: string; many: string };
  /** Each target that ended well gets its line on a terminal too, not only in CI (the load test: each verdict is read). */
  everyLineOnTerminal?: boolean;
}

const BUILD_WORDS: ProgressWords = { done: 'built' };

export function createProgress(
  logger: Logger,
  total: number,
  jobs: number,
  options: { words?: ProgressWords; now?: () => number } = {},
): Progress {
  const words = options.words ?? BUILD_WORDS;
  const now = options.now ?? (() => performance.now());
  const start = now();
  const state: ProgressCounts = { total, done: 0, running: 0, failed: 0 };
  let doneMsSum = 0;
  let doneBuilt = 0;

  const eta = (): string => {
    const remaining = state.total - state.done;
    if (remaining <= 0) return '0s';
    if (doneBuilt === 0) return '?';
    // Average time of a target, spread over the slots: simple, and honest once a few targets finished.
    return formatDuration(((doneMsSum / doneBuilt) * remaining) / Math.max(1, Math.min(jobs, remaining)));
  };
  const running = () => {
    const noun = words.running ? ` ${state.running === 1 ? words.running.one : words.running.many}` : '';
    return `${state.running}${noun} running`;
  };
  const line = () =>
    `[${state.done}/${state.total}] ${running()}, ${state.failed} failed, ${formatDuration(now() - start)} elapsed, ETA ${eta()}`;
  const redraw = () => {
    if (logger.interactive) logger.status(line());
  };
  // The elapsed time moves even when no target finishes.
  const timer = logger.interactive ? setInterval(redraw, 1000) : undefined;
  timer?.unref();

  const counter = () => `[${state.done}/${state.total}]`;
  return {
    started() {
      state.running++;
      redraw();
    },
    finished(label, result) {
      state.running--;
      state.done++;
      doneMsSum += result.ms;
      doneBuilt++;
      if (result.ok) {
        if (!logger.interactive || words.everyLineOnTerminal)
          logger.info(`${counter()} ${words.done} ${label}${result.note ? ` (${result.note})` : ''} in ${formatDuration(result.ms)}`);
      } else {
        state.failed++;
        // A failure is shown in both forms: it must not scroll away in a live line.
        logger.error(`${counter()} ${result.word ?? 'FAILED'} ${label} after ${formatDuration(result.ms)}: ${result.reason}`);
      }
      redraw();
    },
    skipped() {
      state.done++;
      redraw();
    },
    cancelled(label) {
      state.running--;
      state.done++;
      if (!logger.interactive) logger.info(`${counter()} cancelled ${label}`);
      redraw();
    },
    stop() {
      if (timer) clearInterval(timer);
      logger.done();
    },
    counts: () => ({ ...state }),
  };
}
