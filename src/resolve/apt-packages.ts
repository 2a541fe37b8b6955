import { createHash } from 'node:crypto';
import { createGunzip } from 'node:zlib';
import { setTimeout as sleep } from 'node:timers/promises';
import { FalcoProbesError } from '../util/errors.js';
import { createDecompressor, type Compression } from '../util/decompress.js';
import { createXzDecompressor } from '../util/xz-process.js';
import { DEFAULT_HTTP, httpGetStream, HttpStatusError, joinUrl, type HttpOptions } from '../util/http.js';
import { checkPackageName, checkRelativePath, checkSha256, checkVersion } from '../util/names.js';
import type { Logger } from '../util/log.js';
import type { AptRelease, ReleaseEntry } from './apt-release.js';
import { StanzaParser, type RawStanza } from './apt-stanza.js';

// One `<component>/binary-<arch>/Packages{.xz,.gz,}` index: chosen among the
// files the Release lists, streamed through a hash, a decompressor and the
// stanza parser in one pass. Only stanzas the caller wants are kept; every
// stanza's name and version pass the strict checks all the same.

/** A package of an index, checked against the strict name rules. */
export interface AptPackage {
  name: string;
  version: string;
  /** `Depends` and `Pre-Depends` as written (parsed only for the packages that are followed). */
  depends: string;
  filename: string;
  size: number;
  sha256: string;
  /** The index it came from, and its 1-based line there, for error messages. */
  indexUrl: string;
  line: number;
}

export interface PackagesIndex {
  url: string;
  /** Stanzas read in all. */
  stanzas: number;
  packages: AptPackage[];
}

export interface FetchPackagesOptions {
  base: string;
  suite: string;
  component: string;
  /** Debian architecture (`amd64`, `arm64`). */
  arch: string;
  release: AptRelease;
  /** Which package names to keep (the rest are checked and dropped). */
  keep: (name: string) => boolean;
  http?: HttpOptions;
  logger?: Logger;
}

const PREFERENCE: { suffix: string; compression: Compression }[] = [
  { suffix: '.xz', compression: 'xz' },
  { suffix: '.gz', compression: 'gz' },
  { suffix: '', compression: 'none' },
];

export async function fetchPackagesIndex(opts: FetchPackagesOptions): Promise<PackagesIndex> {
  const dir = `${opts.component}/binary-${opts.arch}`;
  const listed = PREFERENCE.map((p) => ({ ...p, path: `${dir}/Packages${p.suffix}` })).filter((p) => opts.release.files.has(p.path));
  if (!listed.length)
    throw new FalcoProbesError('input', `the Release file lists no ${dir}/Packages index (.xz, .gz or plain)`, {
      location: { url: opts.release.url },
      hint: `check the components and architectures of the source definition against the Release file`,
    });
  const plain = opts.release.files.get(`${dir}/Packages`);
  const notFound: string[] = [];
  for (const choice of listed) {
    const url = joinUrl(opts.base, `dists/${opts.suite}/${choice.path}`);
    try {
      const index = await readIndexWithRetries(url, opts.release.files.get(choice.path)!, choice.compression, plain, opts);
      opts.logger?.debug(`${url}: ${index.stanzas} stanzas, ${index.packages.length} kept`);
      return index;
    } catch (err) {
      if (err instanceof HttpStatusError && (err.status === 404 || err.status === 410)) {
        notFound.push(url);
        continue;
      }
      throw err;
    }
  }
  throw new FalcoProbesError('network', `every ${dir}/Packages index the Release file lists is missing on the mirror (HTTP 404)`, {
    location: { url: joinUrl(opts.base, `dists/${opts.suite}/${dir}/`) },
    details: notFound.map((u) => `  ${u}`).join('\n'),
  });
}

