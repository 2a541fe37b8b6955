import { constants } from 'node:os';
import type { Logger } from '../util/log.js';

// Ctrl-C (or a TERM from CI, systemd, `timeout`, pkill) during a run: stop
// starting targets, cancel the running compiles and downloads (aborting the
// signal kills each build's process group: make and every compiler it
// started), and let the run end normally so that the repository lock is
// released, cancelled targets' work directories are removed, and the index
// stays as the last publish left it. A second signal exits at once (the lock
// is then stale, and the next runner breaks it because this pid is gone).
//
// Exit status: 128 + the signal's number, as a shell reports a process the
// signal stopped: 130 for SIGINT, 143 for SIGTERM. A command whose run was
// interrupted says so (src/cli/outcome.ts, with receivedSignal) and the CLI's
// main turns that into this status; only a second signal exits from here.

/** 128 + the signal's number (SIGINT 130, SIGTERM 143). */
export function signalExitCode(sig: NodeJS.Signals): number {
  return 128 + constants.signals[sig];
}

/** The signal that aborted each withInterrupts run's AbortSignal. */
const receivedBy = new WeakMap<AbortSignal, NodeJS.Signals>();

/** The signal (SIGINT, SIGTERM) that aborted `signal`, a withInterrupts run's; undefined while none came. */
export function receivedSignal(signal: AbortSignal): NodeJS.Signals | undefined {
  return receivedBy.get(signal);
}

export async function withInterrupts<T>(logger: Logger, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  let received: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (received !== undefined) {
      logger.done();
      process.exit(signalExitCode(sig));
    }
    received = sig;
    receivedBy.set(controller.signal, sig);
    logger.done();
    logger.warn(`${sig}: stopping; what runs is cancelled (send it again to exit at once)`);
    controller.abort(new Error(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await fn(controller.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
