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
// signal stopped: 130 for SIGINT, 143 for SIGTERM. Commands return 130 for
// an interrupted run; it is translated here to the signal that came.

/** 128 + the signal's number (SIGINT 130, SIGTERM 143). */
function signalExitCode(sig: NodeJS.Signals): number {
  return 128 + constants.signals[sig];
}

/** What commands return when their run was interrupted (withInterrupts gives it the received signal's status). */
const INTERRUPTED = 130;

export async function withInterrupts<T>(logger: Logger, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  let received: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (received !== undefined) {
      logger.done();
      process.exit(signalExitCode(sig));
    }
    received = sig;
    logger.done();
    logger.warn(`${sig}: stopping; running builds are cancelled (send it again to exit at once)`);
    controller.abort(new Error(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const result = await fn(controller.signal);
    return received !== undefined && result === INTERRUPTED ? (signalExitCode(received) as T) : result;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
