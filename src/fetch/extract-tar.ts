import { createReadStream } from 'node:fs';
import { PassThrough, Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { FalcoProbesError } from '../util/errors.js';
import { createDecompressor, sniffFileCompression, type Compression } from '../util/decompress.js';
import type { ArchiveEntry, TreeWriter } from './extract-tree.js';

// Tar data, from a tarball (COS headers, driver sources) or from a .deb's
// data.tar member: decompress, parse with tar-stream (which handles ustar,
// GNU long names and pax headers), and hand each entry to the writer.
// tar-stream accepts a tar that stops cleanly between two entries, so the
// end-of-archive marker (two zero blocks) is checked here: without it the
// data was cut short.

const TYPE_NAMES: Record<string, string> = {
  'character-device': 'character device',
  'block-device': 'block device',
  fifo: 'fifo',
};

/** Extract a tarball whose compression is read from its first bytes. */
export async function extractTarball(file: string, writer: TreeWriter): Promise<void> {
  writer.setArchive(file);
  await extractTarStream(createReadStream(file), await sniffFileCompression(file), writer);
}

export async function extractTarStream(source: Readable, compression: Compression, writer: TreeWriter): Promise<void> {
  const extract = tar.extract();
  const endCheck = new EndOfArchiveCheck();
  const piping = pipeline(
    source,
    createDecompressor(compression),
    endCheck,
    new PassThrough({ highWaterMark: 8 * 1024 * 1024 }),
    extract,
  ).then(
    () => undefined,
    (err: unknown) => err,
  );
  let failure: unknown;
  try {
    for await (const entry of extract) {
      const h = entry.header;
      const mapped: ArchiveEntry = {
        name: h.name,
        type: entryType(h.type),
        mode: h.mode ?? 0o644,
        size: h.size ?? 0,
        ...(h.linkname ? { linkTarget: h.linkname } : {}),
        ...(h.mtime ? { mtime: h.mtime } : {}),
      };
      if (mapped.type === 'file') {
        await writer.add(mapped, entry as AsyncIterable<Buffer>);
      } else {
        entry.resume();
        await writer.add(mapped);
      }
    }
  } catch (err) {
    failure = err;
    source.destroy();
  }
  let pipeError = await piping;
  // Destroying the streams after our own failure makes the pipeline report a premature close: not news.
  if ((pipeError as NodeJS.ErrnoException | undefined)?.code === 'ERR_STREAM_PREMATURE_CLOSE' && failure !== undefined)
    pipeError = undefined;
  // Our own refusal explains more than the errors it causes upstream.
  if (failure instanceof FalcoProbesError || (failure instanceof Error && failure.name === 'AbortError')) throw failure;
  // A stream failure reaches the entry being read as "destroyed": the pipeline holds its cause.
  const err = pipeError ?? failure;
  if (err === undefined) return;
  throw writer.archiveError(describe(err, compression), err);
}

function entryType(type: string | null | undefined): ArchiveEntry['type'] {
  switch (type) {
    case 'file':
    case 'contiguous-file':
      return 'file';
    case 'directory':
      return 'directory';
    case 'symlink':
      return 'symlink';
    case 'link':
      return 'hardlink';
    default:
      return { unsupported: TYPE_NAMES[type ?? ''] ?? `tar type ${JSON.stringify(type ?? 'unknown')}` };
  }
}

function describe(err: unknown, compression: Compression): string {
  const msg = err instanceof Error ? err.message : String(err);
  if (err instanceof EndOfArchiveError) return msg;
  if (/Unexpected end of data/.test(msg)) return 'tar data ends in the middle of an entry (truncated archive)';
  if (/Invalid tar header|Invalid header/.test(msg)) return `corrupt tar data: ${msg}`;
  return compression === 'none' ? `cannot read tar data: ${msg}` : `corrupt or truncated ${compression} data: ${msg}`;
}

class EndOfArchiveError extends Error {}

/** Passes bytes through; fails at the end unless the last 1024 bytes are zero (tar's end-of-archive marker). */
class EndOfArchiveCheck extends Transform {
  private tail: Buffer = Buffer.alloc(0);
  private total = 0;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.total += chunk.length;
    this.tail = chunk.length >= 1024 ? chunk.subarray(chunk.length - 1024) : Buffer.concat([this.tail, chunk]).subarray(-1024);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.total < 1024 || this.tail.some((b) => b !== 0)) {
      cb(new EndOfArchiveError('tar data ends without its end-of-archive marker (truncated archive)'));
      return;
    }
    cb();
  }
}
