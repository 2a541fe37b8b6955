import type { Logger } from '../util/log.js';

// Ctrl-C (or a TERM from CI) during a run: stop starting targets, cancel the
// running compiles and downloads, and let the run end normally so that the
// repository lock is released and the index stays as the last publish left
// it. A second signal exits at once (the lock is then stale, and the next
// runner breaks it because this pid is gone).

export async function withInterrupts<T>(logger: Logger, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      logger.done();
      process.exit(130);
    }
    logger.done();
    logger.warn(`${sig}: stopping; running builds are cancelled (send it again to exit at once)`);
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
