import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FalcoProbesError } from '../util/errors.js';
import { HttpStatusError, httpGetBuffer, httpGetStream, type HttpOptions } from '../util/http.js';
import { checkRelativePath } from '../util/names.js';
import { repositoryFileUrl } from './falco-url.js';
import { parseIndexText } from './index-file.js';
import { INDEX_FILE, type RepositoryIndex } from './types.js';

// Read a probe repository that is either a directory or an HTTP(S) site (a
// static host, a bucket, Pages): the index with a size cap and a timeout,
// small metadata files, and the sha256 of any file by streaming it. Nothing
// here writes; every path is checked before it reaches the file system or a
// URL.

export interface RepositoryReadOptions {
  /** Time allowed without a byte arriving, per request (HTTP only). */
  timeoutMs?: number;
  /** Attempts per HTTP request (connection errors, timeouts and 5xx are retried). */
  attempts?: number;
  /** Refuse an index.json larger than this. */
  maxIndexBytes?: number;
}

export const DEFAULT_MAX_INDEX_BYTES = 256 * 1024 * 1024;
/** SHA256SUMS and the signature are small; a larger answer is not ours. */
const MAX_METADATA_BYTES = 256 * 1024 * 1024;

export interface LoadedIndex {
  index: RepositoryIndex;
  /** The exact bytes read (the signature covers them). */
  bytes: Buffer;
}

export interface RepositorySource {
  readonly kind: 'dir' | 'http';
  /** The directory (absolute) or the base URL (no trailing slash). */
  readonly location: string;
  /** Where a repository-relative file is, for messages: a path or a URL. */
  where(relPath: string): string;
  /** index.json, validated; undefined when the repository has none (404, or no file). */
  readIndex(): Promise<LoadedIndex | undefined>;
  /** A small file (SHA256SUMS, the signature); undefined when absent. */
  readSmall(name: string): Promise<Buffer | undefined>;
  /** sha256 and size of a file by streaming it; undefined when absent. */
  hashFile(relPath: string, maxBytes?: number): Promise<{ sha256: string; size: number } | undefined>;
  /** Every regular file under the root (repository-relative, `/`-separated); directories only. */
  listFiles?(): Promise<string[]>;
}

export function isUrl(location: string): boolean {
  return /^https?:\/\//i.test(location);
}

/** Open `location` (a directory, a file: URL, or an http(s) URL), relative paths against `cwd`. */
export function openRepository(location: string, cwd: string, options: RepositoryReadOptions = {}): RepositorySource {
  if (isUrl(location)) {
    let url: URL;
    try {
      url = new URL(location);
    } catch {
      throw new FalcoProbesError('usage', `not a URL: ${JSON.stringify(location)}`);
    }
    if (url.search || url.hash)
      throw new FalcoProbesError('usage', `a repository URL takes no query or fragment: ${JSON.stringify(location)}`);
    return new HttpRepository(url.toString().replace(/\/+$/, ''), options);
  }
  if (/^file:/i.test(location)) return new DirectoryRepository(fileURLToPath(location), options);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location))
    throw new FalcoProbesError('usage', `unsupported repository URL scheme: ${JSON.stringify(location)}`, {
      hint: 'use a directory, or an http(s) URL',
    });
  return new DirectoryRepository(resolve(cwd, location), options);
}

class DirectoryRepository implements RepositorySource {
  readonly kind = 'dir' as const;
  readonly location: string;
  private readonly maxIndexBytes: number;

  constructor(root: string, options: RepositoryReadOptions) {
    this.location = root;
    this.maxIndexBytes = options.maxIndexBytes ?? DEFAULT_MAX_INDEX_BYTES;
  }

  where(relPath: string): string {
    return join(this.location, relPath);
  }

  private async requireRoot(): Promise<void> {
    const st = await stat(this.location).catch(() => undefined);
    if (!st?.isDirectory())
      throw new FalcoProbesError('usage', 'no repository here: not a directory', { location: { file: this.location } });
  }

  async readIndex(): Promise<LoadedIndex | undefined> {
    await this.requireRoot();
    const file = this.where(INDEX_FILE);
    const st = await stat(file).catch(() => undefined);
    if (!st) return undefined;
    if (st.size > this.maxIndexBytes)
      throw new FalcoProbesError('input', `the index is ${st.size} bytes, more than the limit of ${this.maxIndexBytes}`, {
        location: { file },
      });
    const bytes = await readFile(file);
    return { index: parseIndexText(bytes.toString('utf8'), file), bytes };
  }

