import { execFile, spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { FalcoProbesError } from '../util/errors.js';

// One microVM: qemu-system-x86_64 with the kernel, an initramfs, the serial
// console on a pipe, no disk, no network, no reboot, and a hard time limit.
// qemu runs in a process group of its own, killed as a whole on timeout,
// cancel, or when this process exits, so no VM outlives its run.

export type Accelerator = 'kvm' | 'tcg';

export const DEFAULT_QEMU = 'qemu-system-x86_64';

/**
 * console=ttyS0: the verdict comes over the serial line. panic=-1: a panic
 * reboots at once, and -no-reboot turns that into qemu's exit, so a kernel
 * that dies does not wait for the timeout. quiet: the console carries little
 * besides /init's lines. rdinit=/init: run the initramfs's /init.
 */
export const KERNEL_COMMAND_LINE = 'console=ttyS0 panic=-1 quiet rdinit=/init';

/** Console bytes kept in memory; a runaway guest cannot fill the host's memory. */
const MAX_CONSOLE = 4 * 1024 * 1024;

export interface VmOptions {
  /** Default: qemu-system-x86_64 from PATH. */
  qemu?: string;
  /** bzImage, or an uncompressed vmlinux with a PVH entry note. */
  kernel: string;
  initrd: string;
  append?: string;
  memoryMiB: number;
  accelerator: Accelerator;
  timeoutMs: number;
  signal?: AbortSignal;
  /** Called with the console so far at each new line: true once the guest said all it will (it then powers off). */
  finished?: (console: string) => boolean;
  /** Time a finished guest has to power off before it is killed (default 10 s). */
  graceMs?: number;
}

export interface VmOutcome {
  argv: string[];
  /** The serial console: CR LF turned into LF, terminal escapes removed. */
  console: string;
  /** qemu's own messages (a kernel it cannot load, a missing accelerator). */
  stderr: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  aborted: boolean;
  /** The guest said all it had to say, then did not power off within the grace time and was killed. */
  killedAfterFinish: boolean;
  ms: number;
}

export function qemuArgv(o: VmOptions): string[] {
  return [
    o.qemu ?? DEFAULT_QEMU,
    '-nodefaults',
    '-no-user-config',
    '-nographic',
    '-no-reboot',
    '-accel',
    o.accelerator,
    ...(o.accelerator === 'kvm' ? ['-cpu', 'host'] : []),
    '-smp',
    '1',
    '-m',
    `${o.memoryMiB}M`,
    '-kernel',
    o.kernel,
    '-initrd',
    o.initrd,
    '-append',
    o.append ?? KERNEL_COMMAND_LINE,
    '-serial',
    'stdio',
    '-monitor',
    'none',
    '-nic',
    'none',
  ];
}

/** Process groups of running VMs, killed if this process exits while they run. */
const liveGroups = new Set<number>();
let exitHookInstalled = false;

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // ESRCH: already gone
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const pid of liveGroups) killGroup(pid);
  });
}

