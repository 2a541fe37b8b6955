import type { Logger } from '../util/log.js';

// What a person sees while `build` runs. On a terminal: one live line that is
// redrawn (done/total, running, failed, elapsed, ETA). In CI or piped: one
// line per finished target. Both end with the same summary line.

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

export interface Progress {
  started(label: string): void;
  finished(label: string, result: { ok: true; note?: string; ms: number } | { ok: false; reason: string; ms: number }): void;
  /** A target that never started (stopped after a failure). */
  skipped(label: string): void;
  /** Stopped by an interrupt (Ctrl-C, TERM): not a failure. */
  cancelled(label: string): void;
  /** Stop the live line; call before printing the summary. */
  stop(): void;
  counts(): ProgressCounts;
}

export function createProgress(logger: Logger, total: number, jobs: number, now: () => number = () => performance.now()): Progress {
  const start = now();
  const state: ProgressCounts = { total, done: 0, running: 0, failed: 0 };
  let doneMsSum = 0;
  let doneBuilt = 0;

  const eta = (): string => {
    const remaining = state.total - state.done;
    if (remaining <= 0) return '0s';
    if (doneBuilt === 0) return '?';
    // Average build time, spread over the slots: simple, and honest once a few targets finished.
    return formatDuration(((doneMsSum / doneBuilt) * remaining) / Math.max(1, Math.min(jobs, remaining)));
  };
  const line = () =>
    `[${state.done}/${state.total}] ${state.running} running, ${state.failed} failed, ${formatDuration(now() - start)} elapsed, ETA ${eta()}`;
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
        if (!logger.interactive)
          logger.info(`${counter()} built ${label}${result.note ? ` (${result.note})` : ''} in ${formatDuration(result.ms)}`);
      } else {
        state.failed++;
        // A failure is shown in both forms: it must not scroll away in a live line.
        logger.error(`${counter()} FAILED ${label} after ${formatDuration(result.ms)}: ${result.reason}`);
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