  async readSmall(name: string): Promise<Buffer | undefined> {
    const file = this.where(checkRelativePath(name));
    const st = await stat(file).catch(() => undefined);
    if (!st) return undefined;
    if (st.size > MAX_METADATA_BYTES)
      throw new FalcoProbesError('input', `${st.size} bytes, more than the limit of ${MAX_METADATA_BYTES}`, { location: { file } });
    return readFile(file);
  }

  async hashFile(relPath: string): Promise<{ sha256: string; size: number } | undefined> {
    const file = this.where(checkRelativePath(relPath));
    const hash = createHash('sha256');
    let size = 0;
    try {
      for await (const chunk of createReadStream(file)) {
        hash.update(chunk as Buffer);
        size += (chunk as Buffer).length;
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'EISDIR' || code === 'ENOTDIR') return undefined;
      throw err;
    }
    return { sha256: hash.digest('hex'), size };
  }

  async listFiles(): Promise<string[]> {
    await this.requireRoot();
    const entries = await readdir(this.location, { recursive: true, withFileTypes: true });
    const files: string[] = [];
    for (const e of entries) {
      if (!e.isFile()) continue;
      // `parentPath` is Node 20.12+; `path` is the older name of the same field.
      const parent = (e as unknown as { parentPath?: string; path: string }).parentPath ?? (e as unknown as { path: string }).path;
      files.push(relative(this.location, join(parent, e.name)).split(sep).join('/'));
    }
    return files.sort();
  }
}

class HttpRepository implements RepositorySource {
  readonly kind = 'http' as const;
  readonly location: string;
  private readonly http: HttpOptions;
  private readonly maxIndexBytes: number;

  constructor(base: string, options: RepositoryReadOptions) {
    this.location = base;
    this.maxIndexBytes = options.maxIndexBytes ?? DEFAULT_MAX_INDEX_BYTES;
    this.http = {
      ...(options.timeoutMs !== undefined ? { idleTimeoutMs: options.timeoutMs } : {}),
      ...(options.attempts !== undefined ? { attempts: options.attempts } : {}),
    };
  }

  where(relPath: string): string {
    return repositoryFileUrl(this.location, relPath);
  }

  private async get(relPath: string, maxBytes: number): Promise<Buffer | undefined> {
    try {
      return await httpGetBuffer(this.where(relPath), { ...this.http, maxBytes });
    } catch (err) {
      if (err instanceof HttpStatusError && err.status === 404) return undefined;
      throw err;
    }
  }

  async readIndex(): Promise<LoadedIndex | undefined> {
    const url = this.where(INDEX_FILE);
    const bytes = await this.get(INDEX_FILE, this.maxIndexBytes);
    if (bytes === undefined) return undefined;
    return { index: parseIndexText(bytes.toString('utf8'), url), bytes };
  }

  readSmall(name: string): Promise<Buffer | undefined> {
    return this.get(checkRelativePath(name), MAX_METADATA_BYTES);
  }

  async hashFile(relPath: string, maxBytes?: number): Promise<{ sha256: string; size: number } | undefined> {
    const url = this.where(checkRelativePath(relPath));
    let opened;
    try {
      opened = await httpGetStream(url, { ...this.http, ...(maxBytes !== undefined ? { maxBytes } : {}) });
    } catch (err) {
      if (err instanceof HttpStatusError && err.status === 404) return undefined;
      throw err;
    }
    const hash = createHash('sha256');
    let size = 0;
    for await (const chunk of opened.stream) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    return { sha256: hash.digest('hex'), size };
  }
}

/** Read the index or fail: a repository without one is an error for readers (verify, pins, is-uploaded over HTTP). */
export async function requireIndex(source: RepositorySource): Promise<LoadedIndex> {
  const loaded = await source.readIndex();
  if (!loaded)
    throw new FalcoProbesError('input', 'not found: not a published probe repository', {
      location: source.kind === 'http' ? { url: source.where(INDEX_FILE) } : { file: source.where(INDEX_FILE) },
      hint:
        source.kind === 'http'
          ? 'check the URL: it should be the folder that holds index.json (the DRIVERS_REPO base)'
          : 'publish into it first: falco-probes publish --to DIR',
    });
  return loaded;
}

/** `--timeout SECONDS` (fractions allowed, for tests): milliseconds, or undefined for the default. */
export function parseTimeoutSeconds(value: unknown, flag = '--timeout'): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (typeof value !== 'string' || !/^\d+(\.\d+)?$/.test(value) || !(n > 0) || n > 3600)
    throw new FalcoProbesError('usage', `${flag} expects seconds (more than 0, at most 3600), got ${JSON.stringify(value)}`);
  return Math.round(n * 1000);
}
