import { createReadStream, type ReadStream } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { PackageRef } from '../config/types.js';
import { FalcoProbesError } from '../util/errors.js';
import { DEFAULT_HTTP, HttpStatusError, httpGetStream, joinUrl, tryMirrors, type HttpOptions } from '../util/http.js';
import type { Logger } from '../util/log.js';
import { checkRelativePath } from '../util/names.js';
import { storeVerified } from './cache.js';

// Download one package from its repository's mirrors, in order. Within a
// mirror, transfer failures (connection refused or reset, timeouts, 5xx, a
// body cut short of its Content-Length) are retried with backoff up to
// `attempts` times; a 4xx moves on to the next mirror at once. Bytes that
// arrive complete but differ from the lockfile (sha256, or the size the
// server announces or sends) stop everything with a `checksum` error: another
// mirror or apt might well serve the right bytes, but a lockfile that no
// longer matches its repository is something a person must look at.

export interface MirrorDownloadOptions {
  cacheDir: string;
  http?: HttpOptions;
  signal?: AbortSignal;
  logger?: Logger;
}

export async function downloadFromMirrors(pkg: PackageRef, mirrors: readonly string[], opts: MirrorDownloadOptions): Promise<string> {
  checkRelativePath(pkg.path);
  if (mirrors.length === 0) {
    throw new FalcoProbesError('network', `no mirror is configured for repository ${JSON.stringify(pkg.repository)} of ${pkg.name}`, {
      hint: `add mirrors to the source definition or pass --mirror ${pkg.repository}=URL`,
    });
  }
  return tryMirrors(mirrors, (base) => downloadFromMirror(pkg, joinUrl(base, pkg.path), opts));
}

async function downloadFromMirror(pkg: PackageRef, url: string, opts: MirrorDownloadOptions): Promise<string> {
  if (url.startsWith('file:')) return copyFromFileMirror(pkg, url, opts);
  const http = { ...DEFAULT_HTTP, ...opts.http };
  const attempts = Math.max(1, http.attempts);
  let last: unknown;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    opts.signal?.throwIfAborted();
    try {
      // One attempt at a time here, so that a body cut short is retried the same way as a refused connection.
      const { stream, size } = await httpGetStream(url, { ...http, attempts: 1, ...(opts.signal ? { signal: opts.signal } : {}) });
      // The body may fail before storeVerified starts reading (it opens the temporary file first); the
      // reader still sees the error, and without a listener Node would also throw it as uncaught.
      stream.on('error', () => {});
      if (size !== undefined && size !== pkg.size) {
        stream.destroy();
        throw new FalcoProbesError(
          'checksum',
          `${pkg.name} ${pkg.version} (${pkg.path}): size mismatch: expected ${pkg.size} bytes, the server announces ${size}`,
          {
            location: { url },
            hint: 'the mirror serves another file than the lockfile names: check the mirror, or re-resolve the lockfile if the repository changed',
          },
        );
      }
      const path = await storeVerified(opts.cacheDir, pkg, stream, {
        source: url,
        location: { url },
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      opts.logger?.debug(`fetched ${pkg.name} ${pkg.version} (${pkg.size} bytes) from ${url}`);
      return path;
    } catch (err) {
      last = err;
      if (opts.signal?.aborted) throw opts.signal.reason ?? err;
      if (!(err instanceof FalcoProbesError) || err.kind !== 'network') throw err;
      if (err instanceof HttpStatusError && err.status < 500) throw err;
      opts.logger?.debug(`attempt ${attempt}/${attempts} for ${url} failed: ${err.message}`);
      if (attempt < attempts)
        await sleep(http.backoffMs * 2 ** (attempt - 1), undefined, opts.signal ? { signal: opts.signal } : undefined);
    }
  }
  const cause = last as FalcoProbesError;
  // httpGetStream counts its own single attempt in the message; say the real count once.
  const what = cause.message.replace(/ \(after \d+ attempts?\)$/, '');
  throw new FalcoProbesError('network', `${what} (after ${attempts} attempt${attempts === 1 ? '' : 's'})`, { location: { url }, cause });
}

/**
 * A `file://` URL opened for reading: an air-gapped mirror on disk. A file
 * that is not there is like a 404 (a `network` error, so the next mirror is
 * tried); a URL that is not a file URL is a usage error.
 */
export async function openFileUrl(url: string): Promise<ReadStream> {
  let path: string;
  try {
    path = fileURLToPath(url);
  } catch (err) {
    throw new FalcoProbesError('usage', `not a file URL: ${JSON.stringify(url)}`, { cause: err });
  }
  const stream = createReadStream(path);
  stream.on('error', () => {}); // reported through the reader, as for HTTP bodies
  try {
    await new Promise<void>((resolve, reject) => {
      stream.once('open', () => resolve());
      stream.once('error', reject);
    });
  } catch (err) {
    stream.destroy();
    throw new FalcoProbesError('network', `cannot read ${path}: ${(err as Error).message}`, { location: { url }, cause: err });
  }
  return stream;
}

/** `--mirror NAME=file:///srv/mirror`: an air-gapped mirror on disk, verified like any download. */
async function copyFromFileMirror(pkg: PackageRef, url: string, opts: MirrorDownloadOptions): Promise<string> {
  const stream = await openFileUrl(url);
  return storeVerified(opts.cacheDir, pkg, stream, { source: url, location: { url }, ...(opts.signal ? { signal: opts.signal } : {}) });
}
