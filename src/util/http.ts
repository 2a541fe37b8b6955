import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import tls from 'node:tls';
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

// Proxies: HTTP_PROXY for http:// URLs, HTTPS_PROXY for https:// ones (HTTP_PROXY
// when it is unset), NO_PROXY for the hosts reached directly; the lower-case
// names win over the upper-case ones, as with undici's EnvHttpProxyAgent and
// curl. An http:// URL is asked of the proxy by its absolute URI; an https://
// one goes through a CONNECT tunnel, so TLS is still end to end with the
// mirror. localhost and loopback addresses are always direct. The proxy itself is spoken to in plain HTTP (an http:// proxy URL,
// with user:password@ for Basic proxy authentication). Everything else (node:http,
// the timeouts, the size limits) is unchanged, which is why this is done here
// rather than by moving to undici.

/** The proxy environment variables, read at each request (a test or a caller may change them). */
export interface ProxyEnv {
  [name: string]: string | undefined;
}

/** The lower-case variable, else the upper-case one; an empty value counts as unset. */
function envValue(env: ProxyEnv, name: string): string | undefined {
  for (const v of [env[name.toLowerCase()], env[name.toUpperCase()]]) if (v !== undefined && v.trim() !== '') return v.trim();
  return undefined;
}

/** Whether NO_PROXY names this host (and port): `*`, a host, a domain (`example.org` and `.example.org` match its subdomains too), each with an optional `:port`. */
export function bypassesProxy(target: URL, noProxy: string | undefined): boolean {
  if (noProxy === undefined) return false;
  const host = target.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const port = target.port || (target.protocol === 'https:' ? '443' : '80');
  for (const raw of noProxy.split(/[\s,]+/)) {
    let entry = raw.trim().toLowerCase();
    if (!entry) continue;
    if (entry === '*') return true;
    let entryPort: string | undefined;
    const m = /^(\[[^\]]*\]|[^:]*):(\d+)$/.exec(entry);
    if (m) {
      entry = m[1]!;
      entryPort = m[2]!;
    }
    entry = entry.replace(/^\[|\]$/g, '').replace(/^\*?\./, '');
    if (!entry || (entryPort !== undefined && entryPort !== port)) continue;
    if (host === entry || host.endsWith(`.${entry}`)) return true;
  }
  return false;
}

/** localhost and loopback addresses: always reached directly (as Go's ProxyFromEnvironment does). */
function isLoopback(target: URL): boolean {
  const host = target.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return host === 'localhost' || host.endsWith('.localhost') || /^127\.\d+\.\d+\.\d+$/.test(host) || host === '::1';
}

/** The proxy to reach `target` through, from the environment, or undefined for a direct connection. */
export function proxyFor(target: URL, env: ProxyEnv = process.env): URL | undefined {
  if (isLoopback(target)) return undefined;
  const httpProxy = envValue(env, 'http_proxy');
  const value =
    target.protocol === 'https:' ? (envValue(env, 'https_proxy') ?? httpProxy) : target.protocol === 'http:' ? httpProxy : undefined;
  if (value === undefined || bypassesProxy(target, envValue(env, 'no_proxy'))) return undefined;
  let proxy: URL;
  try {
    proxy = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`);
  } catch {
    throw new FalcoProbesError('usage', `the proxy ${JSON.stringify(redact(value))} (HTTP_PROXY/HTTPS_PROXY) is not a URL`);
  }
  if (proxy.protocol !== 'http:')
    throw new FalcoProbesError('usage', `the proxy ${redact(proxy.toString())} is not an http:// URL`, {
      hint: 'falco-probes speaks plain HTTP to its proxy (https:// targets still go through a CONNECT tunnel, TLS end to end)',
    });
  return proxy;
}

function basicCredentials(url: URL): string | undefined {
  if (!url.username && !url.password) return undefined;
  return Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64');
}

function proxyAuthorization(proxy: URL): Record<string, string> {
  const c = basicCredentials(proxy);
  return c ? { 'proxy-authorization': `Basic ${c}` } : {};
}

/** A mirror URL's own user:password@ (node:http sends it itself on a direct request). */
function basicAuthorization(target: URL): Record<string, string> {
  const c = basicCredentials(target);
  return c ? { authorization: `Basic ${c}` } : {};
}

function withoutCredentials(url: URL): string {
  const u = new URL(url.toString());
  u.username = '';
  u.password = '';
  return u.toString();
}

