import { randomBytes } from 'node:crypto';
import { link, mkdir, readdir, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join, basename } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FalcoProbesError } from '../util/errors.js';
import { processAlive } from '../util/process.js';

// One writer per repository. The lock file is created complete in one step
// (written to a private temporary file, then hard-linked to the lock name,
// which fails atomically when the name exists), so nobody ever reads a
// half-written lock. A holder on this host whose pid is gone (kill -9) is
// stale and is broken; a holder on another host cannot be checked and is
// reported with a hint.

export interface LockHolder {
  pid: number;
  host: string;
  /** ISO time the lock was taken: only shown to people, never compared. */
  since: string;
  command?: string;
}

export interface HeldLock {
  file: string;
  holder: LockHolder;
  release(): Promise<void>;
}

export interface LockOptions {
  /** Wait for the holder to finish instead of failing. */
  wait?: boolean;
  pollMs?: number;
  /** Called once when waiting starts. */
  onWait?: (holder: LockHolder) => void;
  signal?: AbortSignal;
  command?: string;
}

async function readHolder(file: string): Promise<LockHolder | undefined> {
  try {
    const value = JSON.parse(await readFile(file, 'utf8')) as Partial<LockHolder>;
    if (typeof value.pid === 'number' && typeof value.host === 'string') return value as LockHolder;
    return { pid: -1, host: '?', since: '?' };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    // Unreadable content: written by something else; treat as held by an unknown process.
    return { pid: -1, host: '?', since: '?' };
  }
}

function describe(h: LockHolder): string {
  return `pid ${h.pid} on ${h.host}${h.command ? ` (${h.command})` : ''}, since ${h.since}`;
}

function isStale(h: LockHolder): boolean {
  return h.host === hostname() && h.pid > 0 && !processAlive(h.pid);
}

/**
 * Break a stale lock. Two breakers must not both succeed (the second would
 * remove the first one's fresh lock), so breaking happens under a guard file
 * created with O_EXCL; the lock is re-read under the guard before removal.
 */
async function breakStale(file: string, seen: LockHolder): Promise<void> {
  const guard = `${file}.break`;
  try {
    await writeFile(guard, String(process.pid), { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    // A breaker that died mid-break leaves its guard; breaking takes milliseconds.
    const st = await stat(guard).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > 10_000) await rm(guard, { force: true });
    return;
  }
  try {
    const now = await readHolder(file);
    if (now && now.pid === seen.pid && now.host === seen.host && now.since === seen.since && isStale(now)) await rm(file, { force: true });
  } finally {
    await rm(guard, { force: true });
  }
}

/**
 * The lock's own temporaries that processes killed mid-way left beside it:
 * a lock body (`.<lock>.<pid>.<hex>.tmp`, between writing it and linking
 * it) and a breaker's guard (`<lock>.break`, its pid inside). Called with
 * the lock held: nobody breaks a lock whose holder is alive, so a guard is
 * in use only by a live process; one without a readable pid is removed
 * once it is as old as breakStale's limit.
 */
async function removeDeadTemporaries(file: string): Promise<void> {
  const dir = dirname(file);
  const name = basename(file);
  for (const n of await readdir(dir).catch(() => [] as string[])) {
    const m = /^\.(.+)\.(\d+)\.[0-9a-f]{8}\.tmp$/.exec(n);
    if (m && m[1] === name && Number(m[2]) !== process.pid && !processAlive(Number(m[2]))) await rm(join(dir, n), { force: true });
  }
  const guard = `${file}.break`;
  const st = await stat(guard).catch(() => undefined);
  if (!st) return;
  const owner = Number((await readFile(guard, 'utf8').catch(() => '')).trim());
  const dead = Number.isInteger(owner) && owner > 0 ? owner !== process.pid && !processAlive(owner) : Date.now() - st.mtimeMs > 10_000;
  if (dead) await rm(guard, { force: true });
}

export async function acquireLock(file: string, options: LockOptions = {}): Promise<HeldLock> {
  await mkdir(dirname(file), { recursive: true });
  const holder: LockHolder = {
    pid: process.pid,
    host: hostname(),
    since: new Date().toISOString(),
    ...(options.command ? { command: options.command } : {}),
  };
  const body = `${JSON.stringify(holder)}\n`;
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  await writeFile(tmp, body);
  let waiting = false;
  try {
    for (;;) {
      try {
        await link(tmp, file);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const current = await readHolder(file);
      if (current === undefined) continue; // released in between: try again at once
      if (isStale(current)) {
        await breakStale(file, current);
        continue;
      }
      if (!options.wait) {
        throw new FalcoProbesError('lock', `the repository is locked by another runner: ${describe(current)}`, {
          location: { file },
          hint:
            current.host === hostname()
              ? 'wait for it to finish, or run with --wait-lock'
              : `it runs on another host; if that runner is gone, remove ${file}`,
        });
      }
      if (!waiting) {
        waiting = true;
        options.onWait?.(current);
      }
      await sleep(options.pollMs ?? 200, undefined, options.signal ? { signal: options.signal } : undefined);
    }
  } finally {
    await rm(tmp, { force: true });
  }
  await removeDeadTemporaries(file);
  let released = false;
  return {
    file,
    holder,
    async release() {
      if (released) return;
      released = true;
      const now = await readHolder(file);
      // Remove only our own lock: a stale-breaker may have replaced it (it should not, but be sure).
      if (now && now.pid === holder.pid && now.host === holder.host && now.since === holder.since)
        await unlink(file).catch(() => undefined);
    },
  };
}
