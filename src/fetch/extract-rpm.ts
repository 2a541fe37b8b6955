import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { PassThrough } from 'node:stream';
import { FalcoProbesError } from '../util/errors.js';
import { createDecompressor, sniffCompression, type Compression } from '../util/decompress.js';
import { extractCpio } from './cpio.js';
import type { TreeWriter } from './extract-tree.js';

// An .rpm file: a 96-byte lead (magic ed ab ee db), the signature header
// padded to a multiple of 8 bytes, the main header, then the payload: a
// compressed cpio archive. Each header is: magic 8e ad e8 01, 4 reserved
// bytes, the number of index entries and the size of the data store (both
// 32-bit big-endian), the index (16 bytes per entry: tag, type, offset,
// count) and the store. From the main header only PAYLOADFORMAT (1124) and
// PAYLOADCOMPRESSOR (1125) matter here; the payload's first bytes are sniffed
// too, and a known magic wins (a header can lie or be absent, bytes cannot).

const LEAD_SIZE = 96;
const LEAD_MAGIC = 0xedabeedb;
const HEADER_MAGIC = 0x8eade801;
const MAX_INDEX_ENTRIES = 1_000_000;
const MAX_STORE = 512 * 1024 * 1024;

const TAG_NAME = 1000;
const TAG_PAYLOADFORMAT = 1124;
const TAG_PAYLOADCOMPRESSOR = 1125;
const TYPE_STRING = 6;

const COMPRESSORS: Record<string, Compression | undefined> = {
  gzip: 'gz',
  xz: 'xz',
  lzma: 'xz', // liblzma's decoder reads the legacy .lzma format too
  zstd: 'zst',
  // 'bzip2' is not supported: no kernel package in use compresses with it
};

interface RpmHeader {
  end: number;
  strings: Map<number, string>;
}

export async function extractRpm(file: string, writer: TreeWriter): Promise<void> {
  writer.setArchive(file);
  const fh = await open(file, 'r');
  let payloadStart: number;
  let compression: Compression;
  try {
    const { size: fileSize } = await fh.stat();
    const lead = await readAt(fh, 0, LEAD_SIZE);
    if (lead.length < LEAD_SIZE || lead.readUInt32BE(0) !== LEAD_MAGIC) throw writer.archiveError('not an RPM package (no lead magic)');
    const signature = await readHeader(fh, LEAD_SIZE, fileSize, 'signature header', writer);
    const mainStart = signature.end + ((8 - (signature.end % 8)) % 8);
    const main = await readHeader(fh, mainStart, fileSize, 'main header', writer);
    payloadStart = main.end;
    const format = main.strings.get(TAG_PAYLOADFORMAT);
    if (format !== undefined && format !== 'cpio')
      throw writer.archiveError(`unsupported payload format ${JSON.stringify(format)} (expected cpio)`);
    const named = main.strings.get(TAG_PAYLOADCOMPRESSOR) ?? 'gzip';
    const head = await readAt(fh, payloadStart, 6);
    if (head.length === 0) throw writer.archiveError('the payload is missing (truncated archive)');
    const sniffed = sniffCompression(head);
    const fromTag = COMPRESSORS[named];
    if (sniffed !== 'none') compression = sniffed;
    else if (head.toString('latin1', 0, 4) === '0707') compression = 'none';
    else if (fromTag === undefined) throw writer.archiveError(`unsupported payload compressor ${JSON.stringify(named)}`);
    else compression = fromTag;
    const pkgName = main.strings.get(TAG_NAME);
    writer.setArchive(file, `payload${pkgName ? ` of ${pkgName}` : ''}, ${compression === 'none' ? 'uncompressed' : compression} cpio`);
  } finally {
    await fh.close();
  }

  const decompressed = new PassThrough();
  const piping = pipeline(createReadStream(file, { start: payloadStart }), createDecompressor(compression), decompressed).then(
    () => undefined,
    (err: unknown) => err,
  );
  let failure: unknown;
  try {
    await extractCpio(decompressed, writer);
  } catch (err) {
    failure = err;
    decompressed.destroy();
  }
  let pipeError = await piping;
  // Destroying the stream after our own failure makes the pipeline report a premature close: not news.
  if ((pipeError as NodeJS.ErrnoException | undefined)?.code === 'ERR_STREAM_PREMATURE_CLOSE' && failure !== undefined)
    pipeError = undefined;
  if (failure instanceof FalcoProbesError || (failure instanceof Error && failure.name === 'AbortError')) throw failure;
  if (pipeError !== undefined) {
    const msg = pipeError instanceof Error ? pipeError.message : String(pipeError);
    throw writer.archiveError(
      compression === 'none' ? `cannot read the payload: ${msg}` : `corrupt or truncated ${compression} data: ${msg}`,
      pipeError,
    );
  }
  if (failure !== undefined) throw writer.archiveError(failure instanceof Error ? failure.message : String(failure), failure);
}

async function readHeader(fh: FileHandle, start: number, fileSize: number, what: string, writer: TreeWriter): Promise<RpmHeader> {
  const intro = await readAt(fh, start, 16);
  if (intro.length < 16) throw writer.archiveError(`the ${what} at byte ${start} is cut short (truncated archive)`);
  if (intro.readUInt32BE(0) !== HEADER_MAGIC) throw writer.archiveError(`bad ${what} magic at byte ${start} (corrupt archive)`);
  const count = intro.readUInt32BE(8);
  const storeSize = intro.readUInt32BE(12);
  if (count > MAX_INDEX_ENTRIES || storeSize > MAX_STORE)
    throw writer.archiveError(`the ${what} claims ${count} entries and ${storeSize} bytes (corrupt archive)`);
  const end = start + 16 + count * 16 + storeSize;
  if (end > fileSize) throw writer.archiveError(`the ${what} needs ${end - start} bytes but the file ends first (truncated archive)`);
  const body = await readAt(fh, start + 16, count * 16 + storeSize);
  const store = body.subarray(count * 16);
  const strings = new Map<number, string>();
  for (let i = 0; i < count; i++) {
    const tag = body.readUInt32BE(i * 16);
    const type = body.readUInt32BE(i * 16 + 4);
    const offset = body.readUInt32BE(i * 16 + 8);
    if (type !== TYPE_STRING || (tag !== TAG_NAME && tag !== TAG_PAYLOADFORMAT && tag !== TAG_PAYLOADCOMPRESSOR)) continue;
    if (offset >= store.length) throw writer.archiveError(`tag ${tag} of the ${what} points outside its store (corrupt archive)`);
    const nul = store.indexOf(0, offset);
    if (nul < 0) throw writer.archiveError(`tag ${tag} of the ${what} is not NUL-terminated (corrupt archive)`);
    strings.set(tag, store.toString('utf8', offset, nul));
  }
  return { end, strings };
}

async function readAt(fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  const { bytesRead } = await fh.read(buf, 0, length, position);
  return buf.subarray(0, bytesRead);
}