// eslint-disable-next-line no-control-regex
const ESCAPES = /\x1b(?:\[[0-9;?]*[A-Za-z]|[()][A-Z0-9]|[=>c])/g;

export function cleanConsole(text: string): string {
  return text.replace(ESCAPES, '').replace(/\r+\n/g, '\n').replace(/\r/g, '\n');
}

let setprivPath: string | null | undefined;
/** Whether `command` names an executable file, itself or through PATH. */
function executable(command: string): boolean {
  const dirs = command.includes('/') ? [''] : (process.env['PATH'] ?? '').split(':').filter(Boolean);
  return dirs.some((d) => {
    try {
      accessSync(d ? join(d, command) : command, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * `argv` run through `setpriv --pdeathsig KILL` when setpriv is installed (it
 * execs the command: same pid, same group); `argv` itself otherwise, or when the
 * command is not there (spawn's own error then says so, as without setpriv).
 */
export function withParentDeathSignal(argv: string[]): string[] {
  if (setprivPath === undefined) setprivPath = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => executable(p)) ?? null;
  return setprivPath && executable(argv[0]!) ? [setprivPath, '--pdeathsig', 'KILL', '--', ...argv] : argv;
}

/** Boot one VM and wait until it powers off, is done and killed, times out, or is cancelled. */
export async function runVm(o: VmOptions): Promise<VmOutcome> {
  const argv = qemuArgv(o);
  const [command, ...args] = argv;
  const started = performance.now();
  if (o.signal?.aborted)
    return { argv, console: '', stderr: '', code: null, signal: null, timedOut: false, aborted: true, killedAfterFinish: false, ms: 0 };
  installExitHook();
  return new Promise<VmOutcome>((resolve, reject) => {
    let raw = '';
    let stderr = '';
    let timedOut = false;
    let aborted = false;
    let finished = false;
    let killedAfterFinish = false;
    let graceTimer: NodeJS.Timeout | undefined;
    // qemu runs in a process group of its own (so the whole VM is killed at once); that also keeps it
    // from dying with this process. setpriv (util-linux) asks the kernel to kill it when this process
    // dies, a SIGKILL included, which no handler here could catch.
    const [spawnCommand, ...spawnArgs] = withParentDeathSignal([command!, ...args]);
    const child = spawn(spawnCommand!, spawnArgs, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    if (child.pid !== undefined) liveGroups.add(child.pid);
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, o.timeoutMs);
    const onAbort = () => {
      aborted = true;
      killGroup(child.pid);
    };
    o.signal?.addEventListener('abort', onAbort, { once: true });
    child.stdout.setEncoding('latin1');
    child.stdout.on('data', (chunk: string) => {
      raw += chunk;
      if (raw.length > MAX_CONSOLE) raw = raw.slice(raw.length - MAX_CONSOLE);
      if (!finished && o.finished && chunk.includes('\n') && o.finished(cleanConsole(raw))) {
        finished = true;
        graceTimer = setTimeout(() => {
          killedAfterFinish = true;
          killGroup(child.pid);
        }, o.graceMs ?? 10_000);
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      if (stderr.length < 64 * 1024) stderr += chunk;
    });
    const done = () => {
      clearTimeout(timer);
      if (graceTimer) clearTimeout(graceTimer);
      o.signal?.removeEventListener('abort', onAbort);
      if (child.pid !== undefined) liveGroups.delete(child.pid);
    };
    child.once('error', (err) => {
      done();
      reject(
        new FalcoProbesError('usage', `cannot run ${command}: ${err.message}`, {
          cause: err,
          hint: 'install qemu-system-x86 (scripts/setup-debian.sh does)',
        }),
      );
    });
    child.once('close', (code, signal) => {
      done();
      // Anything qemu started in its group goes with it.
      killGroup(child.pid);
      resolve({
        argv,
        console: cleanConsole(raw),
        stderr: stderr.trim(),
        code,
        signal,
        timedOut: timedOut && !finished,
        aborted,
        killedAfterFinish,
        ms: performance.now() - started,
      });
    });
  });
}

const execFileAsync = promisify(execFile);

/** `qemu-system-x86_64 --version`'s first line; a clear error when qemu is not installed. */
export async function qemuVersion(qemu: string = DEFAULT_QEMU): Promise<string> {
  try {
    const { stdout } = await execFileAsync(qemu, ['--version'], {
      timeout: 15_000,
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', LC_ALL: 'C' },
    });
    return stdout.split('\n')[0]?.trim() ?? '';
  } catch (err) {
    throw new FalcoProbesError('usage', `cannot run ${qemu}: ${(err as Error).message.split('\n')[0]}`, {
      cause: err,
      hint: 'install qemu-system-x86 (scripts/setup-debian.sh does)',
    });
  }
}

/** Whether /dev/kvm can be opened for reading and writing, and why not. */
export async function kvmDeviceUsable(): Promise<{ ok: true } | { ok: false; reason: string }> {
  try {
    const fh = await open('/dev/kvm', 'r+');
    await fh.close();
    return { ok: true };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { ok: false, reason: code === 'ENOENT' ? 'no /dev/kvm' : `cannot open /dev/kvm (${code ?? (err as Error).message})` };
  }
}
