import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { PackageRef } from '../config/types.js';
import { FalcoProbesError, fileSystemError, type ErrorLocation } from '../util/errors.js';
import { sha256File } from '../util/hash.js';
import { checkSha256 } from '../util/names.js';
import type { Logger } from '../util/log.js';
import { processAlive } from '../util/process.js';

// The package cache is content-addressed: `<cacheDir>/sha256/<first 2 hex>/<sha256>`.
// A file reaches its address only by a rename after its bytes were hashed and
// counted against the lockfile, so a name is a claim that was checked once;
// the size is checked again on every use (cheap), the hash on request.
// Writers use a temporary file in the same folder (same file system, so the
// rename is atomic): a killed process leaves at most a `.part` file, never a
// wrong file at an address, and two processes storing the same package both
// rename identical bytes onto the same name.

const TEMP_SUFFIX = '.part';

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const override = env['FALCO_PROBES_CACHE'];
  if (override) return override;
  const xdg = env['XDG_CACHE_HOME'];
  const base = xdg?.startsWith('/') ? xdg : join(homedir(), '.cache');
  return join(base, 'falco-probes', 'packages');
}

/** The content address of a sha256 (checked, so a hostile lockfile value cannot become a path). */
export function cachePath(cacheDir: string, sha256: string): string {
  checkSha256(sha256);
  return join(cacheDir, 'sha256', sha256.slice(0, 2), sha256);
}

/**
 * The cached file for `pkg` if it is there and its size (and, with `verify`,
 * its sha256) matches. A file that fails is removed so it is fetched again.
 */
export async function lookupCached(
  cacheDir: string,
  pkg: PackageRef,
  opts: { verify?: boolean; logger?: Logger } = {},
): Promise<string | undefined> {
  const path = cachePath(cacheDir, pkg.sha256);
  let size: number;
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new FalcoProbesError('internal', `${path} is in the package cache but is not a file`, { hint: 'remove it' });
    size = st.size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let problem: string | undefined;
  if (size !== pkg.size) problem = `size ${size}, expected ${pkg.size}`;
  else if (opts.verify) {
    const got = await sha256File(path);
    if (got.sha256 !== pkg.sha256) problem = `sha256 ${got.sha256}`;
  }
  if (problem === undefined) return path;
  opts.logger?.warn(`cached ${pkg.name} at ${path} is corrupt (${problem}); removing it and fetching again`);
  await rm(path, { force: true });
  return undefined;
}

export interface StoreContext {
  /** Where the bytes came from (a URL, or `apt-get download name=version`), for messages. */
  source: string;
  location: ErrorLocation;
  signal?: AbortSignal;
}

/**
 * Stream `chunks` into the cache as `pkg`: write a temporary file while
 * hashing and counting, compare sha256 and size with the lockfile, then
 * rename it to its content address. Anything else leaves no file behind.
 * Stops reading as soon as more bytes than the lockfile's size arrive.
 */
export async function storeVerified(
  cacheDir: string,
  pkg: PackageRef,
  chunks: AsyncIterable<Uint8Array>,
  ctx: StoreContext,
): Promise<string> {
  const finalPath = cachePath(cacheDir, pkg.sha256);
  const dir = join(cacheDir, 'sha256', pkg.sha256.slice(0, 2));
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${pkg.sha256}.${process.pid}.${randomBytes(4).toString('hex')}${TEMP_SUFFIX}`);
  const hash = createHash('sha256');
  let size = 0;
  const fh = await open(tmp, 'wx', 0o644);
  let committed = false;
  try {
    try {
      for await (const chunk of chunks) {
        ctx.signal?.throwIfAborted();
        size += chunk.length;
        if (size > pkg.size) throw checksumError(pkg, ctx, `size mismatch: expected ${pkg.size} bytes, got more (at least ${size})`);
        hash.update(chunk);
        await fh.write(chunk).catch((err: unknown) => {
          throw fileSystemError(err, tmp);
        });
      }
      ctx.signal?.throwIfAborted();
      if (size !== pkg.size) throw checksumError(pkg, ctx, `size mismatch: expected ${pkg.size} bytes, got ${size}`);
      const got = hash.digest('hex');
      if (got !== pkg.sha256) throw checksumError(pkg, ctx, `sha256 mismatch: expected ${pkg.sha256}, got ${got}`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, finalPath);
    committed = true;
    return finalPath;
  } finally {
    if (!committed) await rm(tmp, { force: true });
  }
}

function checksumError(pkg: PackageRef, ctx: StoreContext, what: string): FalcoProbesError {
  return new FalcoProbesError('checksum', `${pkg.name} ${pkg.version} (${pkg.path}): ${what}`, {
    location: ctx.location,
    details: `  from ${ctx.source}`,
    hint: 'the mirror serves other bytes than the lockfile names: check the mirror, or re-resolve the lockfile if the repository changed',
  });
}

/**
 * Remove temporary files that killed processes left in one cache folder: a
 * `.part` file whose writer is gone (its pid is not alive here) and that has
 * not changed for `minAgeMs`. The age guard keeps files of live writers in
 * other pid namespaces (containers sharing the cache) safe.
 */
export async function sweepStaleTemps(dir: string, minAgeMs = 10 * 60_000): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return 0;
  }
  let removed = 0;
  const now = Date.now();
  for (const name of names) {
    const m = /^\.[0-9a-f]{64}\.(\d+)\.[0-9a-f]{8}\.part$/.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || processAlive(pid)) continue;
    try {
      const st = await stat(join(dir, name));
      if (now - st.mtimeMs < minAgeMs) continue;
      await rm(join(dir, name), { force: true });
      removed++;
    } catch {
      /* another sweeper removed it */
    }
  }
  return removed;
}
