import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { Compression } from '../util/decompress.js';
import { extractTarStream } from './extract-tar.js';
import type { TreeWriter } from './extract-tree.js';

// A .deb is an `ar` archive: the global header `!<arch>\n`, then members, each
// a 60-byte ASCII header (name 16, mtime 12, uid 6, gid 6, mode 8, size 10,
// the magic "`\n") followed by its data, padded to an even offset. The
// members are `debian-binary` ("2.0\n"), `control.tar.*` (maintainer
// scripts and metadata: not needed and not extracted) and `data.tar[.xz|.zst|.gz]`,
// the files. The headers are read at their offsets (so a member list that
// runs past the end of the file is caught before any extraction), and the
// data member is streamed into the tar reader.

const AR_MAGIC = '!<arch>\n';
const MEMBER_HEADER = 60;

interface Member {
  name: string;
  start: number;
  size: number;
}

const DATA_COMPRESSION: Record<string, Compression> = {
  'data.tar': 'none',
  'data.tar.gz': 'gz',
  'data.tar.xz': 'xz',
  'data.tar.zst': 'zst',
};

export async function extractDeb(file: string, writer: TreeWriter): Promise<void> {
  writer.setArchive(file);
  const fh = await open(file, 'r');
  let members: Member[];
  let version: string;
  try {
    members = await readMembers(fh, writer);
    const first = members[0];
    if (first?.name !== 'debian-binary') throw writer.archiveError('not a Debian package: the first member is not debian-binary');
    version = (await readAt(fh, first.start, Math.min(first.size, 16))).toString('latin1');
  } finally {
    await fh.close();
  }
  if (!/^2\.\d+\n/.test(version))
    throw writer.archiveError(`unsupported Debian package format ${JSON.stringify(version.trim())} (expected 2.x)`);
  const data = members.find((m) => m.name.startsWith('data.tar'));
  if (!data) throw writer.archiveError(`no data.tar member (members: ${members.map((m) => m.name).join(', ')})`);
  const compression = DATA_COMPRESSION[data.name];
  if (compression === undefined) throw writer.archiveError(`unsupported member ${data.name} (data.tar, .gz, .xz and .zst are supported)`);
  writer.setArchive(file, data.name);
  const source = data.size === 0 ? Readable.from([]) : createReadStream(file, { start: data.start, end: data.start + data.size - 1 });
  await extractTarStream(source, compression, writer);
}

async function readMembers(fh: FileHandle, writer: TreeWriter): Promise<Member[]> {
  const { size: fileSize } = await fh.stat();
  if (fileSize < AR_MAGIC.length || (await readAt(fh, 0, AR_MAGIC.length)).toString('latin1') !== AR_MAGIC) {
    throw writer.archiveError('not a Debian package (no ar header)');
  }
  const members: Member[] = [];
  let offset = AR_MAGIC.length;
  while (offset < fileSize) {
    if (offset + MEMBER_HEADER > fileSize) throw writer.archiveError(`ar member header at byte ${offset} is cut short (truncated archive)`);
    const h = (await readAt(fh, offset, MEMBER_HEADER)).toString('latin1');
    if (h.slice(58, 60) !== '`\n') throw writer.archiveError(`bad ar member header at byte ${offset} (corrupt archive)`);
    // GNU ar ends names with `/`; BSD long names (`#1/...`) do not occur in .deb files.
    const name = h.slice(0, 16).trimEnd().replace(/\/$/, '');
    const sizeText = h.slice(48, 58).trimEnd();
    if (!/^\d{1,10}$/.test(sizeText))
      throw writer.archiveError(`bad size ${JSON.stringify(sizeText)} in ar member ${JSON.stringify(name)}`);
    const size = Number(sizeText);
    const start = offset + MEMBER_HEADER;
    if (start + size > fileSize) {
      throw writer.archiveError(
        `ar member ${JSON.stringify(name)} needs ${size} bytes but only ${fileSize - start} remain (truncated archive)`,
      );
    }
    members.push({ name, start, size });
    offset = start + size + (size % 2);
  }
  return members;
}

async function readAt(fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  const { bytesRead } = await fh.read(buf, 0, length, position);
  return buf.subarray(0, bytesRead);
}
