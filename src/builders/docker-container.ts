import { hostname } from 'node:os';
import type { Writable } from 'node:stream';
import type Docker from 'dockerode';
import { processAlive } from '../util/process.js';
import { explainDockerError } from './docker-client.js';

// One container, run to its end and removed whatever happens: success,
// failure, timeout, an aborted signal, or Ctrl-C of this process. Every
// container carries the label falco-probes=1 so a leftover would be found.

export const CONTAINER_LABEL = 'falco-probes';
/** Which process on which machine owns a container, so a later run can remove what a killed one left. */
const OWNER_PID_LABEL = 'falco-probes.pid';
const OWNER_HOST_LABEL = 'falco-probes.host';

export interface ContainerMount {
  source: string;
  target: string;
  readOnly: boolean;
}

export interface ContainerSpec {
  image: string;
  cmd: string[];
  env: Record<string, string>;
  /** `uid:gid`. */
  user: string;
  workingDir: string;
  mounts: ContainerMount[];
  /** Memory limit in bytes (swap included: no swap beyond it). */
  memoryBytes: number;
  /** CPU limit in cores (may be fractional). */
  cpus: number;
  /** Writable in-memory folders (the root file system is read-only), with their size in bytes. */
  tmpfs?: Record<string, number>;
  labels?: Record<string, string>;
  hostname?: string;
  /** The container's parent cgroup (see schedulingParent). */
  cgroupParent?: string;
}

export interface ContainerOutcome {
  exitCode: number;
  /** The kernel's OOM killer acted inside the container's memory limit. */
  oomKilled: boolean;
  timedOut: boolean;
  aborted: boolean;
  durationMs: number;
}

export interface RunContainerOptions {
  timeoutMs: number;
  signal?: AbortSignal;
  /** Receives the container's stdout and stderr. */
  output?: Writable;
  /** Seconds between SIGTERM and SIGKILL on a timeout or an abort. */
  stopGraceSeconds?: number;
}

/**
 * Runs of this process in flight, so that SIGINT/SIGTERM first stops and
 * removes their containers. Without a handler Node would exit at once and no
 * `finally` would run.
 */
interface LiveRun {
  /** Set once the container exists. */
  stop?: () => Promise<void>;
  /** Resolves when the run's container is removed. */
  done: Promise<void>;
}
const live = new Set<LiveRun>();
/** The signal that interrupted this process, once one did. */
let interrupted: NodeJS.Signals | undefined;
const SIGNALS = ['SIGINT', 'SIGTERM'] as const;
const REMOVE_ON_SIGNAL_MS = 15_000;

async function onProcessSignal(sig: NodeJS.Signals): Promise<void> {
  interrupted = sig;
  const runs = [...live];
  await Promise.allSettled(runs.map((r) => r.stop?.()));
  // The last run to remove its container re-raises the signal (reraiseIfDone);
  // this is the fallback when a removal hangs or no run was in flight.
  await Promise.race([Promise.allSettled(runs.map((r) => r.done)), new Promise((r) => setTimeout(r, REMOVE_ON_SIGNAL_MS).unref())]);
  reraise(sig);
}

/**
 * When nobody else handles the signal, do what it would have done without
 * us: die by it. (A CLI that handles it itself, like the runner, gets the
 * builds back as cancelled instead.)
 */
function reraise(sig: NodeJS.Signals): void {
  const ours = handlers.get(sig);
  if (ours === undefined || !process.listeners(sig).includes(ours) || process.listenerCount(sig) !== 1) return;
  uninstallSignalHandlers();
  process.kill(process.pid, sig);
}

const handlers = new Map<NodeJS.Signals, () => void>(SIGNALS.map((s) => [s, () => void onProcessSignal(s)]));
function installSignalHandlers(): void {
  for (const [s, h] of handlers) if (!process.listeners(s).includes(h)) process.on(s, h);
}
function uninstallSignalHandlers(): void {
  for (const [s, h] of handlers) process.removeListener(s, h);
}

export async function runContainer(docker: Docker, spec: ContainerSpec, opts: RunContainerOptions): Promise<ContainerOutcome> {
  let markDone!: () => void;
  const run: LiveRun = { done: new Promise<void>((r) => (markDone = r)) };
  live.add(run);
  installSignalHandlers();
  try {
    return await runRegistered(docker, spec, opts, run);
  } finally {
    live.delete(run);
    markDone();
    if (live.size === 0) {
      // Before the caller sees the cancelled build: a process that dies by the signal should not first report it.
      if (interrupted) reraise(interrupted);
      uninstallSignalHandlers();
    }
  }
}

