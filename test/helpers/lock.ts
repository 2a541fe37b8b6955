import { acquireLock } from '../../src/repository/lock.js';

// Test files run concurrently (scripts/test.sh: --test-concurrency=2) and share
// machine-wide things: the Docker daemon's images, the test cache of Debian
// packages and extracted kernel roots. What one of them makes, the others must
// wait for and then find, instead of making it a second time at once. The lock
// is the repository lock's (a holder whose process is gone is broken).

/** Run `fn` while holding the lock file `file` (created with its folder), waiting for another holder. */
export async function withFileLock<T>(file: string, what: string, fn: () => Promise<T>): Promise<T> {
  const lock = await acquireLock(file, { wait: true, pollMs: 250, command: what });
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}
