import { dirname, resolve } from 'node:path';
import pLimit, { type LimitFunction } from 'p-limit';
import type { PackageRef } from '../config/types.js';
import { FalcoProbesError } from '../util/errors.js';
import type { HttpOptions } from '../util/http.js';
import type { Logger } from '../util/log.js';
import { checkSha256 } from '../util/names.js';
import { aptGetAvailable, fetchViaApt } from './apt.js';
import { aptFallbackMirrors, type AptSourcesOptions } from './apt-sources.js';
import { cachePath, defaultCacheDir, lookupCached, sweepStaleTemps } from './cache.js';
import { downloadFromMirrors } from './mirrors.js';
import type { FetchOptions, FetchPackage, FetchVia, Fetcher, FetcherOptions, FetcherStats } from './types.js';

// Getting a package the lockfile names into the content-addressed cache.
// Many targets need the same package (Debian's `-common` and `linux-kbuild`
// are shared by every flavour of an ABI), so all callers in this process that
// ask for one sha256 at once share one promise: one lookup, at most one
// download. Across processes the cache stays consistent by temp file and
// rename (see cache.ts); two processes may both download, and both end with
// the same good file. Downloads have their own concurrency limit, separate
// from the number of builds.

interface Flight {
  promise: Promise<string>;
  controller: AbortController;
  waiters: number;
}

const flights = new Map<string, Flight>();

/**
 * Cached files this process has hashed (or stored itself, hashing as it
 * wrote): a cached package is verified by sha256 the first time a process
 * uses it, since a bit flip on disk keeps its size. Later uses check the size.
 */
const verifiedThisProcess = new Set<string>();

/** Repositories whose fallback to apt's mirrors this process has announced. */
const announcedFallbacks = new Set<string>();

interface FetchOneOptions {
  cacheDir: string;
  via: FetchVia;
  verify?: boolean;
  http?: HttpOptions;
  logger?: Logger;
  aptTimeoutMs?: number;
  /** apt's configuration, for its mirrors of a package's archive (default /etc/apt, $FALCO_PROBES_APT_ETC). */
  aptSources?: AptSourcesOptions;
  /** Wraps the network part (not cache hits). */
  limit?: LimitFunction;
  /** Aborts the shared download (all waiters), e.g. the fetcher's signal. */
  sharedSignal?: AbortSignal;
  onHit?: () => void;
  onDownload?: (bytes: number) => void;
}

/** The FetchPackage contract: one package, mirrors in order, no concurrency limit of its own. */
export const fetchPackage: FetchPackage = async (pkg, mirrors, options: FetchOptions) =>
  fetchShared(pkg, mirrors, { ...options, cacheDir: resolve(options.cacheDir) }, options.signal);