async function runRegistered(docker: Docker, spec: ContainerSpec, opts: RunContainerOptions, run: LiveRun): Promise<ContainerOutcome> {
  const started = Date.now();
  let container: Docker.Container;
  try {
    container = await docker.createContainer({
      Image: spec.image,
      Cmd: spec.cmd,
      Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
      User: spec.user,
      WorkingDir: spec.workingDir,
      ...(spec.hostname !== undefined ? { Hostname: spec.hostname } : {}),
      Labels: { ...spec.labels, [CONTAINER_LABEL]: '1', [OWNER_PID_LABEL]: String(process.pid), [OWNER_HOST_LABEL]: hostname() },
      NetworkDisabled: true,
      AttachStdout: true,
      AttachStderr: true,
      Tty: false,
      HostConfig: {
        NetworkMode: 'none',
        AutoRemove: false,
        ReadonlyRootfs: true,
        CapDrop: ['ALL'],
        SecurityOpt: ['no-new-privileges'],
        Memory: spec.memoryBytes,
        MemorySwap: spec.memoryBytes,
        NanoCpus: Math.round(spec.cpus * 1e9),
        PidsLimit: 4096,
        ...(spec.cgroupParent !== undefined ? { CgroupParent: spec.cgroupParent } : {}),
        Mounts: spec.mounts.map((m) => ({ Type: 'bind' as const, Source: m.source, Target: m.target, ReadOnly: m.readOnly })),
        Tmpfs: Object.fromEntries(Object.entries(spec.tmpfs ?? {}).map(([dir, size]) => [dir, `rw,nosuid,nodev,size=${size}`])),
      },
    });
  } catch (err) {
    throw explainDockerError(err, `docker create (image ${spec.image})`);
  }

  let timedOut = false;
  let aborted = false;
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= container
      .stop({ t: opts.stopGraceSeconds ?? 2 })
      .then(() => undefined)
      .catch(() =>
        container
          .kill()
          .then(() => undefined)
          .catch(() => undefined),
      ));
  const onAbort = () => {
    aborted = true;
    void stop();
  };
  const stopForSignal = () => {
    aborted = true;
    return stop();
  };

  run.stop = stopForSignal;
  let timer: NodeJS.Timeout | undefined;
  try {
    const stream = await container.attach({ stream: true, stdout: true, stderr: true });
    const ended = new Promise<void>((res) => {
      stream.on('end', res);
      stream.on('close', res);
      stream.on('error', () => res());
    });
    if (opts.output) docker.modem.demuxStream(stream, opts.output, opts.output);
    else stream.resume();

    if (opts.signal?.aborted || interrupted) {
      aborted = true;
      return { exitCode: -1, oomKilled: false, timedOut: false, aborted, durationMs: Date.now() - started };
    }
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    await container.start();
    timer = setTimeout(() => {
      timedOut = true;
      void stop();
    }, opts.timeoutMs);
    const waited = (await container.wait()) as { StatusCode: number };
    clearTimeout(timer);
    // The attach stream ends with the container; bounded, so a stuck stream cannot hang the build.
    await Promise.race([ended, new Promise((r) => setTimeout(r, 2_000))]);
    const state = ((await container.inspect()) as { State: { OOMKilled?: boolean } }).State;
    return {
      exitCode: waited.StatusCode,
      oomKilled: state.OOMKilled === true,
      timedOut,
      aborted: aborted || interrupted !== undefined,
      durationMs: Date.now() - started,
    };
  } catch (err) {
    throw explainDockerError(err, `docker run (image ${spec.image})`);
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
    await removeContainer(container);
  }
}

/** Remove a container and its anonymous volumes; retried, since a container being stopped may refuse once. */
async function removeContainer(container: Docker.Container): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await container.remove({ force: true, v: true });
      return;
    } catch (err) {
      const status = (err as { statusCode?: number }).statusCode;
      if (status === 404) return;
      if (attempt >= 4) throw explainDockerError(err, `docker rm ${container.id.slice(0, 12)}`);
      await new Promise((r) => setTimeout(r, 250 * (attempt + 1)));
    }
  }
}

/**
 * The parent cgroup for build containers. By default every container of a
 * daemon sits under one `docker` group, which the CPU scheduler weighs like a
 * single process: on a busy machine N build containers together get what one
 * host compiler gets. Directly under the root (cgroupfs driver only; the
 * systemd driver wants a slice name) each container weighs like one process,
 * as a host build does. Memory and CPU limits are the container's own either way.
 */
export async function schedulingParent(docker: Docker): Promise<string | undefined> {
  try {
    const info = (await docker.info()) as { CgroupDriver?: string };
    return info.CgroupDriver === 'cgroupfs' ? '/' : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Remove containers of ours whose process is gone (a run killed with SIGKILL,
 * or a second Ctrl-C that exits at once). Only those this machine started.
 * Returns how many were removed.
 */
export async function removeOrphanedContainers(docker: Docker): Promise<number> {
  const list = await docker.listContainers({
    all: true,
    filters: { label: [`${CONTAINER_LABEL}=1`, `${OWNER_HOST_LABEL}=${hostname()}`] },
  });
  let removed = 0;
  for (const c of list) {
    const pid = Number(c.Labels[OWNER_PID_LABEL]);
    if (!Number.isInteger(pid) || pid <= 0 || processAlive(pid)) continue;
    await removeContainer(docker.getContainer(c.Id));
    removed++;
  }
  return removed;
}
