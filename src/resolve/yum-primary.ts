import { createHash } from 'node:crypto';
import { createGunzip } from 'node:zlib';
import { Transform, Writable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { SaxesParser, type SaxesTagPlain } from 'saxes';
import { FalcoProbesError } from '../util/errors.js';
import { compressionOf, createDecompressor } from '../util/decompress.js';
import { DEFAULT_HTTP, HttpStatusError, httpGetStream, type HttpOptions } from '../util/http.js';
import { checkPackageName } from '../util/names.js';
import type { PrimaryRef } from './yum-repomd.js';
import { PackageRecordFilter } from './yum-primary-filter.js';

// The primary metadata (`primary.xml`, usually compressed): one <package> per
// RPM. It can be hundreds of megabytes, so it is never held whole: the bytes
// stream through a sha256 (checked against repomd.xml at the end), the
// decompressor, the record filter (yum-primary-filter.ts: it lets through the
// document's frame and the records that may be wanted), a UTF-8 decoder and
// saxes, and only the packages whose names are wanted are kept. Every
// package's name is checked against the strict rules on the way, wanted or
// not. Nothing read here is trusted until the checksum has matched; the
// caller validates the kept values after that.

const GUNZIP_CHUNK_BYTES = 256 * 1024;
/** Without an open-size in repomd.xml, refuse to decompress more than this (a compression bomb). */
const DEFAULT_MAX_OPEN_BYTES = 4 * 1024 ** 3;

/** A `<package>` of primary.xml as written (not yet validated, except its name). */
export interface RpmPackageRecord {
  name: string;
  arch: string;
  epoch: string;
  version: string;
  release: string;
  checksumType: string;
  checksum: string;
  /** `<size package=...>`, as text. */
  size: string;
  href: string;
  /** `<location xml:base>`: a package stored outside the repository. */
  xmlBase?: string;
  /** Line of the package's `</package>` in the decompressed document. */
  line: number;
}

export interface PrimaryListing {
  url: string;
  /** Every package in the document. */
  packageCount: number;
  /** The wanted packages, in document order. */
  packages: RpmPackageRecord[];
}

/**
 * Fetch and stream-parse the primary metadata at `url`, keeping the packages
 * whose name is in `wanted`. A transfer that fails part way is retried (up to
 * `http.attempts` in all); bad data is not.
 */
export async function readPrimary(
  url: string,
  ref: PrimaryRef,
  wanted: ReadonlySet<string>,
  http: HttpOptions = {},
): Promise<PrimaryListing> {
  const attempts = Math.max(1, http.attempts ?? DEFAULT_HTTP.attempts);
  const backoffMs = http.backoffMs ?? DEFAULT_HTTP.backoffMs;
  let last: unknown;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      return await readPrimaryOnce(url, ref, wanted, { ...http, attempts: 1 });
    } catch (err) {
      last = err;
      // httpGetStream reports a refused Content-Length as a network failure "after N attempts"; it is the data's fault.
      if (err instanceof FalcoProbesError && err.cause instanceof FalcoProbesError && err.cause.kind === 'input') throw err.cause;
      if (!(err instanceof FalcoProbesError) || err.kind !== 'network') throw err;
      if (err instanceof HttpStatusError && err.status < 500) throw err;
      if (attempt < attempts) await sleep(backoffMs * 2 ** (attempt - 1), undefined, http.signal ? { signal: http.signal } : undefined);
    }
  }
  const cause = last as FalcoProbesError;
  throw new FalcoProbesError('network', `${cause.message} (after ${attempts} attempts)`, { location: { url }, cause });
}

