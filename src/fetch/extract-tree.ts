import { chmodSync, closeSync, fchmodSync, futimesSync, linkSync, mkdirSync, openSync, symlinkSync, unlinkSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { FalcoProbesError, isNoSpace } from '../util/errors.js';

// Every archive format ends here: one entry at a time, checked against the
// rules below before anything touches the disk. The writer works in a private
// directory (extract.ts renames it into place when every archive is done) and
// remembers what it created, so it can answer "is this parent a symlink?"
// without asking the file system.
//
// The rules:
// - Paths: `./` and empty segments are dropped; absolute paths, `..`
//   segments and NUL are refused; `strip` drops leading components.
// - Types: regular files, directories, symlinks and hard links only; device
//   nodes, fifos, sockets and unknown types are refused.
// - Nothing is written through a symlink: an entry whose parent is a symlink
//   (`link/file`) is refused, whatever the link points at. Parents are real
//   directories created here, so a link's own folder depth is known.
// - Symlink targets: relative targets may start with `..` segments, at most
//   as many as the link's folder is deep, and may not use `..` after a name
//   (`a/../..` could leave the tree through a symlink `a`). With every link
//   held to this rule, following any chain of links stays inside the tree.
//   Absolute targets are rewritten to the equivalent relative target inside
//   the tree, as if the tree were `/` (a chroot's view): Debian's headers
//   ship `lib/modules/<r>/build -> /usr/src/linux-headers-<r>` and RPMs ship
//   similar links, which then point at the extracted headers and never at the
//   host's. Relative targets are kept byte for byte.
// - Hard links: the target must be a regular file this writer already
//   extracted (so it is inside the tree and not a symlink).
// - Modes: the permission bits of files are kept (exec included); setuid,
//   setgid and sticky are dropped; folders are always writable and searchable
//   by their owner (so entries can be added and the tree removed); ownership
//   is never changed.
// - Limits: total file bytes and the number of entries are capped, against
//   archive bombs.

export type EntryType = 'file' | 'directory' | 'symlink' | 'hardlink';

export interface ArchiveEntry {
  /** The path as the archive spells it. */
  name: string;
  /** A supported type, or a description of an unsupported one (`character device`) to refuse. */
  type: EntryType | { unsupported: string };
  mode: number;
  /** File bytes (regular files only). */
  size: number;
  /** Symlink target, or the archive path of a hard link's target. */
  linkTarget?: string;
  mtime?: Date;
}

export interface TreeWriterOptions {
  strip: number;
  maxBytes: number;
  maxEntries: number;
  signal?: AbortSignal;
}

type Kind = 'file' | 'directory' | 'symlink';

const MAX_PATH = 4095;
/**
 * Files up to this size are gathered in memory and written with synchronous
 * system calls, as are folders and links. Kernel header trees are 10,000 to
 * 20,000 small files: a thread-pool round trip per open, write, chmod and
 * close cost about twice the calls themselves (measured: 5,000 files of 5 KB,
 * 1.9 s with fs/promises against 1.0 s). Each call is short and the event
 * loop still turns between entries; larger files stream asynchronously.
 */
const SMALL_FILE = 1024 * 1024;
const MAX_SEGMENT = 255;

export class TreeWriter {
  readonly root: string;
  private readonly opts: TreeWriterOptions;
  private readonly kinds = new Map<string, Kind>();
  /** The archive (and member) being read, for messages. */
  private archivePath = '';
  private member: string | undefined;
  /** The entry being written, or the last one written, for messages about the data around it. */
  private lastEntry: string | undefined;
  private inEntry = false;
  entries = 0;
  files = 0;
  bytes = 0;

  constructor(root: string, opts: TreeWriterOptions) {
    this.root = root;
    this.opts = opts;
  }

  setArchive(path: string, member?: string): void {
    this.archivePath = path;
    this.member = member;
    this.lastEntry = undefined;
    this.inEntry = false;
  }

  /** The member being read, as a message prefix (the archive itself is the error's location). */
  private where(): string {
    return this.member ? `${this.member}: ` : '';
  }

  /** An error about the archive as a whole (corrupt data, truncation), naming it, the member and where it happened. */
  archiveError(message: string, cause?: unknown): FalcoProbesError {
    const near = this.lastEntry === undefined ? '' : ` (${this.inEntry ? 'in' : 'after'} entry ${JSON.stringify(this.lastEntry)})`;
    return new FalcoProbesError('input', `${this.where()}${message}${near}`, {
      location: { file: this.archivePath },
      cause,
      hint: 'the archive is corrupt, truncated or hostile; nothing of it was kept',
    });
  }

  /** An error about one entry, naming the archive, the member and the entry. */
  refuse(entryName: string, reason: string): FalcoProbesError {
    return new FalcoProbesError('input', `${this.where()}refusing entry ${JSON.stringify(entryName)}: ${reason}`, {
      location: { file: this.archivePath },
      hint: 'the archive is corrupt or hostile; nothing of it was kept',
    });
  }

  /**
   * Check and write one entry. `data` must yield exactly `entry.size` bytes
   * for a regular file; it is not read for other types (the caller drains it).
   */
  async add(entry: ArchiveEntry, data?: AsyncIterable<Uint8Array>): Promise<void> {
    this.opts.signal?.throwIfAborted();
    this.lastEntry = entry.name;
    this.inEntry = true;
    try {
      await this.addChecked(entry, data);
    } catch (err) {
      // File system failures (no space, permissions) name the entry; data errors pass through for the caller to describe.
      if (err instanceof Error && 'syscall' in err && !(err instanceof FalcoProbesError)) {
        // A full disk is the machine's, not a bug: named by the file it failed on.
        const noSpace = isNoSpace(err);
        throw new FalcoProbesError(
          noSpace ? 'io' : 'internal',
          `${this.where()}cannot write entry ${JSON.stringify(entry.name)}: ${err.message}`,
          {
            location: { file: this.archivePath },
            cause: err,
            ...(noSpace
              ? {
                  details: `  writing ${this.root}/${entry.name.replace(/^(\.\/|\/)+/, '')}`,
                  hint: 'free space on that file system (the package cache, $FALCO_PROBES_CACHE, can be removed at will), then run again',
                }
              : {}),
          },
        );
      }
      throw err;
    }
    this.inEntry = false;
  }

  private async addChecked(entry: ArchiveEntry, data?: AsyncIterable<Uint8Array>): Promise<void> {
    if (++this.entries > this.opts.maxEntries) {
      throw this.refuse(entry.name, `more than ${this.opts.maxEntries} entries (raise the entry limit if this is a genuine archive)`);
    }
    if (typeof entry.type !== 'string') throw this.refuse(entry.name, `${entry.type.unsupported} entries are not extracted`);
    const segments = this.entrySegments(entry.name, entry.name);
    if (segments === undefined) {
      // The archive root (`./`), or a path shorter than `strip`: nothing to write.
      if (entry.type === 'file' && data) for await (const _ of data) void _;
      return;
    }
    const rel = segments.join('/');
    this.ensureParents(entry.name, segments);
    const full = join(this.root, rel);
    const existing = this.kinds.get(rel);
    switch (entry.type) {
      case 'directory': {
        if (existing !== undefined && existing !== 'directory')
          throw this.refuse(entry.name, `a ${existing} of this name was already extracted`);
        if (existing === undefined) mkdirSync(full);
        chmodSync(full, dirMode(entry.mode));
        this.kinds.set(rel, 'directory');
        return;
      }
      case 'file': {
        this.replaceable(entry.name, rel, full, existing);
        await this.writeFile(entry, full, data);
        this.kinds.set(rel, 'file');
        this.files++;
        return;
      }
      case 'symlink': {
        const target = this.symlinkTarget(entry, segments);
        this.replaceable(entry.name, rel, full, existing);
        symlinkSync(target, full);
        this.kinds.set(rel, 'symlink');
        return;
      }
      case 'hardlink': {
        if (entry.linkTarget === undefined || entry.linkTarget === '') throw this.refuse(entry.name, 'hard link without a target');
        const targetSegments = this.entrySegments(entry.name, entry.linkTarget);
        const targetRel = targetSegments?.join('/');
        if (targetRel === undefined || this.kinds.get(targetRel) !== 'file') {
          throw this.refuse(
            entry.name,
            `hard link to ${JSON.stringify(entry.linkTarget)}, which is not a regular file extracted before it`,
          );
        }
        if (targetRel === rel) return;
        this.replaceable(entry.name, rel, full, existing);
        linkSync(join(this.root, targetRel), full);
        this.kinds.set(rel, 'file');
        return;
      }
    }
  }

  /** Normalized segments of an archive path, or undefined for the root and for paths `strip` removes entirely. */
  private entrySegments(entryName: string, path: string): string[] | undefined {
    if (path.includes('\0')) throw this.refuse(entryName, 'NUL in a path');
    if (path.startsWith('/')) throw this.refuse(entryName, `absolute path ${JSON.stringify(path)}`);
    if (path.length > MAX_PATH) throw this.refuse(entryName, `path longer than ${MAX_PATH} bytes`);
    const segments = path.split('/').filter((s) => s !== '' && s !== '.');
    if (segments.includes('..')) throw this.refuse(entryName, `".." in ${JSON.stringify(path)}`);
    if (segments.some((s) => Buffer.byteLength(s) > MAX_SEGMENT))
      throw this.refuse(entryName, `a path segment longer than ${MAX_SEGMENT} bytes`);
    const kept = segments.slice(this.opts.strip);
    return kept.length === 0 ? undefined : kept;
  }

  /** Create missing parent folders; refuse a parent that is a symlink or a file. */
  private ensureParents(entryName: string, segments: string[]): void {
    let rel = '';
    for (let i = 0; i < segments.length - 1; i++) {
      rel = rel === '' ? segments[i]! : `${rel}/${segments[i]!}`;
      const kind = this.kinds.get(rel);
      if (kind === 'directory') continue;
      if (kind === 'symlink')
        throw this.refuse(entryName, `its parent ${JSON.stringify(rel)} is a symlink (writing through links is not allowed)`);
      if (kind === 'file') throw this.refuse(entryName, `its parent ${JSON.stringify(rel)} is a file`);
      mkdirSync(join(this.root, rel), { mode: 0o755 });
      this.kinds.set(rel, 'directory');
    }
  }

  /** A file or link may replace an earlier file or link of the same name (archives append updates), never a folder. */
  private replaceable(entryName: string, rel: string, full: string, existing: Kind | undefined): void {
    if (existing === undefined) return;
    if (existing === 'directory') throw this.refuse(entryName, 'a directory of this name was already extracted');
    // Unlink first: writing into an existing name could write through a hard link or a symlink.
    unlinkSync(full);
    this.kinds.delete(rel);
  }

  private symlinkTarget(entry: ArchiveEntry, segments: string[]): string {
    const target = entry.linkTarget ?? '';
    if (target === '') throw this.refuse(entry.name, 'symlink without a target');
    if (target.includes('\0')) throw this.refuse(entry.name, 'NUL in a symlink target');
    if (target.length > MAX_PATH) throw this.refuse(entry.name, `symlink target longer than ${MAX_PATH} bytes`);
    const depth = segments.length - 1;
    const parts = target.split('/').filter((s) => s !== '' && s !== '.');
    if (target.startsWith('/')) {
      if (parts.includes('..')) throw this.refuse(entry.name, `symlink target ${JSON.stringify(target)} contains ".."`);
      // The shortest relative path from the link's folder, which is `..`s then names, so it obeys the rule below.
      const rewritten = posix.relative(`/${segments.slice(0, depth).join('/')}`, `/${parts.join('/')}`);
      return rewritten === '' ? '.' : rewritten;
    }
    let ups = 0;
    while (ups < parts.length && parts[ups] === '..') ups++;
    if (parts.slice(ups).includes('..')) {
      throw this.refuse(
        entry.name,
        `symlink target ${JSON.stringify(target)} uses ".." after a name (it could leave the tree through another link)`,
      );
    }
    if (ups > depth) throw this.refuse(entry.name, `symlink target ${JSON.stringify(target)} points outside the tree`);
    return target;
  }

  private async writeFile(entry: ArchiveEntry, full: string, data: AsyncIterable<Uint8Array> | undefined): Promise<void> {
    if (this.bytes + entry.size > this.opts.maxBytes) {
      throw this.refuse(
        entry.name,
        `the files would exceed ${this.opts.maxBytes} bytes in all (raise the byte limit if this is a genuine archive)`,
      );
    }
    const mode = fileMode(entry.mode);
    const mtime = entry.mtime && !Number.isNaN(entry.mtime.getTime()) ? entry.mtime : undefined;
    if (entry.size <= SMALL_FILE) {
      // Read into memory, then write with direct system calls: see the note on SMALL_FILE.
      const chunks: Uint8Array[] = [];
      let got = 0;
      if (data) {
        for await (const chunk of data) {
          got += chunk.length;
          if (got > entry.size) throw this.refuse(entry.name, `more data than its declared size of ${entry.size} bytes`);
          chunks.push(chunk);
        }
      }
      if (got !== entry.size) throw this.refuse(entry.name, `${got} of ${entry.size} bytes (truncated archive)`);
      const fd = openSync(full, 'wx', mode);
      try {
        for (const chunk of chunks) writeSync(fd, chunk);
        fchmodSync(fd, mode); // open() applied the umask
        if (mtime) futimesSync(fd, mtime, mtime);
      } finally {
        closeSync(fd);
      }
      this.bytes += got;
      return;
    }
    const fh = await open(full, 'wx', mode);
    try {
      let written = 0;
      if (data) {
        for await (const chunk of data) {
          written += chunk.length;
          if (written > entry.size) throw this.refuse(entry.name, `more data than its declared size of ${entry.size} bytes`);
          await fh.write(chunk);
        }
      }
      if (written !== entry.size) throw this.refuse(entry.name, `${written} of ${entry.size} bytes (truncated archive)`);
      this.bytes += written;
      await fh.chmod(mode);
      if (mtime) await fh.utimes(mtime, mtime);
    } finally {
      await fh.close();
    }
  }
}

function fileMode(mode: number): number {
  return mode & 0o777;
}

function dirMode(mode: number): number {
  return (mode & 0o777) | 0o700;
}
