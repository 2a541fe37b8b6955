import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { FalcoProbesError } from '../util/errors.js';
import { compressionOf, createDecompressor } from '../util/decompress.js';
import { httpGetStream, type HttpOptions } from '../util/http.js';

// What a COS build's `kernel-headers.tgz` says about its kernel. The tarball
// holds `usr/src/linux-headers-<release>/` (the release can end in `+`); the
// kernel's own generated headers give `uname -r` (`include/generated/
// utsrelease.h`), `uname -v` (`include/generated/compile.h`, or
// `utsversion.h` since Linux 6.0) and `uname -m` (compile.h's UTS_MACHINE).
// The tarball is streamed once: hashed (sha256 for the lockfile, MD5 against
// the bucket listing), decompressed with a cap and read entry by entry with
// tar-stream; only those small headers are kept, every other entry is
// drained. Nothing is written to disk, so no archive path is ever a file path.

/** A generated header is a few hundred bytes. */
const HEADER_MAX_BYTES = 64 * 1024;
/** Decompressed, a COS headers tarball is about 100 MB; more than this is not one. */
const MAX_UNPACKED_BYTES = 8 * 1024 ** 3;

export interface CosHeadersInfo {
  release: string;
  /** `uname -v` as the kernel reports it (`#1 SMP Sat Nov 5 10:17:46 UTC 2022`). */
  version: string;
  /** UTS_MACHINE when compile.h has it (`x86_64`). */
  machine?: string;
  sha256: string;
  md5: string;
  size: number;
}

export interface ExpectedObject {
  size: number;
  md5?: string;
}

const HEADERS_DIR_RE = /^(?:\.\/)?usr\/src\/linux-headers-([^/]+)(?:\/|$)/;
const GENERATED_RE = /^(?:\.\/)?usr\/src\/linux-headers-[^/]+\/include\/generated\/(utsrelease|compile|utsversion)\.h$/;

/** Download and read one headers tarball, checked against the listing's size and MD5. */
export async function readCosHeaders(url: string, expected: ExpectedObject, http: HttpOptions, maxBytes: number): Promise<CosHeadersInfo> {
  if (expected.size > maxBytes)
    throw new FalcoProbesError(
      'input',
      `the listing gives ${expected.size} bytes for this headers tarball, more than the limit of ${maxBytes}`,
      {
        location: { url },
        hint: 'raise cos.maxHeadersBytes in the definition if COS headers really grew that large',
      },
    );
  const { stream } = await httpGetStream(url, { ...http, maxBytes: Math.min(maxBytes, expected.size) });
  const sha256 = createHash('sha256');
  const md5 = createHash('md5');
  let size = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      sha256.update(chunk);
      md5.update(chunk);
      size += chunk.length;
      cb(null, chunk);
    },
  });
  let unpacked = 0;
  const cap = new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      unpacked += chunk.length;
      if (unpacked > MAX_UNPACKED_BYTES)
        cb(new FalcoProbesError('input', `the tarball unpacks to more than ${MAX_UNPACKED_BYTES} bytes`, { location: { url } }));
      else cb(null, chunk);
    },
  });
  const found = { dirs: new Set<string>(), files: new Map<string, string>() };
  const extract = tar.extract();
  const [piped, read] = await Promise.allSettled([
    pipeline(stream, tap, createDecompressor(compressionOf(url)), cap, extract),
    readEntries(extract, found, url),
  ]);
  // Our own refusal explains more than the premature close it causes in the pipeline.
  const reasons = [read, piped].flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  if (reasons.length) {
    stream.destroy();
    const ours = reasons.find((r) => r instanceof FalcoProbesError);
    if (ours) throw ours;
    const err = reasons.find((r) => (r as NodeJS.ErrnoException).code !== 'ERR_STREAM_PREMATURE_CLOSE') ?? reasons[0];
    throw new FalcoProbesError('input', `cannot read the headers tarball: ${(err as Error).message}`, {
      location: { url },
      hint: 'the file may be cut short or damaged on the mirror; try again or use another mirror',
      cause: err,
    });
  }
  const digest = { sha256: sha256.digest('hex'), md5: md5.digest('hex') };
  if (size !== expected.size)
    throw new FalcoProbesError('checksum', `the headers tarball is ${size} bytes, the bucket listing gives ${expected.size}`, {
      location: { url },
    });
  if (expected.md5 !== undefined && digest.md5 !== expected.md5)
    throw new FalcoProbesError('checksum', 'MD5 mismatch against the bucket listing', {
      location: { url },
      details: `  expected md5 ${expected.md5}\n  received md5 ${digest.md5}`,
      hint: 'the object may have been replaced while listing, or the mirror serves other bytes',
    });
  return { ...describe(found, url), ...digest, size };
}

async function readEntries(extract: tar.Extract, found: { dirs: Set<string>; files: Map<string, string> }, url: string): Promise<void> {
  for await (const entry of extract) {
    const name = entry.header.name;
    const dir = HEADERS_DIR_RE.exec(name)?.[1];
    if (dir !== undefined) found.dirs.add(dir);
    const generated = GENERATED_RE.exec(name)?.[1];
    if (generated === undefined || entry.header.type !== 'file') {
      entry.resume();
      continue;
    }
    if ((entry.header.size ?? 0) > HEADER_MAX_BYTES)
      throw new FalcoProbesError('input', `${name} is ${entry.header.size} bytes; a generated kernel header is far smaller`, {
        location: { url },
      });
    const chunks: Buffer[] = [];
    for await (const chunk of entry as AsyncIterable<Buffer>) chunks.push(chunk);
    found.files.set(generated, Buffer.concat(chunks).toString('latin1'));
  }
}

/** `#define NAME "value"` from a generated header. */
function defineOf(text: string | undefined, name: string): string | undefined {
  if (text === undefined) return undefined;
  const m = new RegExp(`^#define\\s+${name}\\s+"([^"\\n]*)"\\s*$`, 'm').exec(text);
  return m?.[1];
}

function describe(found: { dirs: Set<string>; files: Map<string, string> }, url: string): Omit<CosHeadersInfo, 'sha256' | 'md5' | 'size'> {
  const fail = (message: string): never => {
    throw new FalcoProbesError('input', message, { location: { url } });
  };
  const dirs = [...found.dirs];
  if (dirs.length === 0) fail('the tarball holds no usr/src/linux-headers-<release>/ folder');
  if (dirs.length > 1) fail(`the tarball holds ${dirs.length} headers folders (${dirs.slice(0, 4).join(', ')}); expected one`);
  const folder = dirs[0]!;
  const utsRelease = defineOf(found.files.get('utsrelease'), 'UTS_RELEASE');
  if (utsRelease !== undefined && utsRelease !== folder)
    fail(`include/generated/utsrelease.h says UTS_RELEASE "${utsRelease}" but the headers folder is linux-headers-${folder}`);
  // Since Linux 6.0 UTS_VERSION is in utsversion.h; before, in compile.h.
  const version = defineOf(found.files.get('utsversion'), 'UTS_VERSION') ?? defineOf(found.files.get('compile'), 'UTS_VERSION');
  if (version === undefined) return fail('neither include/generated/utsversion.h nor compile.h defines UTS_VERSION (uname -v)');
  const machine = defineOf(found.files.get('compile'), 'UTS_MACHINE');
  return { release: utsRelease ?? folder, version, ...(machine !== undefined ? { machine } : {}) };
}
