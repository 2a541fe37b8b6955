import { gzipSync } from 'node:zlib';
import { FalcoProbesError } from '../util/errors.js';

// A cpio archive in the `newc` format, the one the kernel unpacks as an
// initramfs: per entry a 110-byte ASCII header (`070701` and 13 eight-digit
// hex fields), the NUL-terminated name and the data, each padded to 4 bytes;
// a `TRAILER!!!` entry ends it. Written here rather than with GNU cpio so the
// bytes depend only on the entries: sorted names, inode numbers counted from
// 1, owner root, modification time 0; and so a device node (/dev/console)
// can be listed without creating one on the host.

export type CpioEntry =
  | { name: string; type: 'dir'; mode?: number }
  | { name: string; type: 'file'; mode?: number; data: Uint8Array }
  | { name: string; type: 'symlink'; target: string }
  | { name: string; type: 'char'; mode?: number; major: number; minor: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const TRAILER = 'TRAILER!!!';

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(length: number): Buffer {
  return Buffer.alloc((4 - (length % 4)) % 4);
}

function header(fields: {
  ino: number;
  mode: number;
  nlink: number;
  size: number;
  rdevMajor: number;
  rdevMinor: number;
  nameSize: number;
}): string {
  return (
    '070701' +
    hex8(fields.ino) +
    hex8(fields.mode) +
    hex8(0) + // uid
    hex8(0) + // gid
    hex8(fields.nlink) +
    hex8(0) + // mtime
    hex8(fields.size) +
    hex8(0) + // devmajor
    hex8(0) + // devminor
    hex8(fields.rdevMajor) +
    hex8(fields.rdevMinor) +
    hex8(fields.nameSize) +
    hex8(0) // check
  );
}

function checkName(name: string): void {
  if (name === '' || name.startsWith('/') || name.split('/').some((s) => s === '' || s === '.' || s === '..') || name.includes('\0'))
    throw new FalcoProbesError('internal', `cpio: bad entry name ${JSON.stringify(name)}`);
}

/** The uncompressed archive. Entries are sorted by name (a folder sorts before what it holds); names must be unique. */
export function cpioNewc(entries: readonly CpioEntry[]): Buffer {
  const sorted = [...entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const parts: Buffer[] = [];
  let ino = 0;
  let previous: string | undefined;
  const push = (name: string, mode: number, nlink: number, data: Uint8Array, rdev: [number, number] = [0, 0]) => {
    const nameBytes = Buffer.from(`${name}\0`, 'utf8');
    const head = Buffer.from(
      header({ ino: ++ino, mode, nlink, size: data.length, rdevMajor: rdev[0], rdevMinor: rdev[1], nameSize: nameBytes.length }),
      'latin1',
    );
    parts.push(
      head,
      nameBytes,
      pad4(head.length + nameBytes.length),
      Buffer.from(data.buffer, data.byteOffset, data.byteLength),
      pad4(data.length),
    );
  };
  for (const e of sorted) {
    checkName(e.name);
    if (e.name === previous) throw new FalcoProbesError('internal', `cpio: ${e.name} is listed twice`);
    previous = e.name;
    switch (e.type) {
      case 'dir':
        push(e.name, S_IFDIR | (e.mode ?? 0o755), 2, Buffer.alloc(0));
        break;
      case 'file':
        push(e.name, S_IFREG | (e.mode ?? 0o644), 1, e.data);
        break;
      case 'symlink':
        push(e.name, S_IFLNK | 0o777, 1, Buffer.from(e.target, 'utf8'));
        break;
      case 'char':
        push(e.name, S_IFCHR | (e.mode ?? 0o600), 1, Buffer.alloc(0), [e.major, e.minor]);
        break;
    }
  }
  ino = -1; // the trailer's inode is 0, as GNU cpio writes it
  push(TRAILER, 0, 1, Buffer.alloc(0));
  return Buffer.concat(parts);
}

/** The archive gzip-compressed, as the kernel takes an initramfs (gzip's header carries no time or name here). */
export function cpioNewcGzip(entries: readonly CpioEntry[]): Buffer {
  return gzipSync(cpioNewc(entries), { level: 6 });
}