/**
 * A TLS socket to `target` through a CONNECT tunnel of `proxy`, for https.get's
 * createConnection (its callback form): the request's own timeout starts once
 * the tunnel is up, so the CONNECT has the same idle limit of its own.
 */
function tunnel(
  proxy: URL,
  target: URL,
  opts: { idleTimeoutMs: number; signal?: AbortSignal },
): (options: unknown, done: (err: Error | null, socket?: Socket) => void) => undefined {
  return (_options, done) => {
    const authority = `${target.hostname}:${target.port || 443}`;
    const where = { location: { url: redact(target.toString()) } };
    const shownProxy = redact(proxy.toString());
    const connect = http.request({
      host: proxy.hostname.replace(/^\[|\]$/g, ''),
      port: proxy.port || 80,
      method: 'CONNECT',
      path: authority,
      headers: { host: authority, 'user-agent': 'falco-probes', ...proxyAuthorization(proxy) },
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    let settled = false;
    const finish = (err: Error | null, socket?: Socket) => {
      if (settled) return;
      settled = true;
      done(err, socket);
    };
    connect.setTimeout(opts.idleTimeoutMs, () =>
      connect.destroy(
        new FalcoProbesError('network', `the proxy ${shownProxy} did not open a tunnel within ${opts.idleTimeoutMs} ms`, where),
      ),
    );
    connect.on('error', (err) =>
      finish(
        err instanceof FalcoProbesError
          ? err
          : new FalcoProbesError('network', `the proxy ${shownProxy} failed: ${err.message}`, { ...where, cause: err }),
      ),
    );
    connect.on('connect', (res, socket) => {
      connect.setTimeout(0);
      if (res.statusCode !== 200) {
        socket.destroy();
        finish(new FalcoProbesError('network', `the proxy ${shownProxy} refused a tunnel to ${authority}: HTTP ${res.statusCode}`, where));
        return;
      }
      const secure = tls.connect({ socket, servername: target.hostname.replace(/^\[|\]$/g, '') });
      secure.once('secureConnect', () => finish(null, secure));
      secure.once('error', (err) =>
        finish(new FalcoProbesError('network', `TLS through the proxy ${shownProxy} failed: ${err.message}`, { ...where, cause: err })),
      );
    });
    connect.end();
    return undefined;
  };
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

function openOnce(
  url: string,
  opts: Required<Omit<HttpOptions, 'signal'>> & { signal?: AbortSignal },
): Promise<{ stream: Readable; size: number | undefined }> {
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
    let proxy: URL | undefined;
    try {
      proxy = proxyFor(parsed);
    } catch (err) {
      reject(err);
      return;
    }
    const headers = { 'user-agent': 'falco-probes', 'accept-encoding': 'identity' };
    const req = !proxy
      ? lib.get(parsed, { headers, signal: opts.signal })
      : parsed.protocol === 'http:'
        ? // The absolute URI of the target, to the proxy (RFC 9112 3.2.2).
          http.get({
            host: proxy.hostname.replace(/^\[|\]$/g, ''),
            port: proxy.port || 80,
            path: withoutCredentials(parsed),
            headers: { ...headers, host: parsed.host, ...basicAuthorization(parsed), ...proxyAuthorization(proxy) },
            signal: opts.signal,
          })
        : https.get(parsed, {
            headers,
            signal: opts.signal,
            createConnection: tunnel(proxy, parsed, opts) as unknown as https.RequestOptions['createConnection'],
          });
    req.setTimeout(opts.idleTimeoutMs, () => {
      req.destroy(new FalcoProbesError('network', `timed out after ${opts.idleTimeoutMs} ms without data`, { location: { url: shown } }));
    });
    req.on('error', (err) => {
      if (err instanceof FalcoProbesError) reject(err);
      else
        reject(
          new FalcoProbesError(
            'network',
            `request failed${proxy ? ` through the proxy ${redact(proxy.toString())}` : ''}: ${(err as Error).message}`,
            { location: { url: shown }, cause: err },
          ),
        );
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
        reject(
          new FalcoProbesError('input', `response of ${size} bytes is larger than the limit of ${opts.maxBytes}`, {
            location: { url: shown },
          }),
        );
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
      res.on('aborted', () =>
        guard.destroy(new FalcoProbesError('network', `connection reset after ${seen} bytes`, { location: { url: shown } })),
      );
      res.on('error', (err) =>
        guard.destroy(
          err instanceof FalcoProbesError
            ? err
            : new FalcoProbesError('network', `connection failed: ${err.message}`, { location: { url: shown } }),
        ),
      );
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