/** A connection lost in the middle of the body restarts the index from its first byte, a bounded number of times. */
async function readIndexWithRetries(
  url: string,
  entry: ReleaseEntry,
  compression: Compression,
  plain: ReleaseEntry | undefined,
  opts: FetchPackagesOptions,
): Promise<PackagesIndex> {
  const attempts = opts.http?.attempts ?? DEFAULT_HTTP.attempts;
  const backoff = opts.http?.backoffMs ?? DEFAULT_HTTP.backoffMs;
  for (let attempt = 1; ; attempt++) {
    const state = { bodyStarted: false };
    try {
      return await readIndexOnce(url, entry, compression, plain, opts, state);
    } catch (err) {
      const retriable = state.bodyStarted && err instanceof FalcoProbesError && err.kind === 'network';
      if (!retriable || attempt >= attempts) throw err;
      opts.logger?.debug(`${url}: ${(err as FalcoProbesError).message}; reading the index again (attempt ${attempt + 1} of ${attempts})`);
      await sleep(backoff * 2 ** (attempt - 1));
    }
  }
}

async function readIndexOnce(
  url: string,
  entry: ReleaseEntry,
  compression: Compression,
  plain: ReleaseEntry | undefined,
  opts: FetchPackagesOptions,
  state: { bodyStarted: boolean },
): Promise<PackagesIndex> {
  const cap = opts.http?.maxBytes ?? DEFAULT_HTTP.maxBytes;
  if (entry.size > cap)
    throw new FalcoProbesError('input', `the Release file lists ${entry.size} bytes for this index, more than the limit of ${cap}`, {
      location: { url },
    });
  const { stream } = await httpGetStream(url, { ...opts.http, maxBytes: cap });
  state.bodyStarted = true;

  // The decompressed index is bounded too: by the plain index's size when the Release lists it.
  const plainCap = plain && compression !== 'none' ? Math.min(plain.size, cap) : cap;
  const packages: AptPackage[] = [];
  const parser = new StanzaParser((s) => {
    const p = checkStanza(s, url, opts.keep);
    if (p) packages.push(p);
  }, url);

  // The download is read to its end and hashed even when decompression or parsing fails
  // early: when the bytes are not the ones the Release lists, that is the better explanation.
  const hash = createHash('sha256');
  let received = 0;
  let decompressed = 0;
  let dataError: unknown;
  // zlib's default 16 KiB output chunks cost noticeably more CPU than 64 KiB ones on a 50 MB
  // index; larger chunks would be strings in V8's large-object space, collected late.
  // xz (what Debian's mirrors serve first): the system's `xz -dc` in a child process when there
  // is one, which decodes about three times as fast as lzma-native's liblzma and on another core
  // while this one hashes and parses (util/xz-process.ts).
  const decompressor =
    compression === 'gz'
      ? createGunzip({ chunkSize: 64 * 1024 })
      : compression === 'xz'
        ? createXzDecompressor()
        : createDecompressor(compression);
  const consumer = (async () => {
    // Leaving this loop by an error destroys the decompressor: a decompression bomb is not inflated further.
    for await (const chunk of decompressor as AsyncIterable<Buffer>) {
      decompressed += chunk.length;
      if (decompressed > plainCap)
        throw new FalcoProbesError(
          'input',
          `the index decompresses to more than ${plainCap} bytes${plain && plainCap === plain.size ? ' (the size the Release file lists for the plain index)' : ''}`,
          {
            location: { url },
          },
        );
      parser.push(chunk.toString('latin1'));
    }
    parser.end();
  })().catch((err: unknown) => {
    dataError ??=
      err instanceof FalcoProbesError
        ? err
        : new FalcoProbesError('input', `corrupt ${compression} data: ${(err as Error).message}`, { location: { url }, cause: err });
  });

  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      received += chunk.length;
      if (received > entry.size)
        throw new FalcoProbesError('checksum', `the mirror sent more than the ${entry.size} bytes the Release file lists for this index`, {
          location: { url },
        });
      hash.update(chunk);
      if (dataError !== undefined || decompressor.destroyed) continue;
      if (!decompressor.write(chunk)) await drained(decompressor);
    }
    if (!decompressor.destroyed) decompressor.end();
    await consumer;
  } finally {
    decompressor.destroy();
    stream.destroy();
  }

  const sha256 = hash.digest('hex');
  if (received !== entry.size)
    throw new FalcoProbesError(
      'checksum',
      `the index is ${received} bytes, the Release file lists ${entry.size} (truncated or wrong file)`,
      { location: { url } },
    );
  if (sha256 !== entry.sha256)
    throw new FalcoProbesError('checksum', 'checksum mismatch against the Release file', {
      location: { url },
      details: `  expected sha256 ${entry.sha256}\n  received sha256 ${sha256}`,
      hint: 'the mirror may be in the middle of an update, or serve a tampered index',
    });
  if (dataError !== undefined) throw dataError;
  if (plain && compression !== 'none' && decompressed !== plain.size)
    throw new FalcoProbesError(
      'checksum',
      `the index decompresses to ${decompressed} bytes, the Release file lists ${plain.size} for the plain index`,
      {
        location: { url },
      },
    );
  return { url, stanzas: parser.count, packages };
}