/** The fetcher a run holds: cache, via, and a download limit shared by all targets. */
export function createFetcher(options: FetcherOptions): Fetcher {
  const cacheDir = resolve(options.cacheDir ?? defaultCacheDir());
  const limit = pLimit(Math.max(1, options.downloads ?? 4));
  const stats: FetcherStats = { cacheHits: 0, downloads: 0, bytes: 0 };
  const base: FetchOneOptions = {
    cacheDir,
    via: options.via ?? 'auto',
    limit,
    onHit: () => stats.cacheHits++,
    onDownload: (bytes) => {
      stats.downloads++;
      stats.bytes += bytes;
    },
    ...(options.verify !== undefined ? { verify: options.verify } : {}),
    ...(options.http ? { http: options.http } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
    ...(options.aptTimeoutMs !== undefined ? { aptTimeoutMs: options.aptTimeoutMs } : {}),
    ...(options.signal ? { sharedSignal: options.signal } : {}),
    ...(options.aptSources ? { aptSources: options.aptSources } : {}),
  };
  return {
    cacheDir,
    fetch: async (pkg, opts = {}) => fetchShared(pkg, options.mirrorsFor(pkg), base, opts.signal),
    stats: () => ({ ...stats }),
  };
}

function fetchShared(pkg: PackageRef, mirrors: string[], opts: FetchOneOptions, callerSignal: AbortSignal | undefined): Promise<string> {
  checkSha256(pkg.sha256);
  const key = `${opts.cacheDir}\0${pkg.sha256}`;
  let flight = flights.get(key);
  if (!flight) {
    const controller = new AbortController();
    const signal = opts.sharedSignal ? AbortSignal.any([controller.signal, opts.sharedSignal]) : controller.signal;
    const f: Flight = { controller, waiters: 0, promise: Promise.resolve('') };
    flights.set(key, f);
    f.promise = fetchOne(pkg, mirrors, opts, signal).finally(() => {
      if (flights.get(key) === f) flights.delete(key);
    });
    // Waiters that gave up leave no one to observe a failure.
    f.promise.catch(() => {});
    flight = f;
  }
  const f = flight;
  f.waiters++;
  return new Promise<string>((resolvePromise, reject) => {
    const onAbort = () => {
      f.waiters--;
      if (f.waiters === 0) {
        // Nobody waits any more: stop the download, and let the next caller start afresh.
        if (flights.get(key) === f) flights.delete(key);
        f.controller.abort(callerSignal?.reason);
      }
      reject(callerSignal?.reason);
    };
    if (callerSignal?.aborted) {
      onAbort();
      return;
    }
    callerSignal?.addEventListener('abort', onAbort, { once: true });
    f.promise.then(
      (v) => {
        callerSignal?.removeEventListener('abort', onAbort);
        resolvePromise(v);
      },
      (e: unknown) => {
        callerSignal?.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

async function fetchOne(pkg: PackageRef, mirrors: string[], opts: FetchOneOptions, signal: AbortSignal): Promise<string> {
  const address = cachePath(opts.cacheDir, pkg.sha256);
  const verify = opts.verify === true || !verifiedThisProcess.has(address);
  const cached = await lookupCached(opts.cacheDir, pkg, {
    ...(verify ? { verify: true } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
  });
  if (cached) {
    if (verify) verifiedThisProcess.add(address);
    opts.onHit?.();
    return cached;
  }
  const run = async () => {
    signal.throwIfAborted();
    // Another process may have finished the same package while this one waited its turn.
    const again = await lookupCached(opts.cacheDir, pkg, { verify: true, ...(opts.logger ? { logger: opts.logger } : {}) });
    if (again) {
      verifiedThisProcess.add(address);
      opts.onHit?.();
      return again;
    }
    await sweepStaleTemps(dirname(address));
    const path = await acquire(pkg, mirrors, opts, signal);
    // Stored by storeVerified, which hashed every byte on its way in.
    verifiedThisProcess.add(address);
    opts.onDownload?.(pkg.size);
    return path;
  };
  return opts.limit ? opts.limit(run) : run();
}

async function acquire(pkg: PackageRef, mirrors: string[], opts: FetchOneOptions, signal: AbortSignal): Promise<string> {
  const common = { cacheDir: opts.cacheDir, signal, ...(opts.logger ? { logger: opts.logger } : {}) };
  const viaApt = () => fetchViaApt(pkg, { ...common, ...(opts.aptTimeoutMs !== undefined ? { timeoutMs: opts.aptTimeoutMs } : {}) });
  const viaMirrors = () => downloadFromMirrors(pkg, mirrors, { ...common, ...(opts.http ? { http: opts.http } : {}) });
  if (opts.via === 'apt') return viaApt();
  if (opts.via === 'http') return viaMirrors();

  const aptCanHelp = pkg.path.endsWith('.deb') && (await aptGetAvailable());
  if (mirrors.length === 0 && aptCanHelp) return viaApt();
  const failures: FalcoProbesError[] = [];
  // Only when no mirror could deliver (network errors and HTTP statuses);
  // never after a checksum mismatch or an abort.
  const note = (err: unknown) => {
    if (signal.aborted || !(err instanceof FalcoProbesError) || err.kind !== 'network') throw err;
    failures.push(err);
    opts.logger?.debug(err.format());
  };
  try {
    return await viaMirrors();
  } catch (err) {
    note(err);
  }
  // apt's own mirrors of the same archive (same URI path) serve the same
  // pool path, for any suite of it; apt-get download knows only apt's suites.
  const fallbacks = await aptFallbackMirrors(mirrors, opts.aptSources ?? {});
  if (fallbacks.length) {
    // Said once per repository and fallback set: a run fetches hundreds of packages from one archive.
    const said = `${pkg.repository}\0${fallbacks.map((f) => f.url).join(' ')}`;
    const line = `repository ${pkg.repository}: its mirrors did not deliver ${pkg.name} ${pkg.version}; trying apt's mirror${fallbacks.length > 1 ? 's' : ''} of the same archive: ${fallbacks.map((f) => `${f.url} (${f.file})`).join(', ')}`;
    if (announcedFallbacks.has(said)) opts.logger?.debug(line);
    else {
      announcedFallbacks.add(said);
      opts.logger?.info(`${line} (said once per repository)`);
    }
    try {
      return await downloadFromMirrors(
        pkg,
        fallbacks.map((f) => f.url),
        { ...common, ...(opts.http ? { http: opts.http } : {}) },
      );
    } catch (err) {
      note(err);
    }
  }
  if (aptCanHelp) {
    opts.logger?.info(`no mirror delivered ${pkg.name} ${pkg.version}; asking apt`);
    try {
      return await viaApt();
    } catch (err) {
      note(err);
    }
  }
  if (failures.length === 1) throw failures[0];
  throw new FalcoProbesError(
    'network',
    `${pkg.name} ${pkg.version}: ${['no mirror delivered it', ...(fallbacks.length ? ["nor did apt's mirrors"] : []), ...(aptCanHelp ? ['and apt could not fetch it'] : [])].join(', ')}`,
    {
      details: failures.map((e) => e.format().replace(/^/gm, '  ')).join('\n'),
      hint: `check the mirrors of repository ${pkg.repository} (or pass --mirror ${pkg.repository}=URL) and apt's sources`,
    },
  );
}