async function readPrimaryOnce(url: string, ref: PrimaryRef, wanted: ReadonlySet<string>, http: HttpOptions): Promise<PrimaryListing> {
  const compression = compressionOf(ref.href);
  const { stream } = await httpGetStream(url, http);
  const hash = createHash('sha256');
  let served = 0;
  const hashTap = new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      hash.update(chunk);
      served += chunk.length;
      cb(null, chunk);
    },
  });
  // Node's gunzip hands out 16 KB pieces by default, each a round trip through
  // the thread pool; 256 KB pieces make it several times faster here.
  const decompressor = compression === 'gz' ? createGunzip({ chunkSize: GUNZIP_CHUNK_BYTES }) : createDecompressor(compression);
  let decompressError: unknown;
  decompressor.once('error', (err) => (decompressError ??= err));
  const parse = new PrimaryParser(url, wanted, ref.openSize ?? DEFAULT_MAX_OPEN_BYTES);
  const sink = new Writable({
    // Large writes keep the per-chunk overhead of saxes and the decoder small.
    highWaterMark: 1024 * 1024,
    write(chunk: Buffer, _enc, cb) {
      try {
        parse.write(chunk);
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
    final(cb) {
      try {
        parse.end();
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
  });
  try {
    await pipeline(stream, hashTap, decompressor, sink);
  } catch (err) {
    if (err instanceof FalcoProbesError) throw err;
    if (err === decompressError) {
      throw new FalcoProbesError('input', `corrupt or truncated ${compression} data: ${(err as Error).message}`, {
        location: { url },
        hint: 'the file may be cut short or damaged on the mirror; try again or use another mirror',
      });
    }
    throw err;
  }
  const sha256 = hash.digest('hex');
  if (sha256 !== ref.sha256) {
    throw new FalcoProbesError('checksum', `sha256 ${sha256} does not match ${ref.sha256} given by repomd.xml`, {
      location: { url },
      hint: 'the mirror may be half-way through an update; try again later or use another mirror',
    });
  }
  if (ref.size !== undefined && served !== ref.size)
    throw new FalcoProbesError('checksum', `${served} bytes served, but repomd.xml gives a size of ${ref.size}`, { location: { url } });
  if (ref.openSize !== undefined && parse.openBytes !== ref.openSize)
    throw new FalcoProbesError(
      'checksum',
      `decompresses to ${parse.openBytes} bytes, but repomd.xml gives an open-size of ${ref.openSize}`,
      { location: { url } },
    );
  return { url, packageCount: parse.packageCount, packages: parse.packages };
}

type TextField = 'name' | 'arch' | 'checksum';

/**
 * saxes, fed decompressed bytes through the record filter, collecting the
 * wanted `<package>` records and counting all of them.
 */
class PrimaryParser {
  readonly packages: RpmPackageRecord[] = [];
  openBytes = 0;

  private readonly parser = new SaxesParser<{ xmlns: false; position: false }>({ xmlns: false, position: false });
  private readonly decoder = new TextDecoder('utf-8', { fatal: true });
  private readonly filter: PackageRecordFilter;
  private parsedPackages = 0;
  private current: Partial<RpmPackageRecord> | undefined;
  private field: TextField | undefined;
  private text = '';
  private sawRoot = false;
  private declaredCount: number | undefined;
  // Line numbers for messages: saxes sees pieces of the document, each with
  // the line it starts on (its own position tracking would cost a third of its speed).
  private piece = '';
  private pieceStart = 0;
  private pieceLine = 1;
  private readonly captureText = (t: string) => {
    this.text += t;
  };

  constructor(
    private readonly url: string,
    private readonly wanted: ReadonlySet<string>,
    private readonly maxOpenBytes: number,
  ) {
    this.filter = new PackageRecordFilter(
      (name) => wanted.has(name),
      (bytes, line) => this.feed(bytes, line),
    );
    this.parser.on('error', (err) => {
      throw this.error(
        `malformed XML at line ${this.line()}: ${err.message}`,
        'the mirror may have answered with an error page or a damaged file',
      );
    });
    this.parser.on('opentag', (tag) => this.open(tag));
    this.parser.on('closetag', (tag) => this.close(tag));
  }

  get packageCount(): number {
    return this.parsedPackages + this.filter.skipped;
  }

  write(bytes: Buffer): void {
    this.openBytes += bytes.length;
    if (this.openBytes > this.maxOpenBytes)
      throw this.error(
        `decompresses to more than ${this.maxOpenBytes} bytes`,
        'repomd.xml gives the open-size; without one the limit is 4 GiB',
      );
    this.filter.write(bytes);
  }

  end(): void {
    this.filter.end();
    let tail: string;
    try {
      tail = this.decoder.decode();
    } catch {
      throw this.error('not UTF-8 text at its end');
    }
    this.pieceStart += this.piece.length;
    this.piece = tail;
    this.parser.write(tail);
    this.parser.close();
    if (!this.sawRoot) throw this.error('empty document: no <metadata> element');
    if (this.declaredCount !== undefined && this.declaredCount !== this.packageCount)
      throw this.error(
        `<metadata packages="${this.declaredCount}"> but ${this.packageCount} <package> elements`,
        'the file is incomplete or damaged',
      );
  }

  private feed(bytes: Buffer, line: number): void {
    let text: string;
    try {
      text = this.decoder.decode(bytes, { stream: true });
    } catch {
      throw this.error(`not UTF-8 text at line ${line} or the next`);
    }
    if (text.length === 0) return;
    this.pieceStart += this.piece.length;
    this.piece = text;
    this.pieceLine = line;
    this.parser.write(text);
  }

  /** The line saxes is at (while it runs, its position is the start of the piece plus its index in it). */
  private line(): number {
    const offset = Math.max(0, Math.min(this.piece.length, this.parser.position - this.pieceStart));
    return this.pieceLine + countNewlinesIn(this.piece, offset);
  }

  private error(message: string, hint?: string): FalcoProbesError {
    return new FalcoProbesError('input', message, { location: { url: this.url }, ...(hint ? { hint } : {}) });
  }

  private open(tag: SaxesTagPlain): void {
    const name = tag.name;
    if (!this.sawRoot) {
      this.sawRoot = true;
      if (name !== 'metadata')
        throw this.error(`not primary metadata: its root element is <${name}>`, 'the mirror may have answered with an error page');
      const count = tag.attributes['packages'];
      if (count !== undefined && /^[0-9]{1,9}$/.test(count)) this.declaredCount = Number(count);
      return;
    }
    const pkg = this.current;
    if (name === 'package') {
      if (pkg) throw this.error(`a <package> inside another <package> at line ${this.line()}`);
      this.current = {};
      return;
    }
    if (!pkg) return;
    switch (name) {
      case 'name':
      case 'arch':
        this.startText(name, pkg);
        break;
      case 'checksum':
        this.startText(name, pkg);
        pkg.checksumType = tag.attributes['type'] ?? '';
        break;
      case 'version':
        pkg.epoch = tag.attributes['epoch'] ?? '0';
        pkg.version = tag.attributes['ver'] ?? '';
        pkg.release = tag.attributes['rel'] ?? '';
        break;
      case 'size':
        pkg.size = tag.attributes['package'] ?? '';
        break;
      case 'location':
        pkg.href = tag.attributes['href'] ?? '';
        if (tag.attributes['xml:base'] !== undefined) pkg.xmlBase = tag.attributes['xml:base'];
        break;
    }
  }

  private startText(field: TextField, pkg: Partial<RpmPackageRecord>): void {
    if (pkg[field] !== undefined) throw this.error(`a <package> with two <${field}> elements at line ${this.line()}`);
    this.field = field;
    this.text = '';
    // Only the few text nodes we keep are collected: saxes skips building the
    // others when no text handler is set.
    this.parser.on('text', this.captureText);
  }

  private close(tag: SaxesTagPlain): void {
    const pkg = this.current;
    if (!pkg) return;
    if (this.field !== undefined) {
      pkg[this.field] = this.text;
      this.field = undefined;
      this.parser.off('text');
      return;
    }
    if (tag.name !== 'package') return;
    this.current = undefined;
    this.parsedPackages++;
    const name = pkg.name;
    if (name === undefined) throw this.error(`a <package> without <name>, ending at line ${this.line()}`);
    try {
      checkPackageName(name);
    } catch (err) {
      throw this.error(`package ending at line ${this.line()}: ${(err as Error).message}`);
    }
    if (!this.wanted.has(name)) return;
    this.packages.push({
      name,
      arch: pkg.arch ?? '',
      epoch: pkg.epoch ?? '',
      version: pkg.version ?? '',
      release: pkg.release ?? '',
      checksumType: pkg.checksumType ?? '',
      checksum: pkg.checksum ?? '',
      size: pkg.size ?? '',
      href: pkg.href ?? '',
      ...(pkg.xmlBase !== undefined ? { xmlBase: pkg.xmlBase } : {}),
      line: this.line(),
    });
  }
}

function countNewlinesIn(text: string, to: number): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < to; i = text.indexOf('\n', i + 1)) n++;
  return n;
}
