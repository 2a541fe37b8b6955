import http from 'node:http';
import https from 'node:https';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { FalcoProbesError } from './errors.js';

export interface HttpOptions {
  /** Time allowed without any byte arriving (connect, headers, or between body chunks). */
  idleTimeoutMs?: number;
  /** Refuse a response larger than this (Content-Length, or counted while streaming). */
  maxBytes?: number;
  /** Attempts in all, for connection errors, timeouts and 5xx. 404 and other 4xx are not retried. */
  attempts?: number;
  /** First backoff delay; doubles each time. */
  backoffMs?: number;
  signal?: AbortSignal;
}

export const DEFAULT_HTTP: Required<Omit<HttpOptions, 'signal'>> = {
  idleTimeoutMs: 30_000,
  maxBytes: 2 * 1024 ** 3,
  attempts: 3,
  backoffMs: 200,
};

/** Thrown for a response status that retrying will not fix. */
export class HttpStatusError extends FalcoProbesError {
  readonly status: number;
  constructor(url: string, status: number) {
    super('network', `HTTP ${status}`, { location: { url } });
    this.status = status;
  }
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    return url;
  }
}

/**
 * Open a GET response as a byte stream. Retries connection failures,
 * timeouts and 5xx with exponential backoff before any body byte is handed
 * out; a failure after that surfaces as a stream error (callers that need the
 * whole body use `httpGetBuffer`, which retries those too).
 */
export async function httpGetStream(url: string, options: HttpOptions = {}): Promise<{ stream: Readable; size: number | undefined }> {
  const opts = { ...DEFAULT_HTTP, ...options };
  let lastError: unknown;
  for (let attempt = 1; attempt <= opts.attempts; attempt++) {
    try {
      return await openOnce(url, opts);
    } catch (err) {
      lastError = err;
      if (err instanceof HttpStatusError && err.status < 500) throw err;
      // Only transport failures are worth another try; a size cap or a bad URL will not change.
      if (err instanceof FalcoProbesError && err.kind !== 'network') throw err;
      if (opts.signal?.aborted) throw err;
      if (attempt < opts.attempts) await sleep(opts.backoffMs * 2 ** (attempt - 1), undefined, { signal: opts.signal });
    }
  }
  throw withAttempts(lastError, url, opts.attempts);
}

function withAttempts(err: unknown, url: string, attempts: number): unknown {
  if (attempts > 1 && err instanceof FalcoProbesError && err.kind === 'network')
    return new FalcoProbesError('network', `${err.message} (after ${attempts} attempts)`, { location: { url: redact(url) }, cause: err });
  return err;
}

/** GET a whole body into memory (for small metadata files), retrying failures mid-body too. */
export async function httpGetBuffer(url: string, options: HttpOptions = {}): Promise<Buffer> {
  const opts = { ...DEFAULT_HTTP, ...options };
  let lastError: unknown;
  for (let attempt = 1; attempt <= opts.attempts; attempt++) {
    try {
      const { stream } = await httpGetStream(url, { ...opts, attempts: 1 });
      const chunks: Buffer[] = [];
      for await (const c of stream) chunks.push(c as Buffer);
      return Buffer.concat(chunks);
    } catch (err) {
      lastError = err;
      if (err instanceof HttpStatusError && err.status < 500) throw err;
      if (err instanceof FalcoProbesError && /larger than/.test(err.message)) throw err;
      if (attempt < opts.attempts) await sleep(opts.backoffMs * 2 ** (attempt - 1), undefined, { signal: opts.signal });
    }
  }
  throw withAttempts(lastError, url, opts.attempts);
}

function openOnce(url: string, opts: Required<Omit<HttpOptions, 'signal'>> & { signal?: AbortSignal }): Promise<{ stream: Readable; size: number | undefined }> {
  const shown = redact(url);
  return new Promise((resolve, reject) => {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      reject(new FalcoProbesError('usage', `not a URL: ${JSON.stringify(url)}`));
      return;
    }
    const lib = parsed.protocol === 'https:' ? https : parsed.protocol === 'http:' ? http : undefined;
    if (!lib) {
      reject(new FalcoProbesError('usage', `unsupported URL scheme ${parsed.protocol}`, { location: { url: shown } }));
      return;
    }
    const req = lib.get(parsed, { headers: { 'user-agent': 'falco-probes', 'accept-encoding': 'identity' }, signal: opts.signal });
    req.setTimeout(opts.idleTimeoutMs, () => {
      req.destroy(new FalcoProbesError('network', `timed out after ${opts.idleTimeoutMs} ms without data`, { location: { url: shown } }));
    });
    req.on('error', (err) => {
      if (err instanceof FalcoProbesError) reject(err);
      else reject(new FalcoProbesError('network', `request failed: ${(err as Error).message}`, { location: { url: shown }, cause: err }));
    });
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400 && res.headers.location) {
        res.resume();
        const next = new URL(res.headers.location, parsed).toString();
        openOnce(next, opts).then(resolve, reject);
        return;
      }
      if (status !== 200) {
        res.resume();
        reject(new HttpStatusError(shown, status));
        return;
      }
      const lengthHeader = res.headers['content-length'];
      const size = lengthHeader !== undefined ? Number(lengthHeader) : undefined;
      if (size !== undefined && size > opts.maxBytes) {
        res.destroy();
        reject(new FalcoProbesError('input', `response of ${size} bytes is larger than the limit of ${opts.maxBytes}`, { location: { url: shown } }));
        return;
      }
      let seen = 0;
      const guard = new Transform({
        transform(chunk: Buffer, _enc, cb: TransformCallback) {
          seen += chunk.length;
          if (seen > opts.maxBytes) {
            cb(new FalcoProbesError('input', `response is larger than the limit of ${opts.maxBytes} bytes`, { location: { url: shown } }));
            return;
          }
          cb(null, chunk);
        },
        flush(cb) {
          if (size !== undefined && seen !== size) {
            cb(new FalcoProbesError('network', `connection closed after ${seen} of ${size} bytes`, { location: { url: shown } }));
            return;
          }
          cb();
        },
      });
      res.on('aborted', () => guard.destroy(new FalcoProbesError('network', `connection reset after ${seen} bytes`, { location: { url: shown } })));
      res.on('error', (err) => guard.destroy(err instanceof FalcoProbesError ? err : new FalcoProbesError('network', `connection failed: ${err.message}`, { location: { url: shown } })));
      res.pipe(guard);
      resolve({ stream: guard, size });
    });
  });
}

/** Join a mirror base URL and a repository-relative path. */
export function joinUrl(base: string, relPath: string): string {
  return `${base.replace(/\/+$/, '')}/${relPath.replace(/^\/+/, '')}`;
}

/**
 * Try each mirror in order; return the first success. Errors that say the
 * data itself is bad (checksums, parse errors) are not retried on other
 * mirrors unless `fallbackOn` says so; network and HTTP errors are.
 */
export async function tryMirrors<T>(mirrors: readonly string[], fn: (base: string) => Promise<T>): Promise<T> {
  const errors: FalcoProbesError[] = [];
  for (const base of mirrors) {
    try {
      return await fn(base);
    } catch (err) {
      if (err instanceof FalcoProbesError && err.kind === 'network') {
        errors.push(err);
        continue;
      }
      throw err;
    }
  }
  if (errors.length === 1) throw errors[0];
  throw new FalcoProbesError('network', `all ${mirrors.length} mirrors failed`, {
    details: errors.map((e) => `  ${e.format()}`).join('\n'),
  });
}

export { Readable };