/** Wait for a writable to drain; resolves too when it fails or closes (its consumer reports why). */
function drained(w: NodeJS.WritableStream & { destroyed: boolean }): Promise<void> {
  if (w.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      w.removeListener('drain', done);
      w.removeListener('close', done);
      w.removeListener('error', done);
      resolve();
    };
    w.on('drain', done);
    w.on('close', done);
    w.on('error', done);
  });
}

/** Check a stanza's values against the strict rules; return it when the caller keeps it. */
function checkStanza(s: RawStanza, url: string, keep: (name: string) => boolean): AptPackage | undefined {
  const location = { url };
  const name = s.package!;
  try {
    checkPackageName(name, location);
  } catch (err) {
    if (err instanceof FalcoProbesError) throw new FalcoProbesError('input', `stanza at line ${s.line}: ${err.message}`, { location });
    throw err;
  }
  if (s.version === undefined || s.version === '') refuseStanza(s, url, 'no "Version" field');
  try {
    checkVersion(s.version!, location);
  } catch (err) {
    refuseStanza(s, url, err);
  }
  if (!keep(name)) return undefined;
  if (s.filename === undefined || s.filename === '') refuseStanza(s, url, 'no "Filename" field');
  if (s.size === undefined || s.size === '') refuseStanza(s, url, 'no "Size" field');
  if (s.sha256 === undefined || s.sha256 === '') refuseStanza(s, url, 'no "SHA256" field');
  try {
    checkRelativePath(s.filename!, location);
    checkSha256(s.sha256!, location);
  } catch (err) {
    refuseStanza(s, url, err);
  }
  if (!/^[0-9]{1,15}$/.test(s.size!)) refuseStanza(s, url, `refusing size ${JSON.stringify(s.size)}: expected a whole number`);
  const depends = [s.preDepends, s.depends].filter((d) => d !== undefined && d !== '').join(', ');
  return {
    // Copies, so that a kept value does not pin the whole decoded chunk it was sliced from.
    name: detach(name),
    version: detach(s.version!),
    depends: detach(depends),
    filename: detach(s.filename!),
    size: Number(s.size),
    sha256: detach(s.sha256!),
    indexUrl: url,
    line: s.line,
  };
}

/** Refuse a stanza, naming its package and line (a function, not a closure per stanza: this runs 60,000 times). */
function refuseStanza(s: RawStanza, url: string, why: unknown): never {
  if (why instanceof FalcoProbesError || typeof why === 'string') {
    const message = typeof why === 'string' ? why : why.message;
    throw new FalcoProbesError('input', `package ${JSON.stringify(s.package)} (stanza at line ${s.line}): ${message}`, {
      location: { url },
    });
  }
  throw why;
}

function detach(s: string): string {
  return ` ${s}`.slice(1);
}
