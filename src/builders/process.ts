import { spawn } from 'node:child_process';
import { open, readFile, stat } from 'node:fs/promises';
import { FalcoProbesError } from '../util/errors.js';

// Runs one build command: an argument vector (never a shell string), its
// output appended to the target's log file, bounded in time, and stoppable.
// The command runs in a process group of its own so that a timeout or a
// cancel stops make and every compiler it started, not only make.

export interface RunLoggedOptions {
  cwd: string;
  env: Record<string, string>;
  /** Output (stdout and stderr) is appended here. */
  logFile: string;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface RunOutcome {
  /** Exit code, or null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  aborted: boolean;
  durationMs: number;
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // ESRCH: the group is already gone.
  }
}

export async function runLogged(argv: string[], opts: RunLoggedOptions): Promise<RunOutcome> {
  const [command, ...args] = argv;
  if (command === undefined) throw new FalcoProbesError('internal', 'runLogged: empty argument vector');
  const log = await open(opts.logFile, 'a');
  const started = performance.now();
  try {
    if (opts.signal?.aborted) return { code: null, signal: null, timedOut: false, aborted: true, durationMs: 0 };
    return await new Promise<RunOutcome>((resolve, reject) => {
      let timedOut = false;
      let aborted = false;
      const child = spawn(command, args, {
        cwd: opts.cwd,
        env: opts.env,
        stdio: ['ignore', log.fd, log.fd],
        detached: true, // a new process group, killed as a whole
      });
      const stop = (why: 'timeout' | 'abort') => {
        if (why === 'timeout') timedOut = true;
        else aborted = true;
        killGroup(child.pid);
      };
      const timer = opts.timeoutMs !== undefined ? setTimeout(() => stop('timeout'), opts.timeoutMs) : undefined;
      const onAbort = () => stop('abort');
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      const finish = () => {
        if (timer) clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      child.once('error', (err) => {
        finish();
        reject(
          new FalcoProbesError('build', `cannot run ${command}: ${err.message}`, {
            cause: err,
            hint: `install ${command} (scripts/setup-debian.sh lists what the host builder needs)`,
          }),
        );
      });
      child.once('exit', (code, signal) => {
        finish();
        // Compilers that make started may outlive it after a kill; stop them too.
        if (timedOut || aborted || code !== 0) killGroup(child.pid);
        resolve({ code, signal, timedOut, aborted, durationMs: performance.now() - started });
      });
    });
  } finally {
    await log.close();
  }
}

/** The last `lines` lines of a log file (reading at most its last 64 KiB). */
export async function readLogTail(file: string, lines = 30): Promise<string> {
  let size: number;
  try {
    size = (await stat(file)).size;
  } catch {
    return '';
  }
  const window = 64 * 1024;
  let text: string;
  if (size <= window) {
    text = await readFile(file, 'utf8');
  } else {
    const fh = await open(file, 'r');
    try {
      const buf = Buffer.alloc(window);
      await fh.read(buf, 0, window, size - window);
      text = buf.toString('utf8');
    } finally {
      await fh.close();
    }
  }
  const all = text.replace(/\n$/, '').split('\n');
  return all.slice(-lines).join('\n');
}
