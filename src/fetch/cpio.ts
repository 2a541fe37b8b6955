import { ByteReader } from './byte-reader.js';
import type { ArchiveEntry, TreeWriter } from './extract-tree.js';

// The SVR4 cpio formats RPM payloads use: `newc` (magic 070701) and `crc`
// (070702, the same with a byte-sum of each file's data, checked here).
// Layout of one entry: a 110-byte ASCII header (the magic, then 13 fields of
// 8 hex digits), the name with its NUL, padding to a multiple of 4, the data,
// padding to a multiple of 4. `TRAILER!!!` ends the archive.
//
// Hard links: all names of one inode carry the same `ino` and nlink > 1; the
// data comes with one of them (traditionally the last), the others have size
// 0. Names seen before the data wait; the file is written once, and every
// other name becomes a hard link to it.

const HEADER_SIZE = 110;
const MAX_NAME = 4096;
const MAX_SYMLINK = 4096;
const TRAILER = 'TRAILER!!!';

const S_IFMT = 0o170000;
const TYPES: Record<number, string> = {
  0o100000: 'file',
  0o040000: 'directory',
  0o120000: 'symlink',
  0o020000: 'character device',
  0o060000: 'block device',
  0o010000: 'fifo',
  0o140000: 'socket',
};

interface Header {
  ino: number;
  mode: number;
  nlink: number;
  mtime: number;
  size: number;
  devmajor: number;
  devminor: number;
  nameSize: number;
  check: number;
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

function parseHeader(raw: Buffer): Header {
  const text = raw.toString('latin1');
  const magic = text.slice(0, 6);
  if (magic === '070707') throw new Error('old portable (odc) cpio is not supported; expected newc (070701) or crc (070702)');
  if (magic === '07070X') throw new Error('stripped cpio (rpm large-file payloads) is not supported');
  if (magic !== '070701' && magic !== '070702') throw new Error(`bad cpio magic ${JSON.stringify(magic)} (corrupt payload?)`);
  const fields: number[] = [];
  for (let i = 0; i < 13; i++) {
    const f = text.slice(6 + i * 8, 14 + i * 8);
    if (!/^[0-9A-Fa-f]{8}$/.test(f)) throw new Error(`bad cpio header field ${JSON.stringify(f)} (corrupt payload?)`);
    fields.push(parseInt(f, 16));
  }
  // newc's fields, in order: ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check.
  const at = (i: number) => fields[i]!;
  return {
    ino: at(0),
    mode: at(1),
    nlink: at(4),
    mtime: at(5),
    size: at(6),
    devmajor: at(7),
    devminor: at(8),
    nameSize: at(11),
    check: at(12),
  };
}

interface PendingLinks {
  names: { name: string; mode: number; mtime: Date }[];
  /** The name the data was written under, once it was. */
  written?: string;
}

/** Parse a decompressed cpio stream and hand every entry to the writer. */
export async function extractCpio(source: AsyncIterable<Uint8Array>, writer: TreeWriter): Promise<void> {
  const reader = new ByteReader(source);
  const links = new Map<string, PendingLinks>();
  let crc = false;
  for (;;) {
    const raw = await reader.read(HEADER_SIZE, 'a cpio header');
    const h = parseHeader(raw);
    crc = raw.toString('latin1', 0, 6) === '070702';
    if (h.nameSize < 2 || h.nameSize > MAX_NAME) throw new Error(`cpio name size ${h.nameSize} is out of range (corrupt payload?)`);
    const nameBytes = await reader.read(h.nameSize, 'a cpio entry name');
    if (nameBytes[h.nameSize - 1] !== 0) throw new Error('cpio entry name is not NUL-terminated (corrupt payload?)');
    const name = nameBytes.toString('utf8', 0, h.nameSize - 1);
    await reader.skip(pad4(HEADER_SIZE + h.nameSize), `the padding after ${JSON.stringify(name)}`);
    if (name === TRAILER) break;

    const typeName = TYPES[h.mode & S_IFMT] ?? `unknown (mode ${(h.mode & S_IFMT).toString(8)})`;
    const mtime = new Date(h.mtime * 1000);
    const base = { name, mode: h.mode & 0o7777, mtime };
    const what = `the data of ${JSON.stringify(name)}`;

    if (typeName === 'file') {
      const data = checkedData(reader.chunks(h.size, what), crc ? h.check : undefined, name);
      if (h.nlink > 1) {
        const key = `${h.devmajor}:${h.devminor}:${h.ino}`;
        const group = links.get(key) ?? { names: [] };
        links.set(key, group);
        if (group.written !== undefined) {
          await reader.skip(h.size, what);
          await writer.add({ ...base, type: 'hardlink', size: 0, linkTarget: group.written });
        } else if (h.size === 0) {
          group.names.push(base);
        } else {
          await writer.add({ ...base, type: 'file', size: h.size }, data);
          group.written = name;
          for (const other of group.names) await writer.add({ ...other, type: 'hardlink', size: 0, linkTarget: name });
          group.names = [];
        }
      } else {
        await writer.add({ ...base, type: 'file', size: h.size }, data);
      }
    } else if (typeName === 'symlink') {
      if (h.size === 0 || h.size > MAX_SYMLINK)
        throw new Error(`symlink ${JSON.stringify(name)} has a target of ${h.size} bytes (corrupt payload?)`);
      const target = await reader.read(h.size, what);
      await writer.add({ ...base, type: 'symlink', size: 0, linkTarget: target.toString('utf8') });
    } else if (typeName === 'directory') {
      await reader.skip(h.size, what);
      await writer.add({ ...base, type: 'directory', size: 0 });
    } else {
      const entry: ArchiveEntry = { ...base, type: { unsupported: typeName }, size: 0 };
      await writer.add(entry);
    }
    await reader.skip(pad4(h.size), `the padding after ${JSON.stringify(name)}`);
  }
  // Hard-linked names whose inode carried no data: empty files.
  for (const group of links.values()) {
    const [first, ...rest] = group.names;
    if (!first) continue;
    await writer.add({ ...first, type: 'file', size: 0 }, (async function* () {})());
    for (const other of rest) await writer.add({ ...other, type: 'hardlink', size: 0, linkTarget: first.name });
  }
  await reader.drain();
}

/** Pass data through, checking the `crc` format's byte sum at the end. */
async function* checkedData(chunks: AsyncGenerator<Buffer>, expected: number | undefined, name: string): AsyncGenerator<Buffer> {
  let sum = 0;
  for await (const chunk of chunks) {
    if (expected !== undefined) for (let i = 0; i < chunk.length; i++) sum = (sum + chunk[i]!) >>> 0;
    yield chunk;
  }
  if (expected !== undefined && sum !== expected)
    throw new Error(`the data of ${JSON.stringify(name)} fails its cpio checksum (corrupt payload)`);
}
