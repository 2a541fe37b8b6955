// Unpacking kernel packages (.deb, .rpm) and tarballs (COS headers, driver
// sources) into a private tree.
//
// Why our own streaming parsers rather than `dpkg-deb -x` or `rpm2cpio | cpio`:
// - Those tools are not on every host: an RPM-based CI runner has no dpkg-deb,
//   a Debian one has no rpm2cpio unless someone installs it, and macOS has
//   neither. The runner must unpack every OS's packages wherever it runs.
// - They apply their own rules to hostile input, and those rules differ
//   (GNU cpio follows absolute names unless told otherwise, tar versions
//   differ on symlink handling). Every entry here goes through one set of
//   checks (extract-tree.ts) that we can read and test: no absolute paths,
//   no `..`, no devices, no link that leaves the tree, no write through a
//   link, capped sizes.
// - The formats are small and stable: `ar` (60-byte headers) and the RPM lead
//   and headers are a few dozen lines each, and cpio `newc` is one 110-byte
//   ASCII header per entry. Tar, which has many dialects (GNU long names, pax),
//   is left to tar-stream, a small, widely used streaming parser; the entry
//   checks stay ours. Decompression is Node's zlib (gzip), liblzma through
//   lzma-native (xz) and fzstd (zstd), as streams: nothing is held in memory
//   whole.
// The tests compare our output with dpkg-deb -x, rpm2cpio | cpio and tar on
// real packages, so the tools are the reference, not a dependency.
//
// Atomicity: all archives of one call are unpacked into a private temporary
// folder beside the destination, which is renamed into place only when every
// entry of every archive was written. A failure removes the temporary folder;
// a killed process leaves only a `.<name>.extract-<pid>-*` folder, which the
// next extraction to the same destination removes.

import { mkdir, mkdtemp, readdir, rename, rm, stat, chmod } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { FalcoProbesError } from '../util/errors.js';
import { pathExists } from '../util/fs.js';
import { processAlive } from '../util/process.js';
import { extractDeb } from './extract-deb.js';
import { extractRpm } from './extract-rpm.js';
import { extractTarball } from './extract-tar.js';
import { TreeWriter } from './extract-tree.js';
import type { ArchiveFormat, ExtractOptions, ExtractSummary } from './types.js';

export const DEFAULT_MAX_BYTES = 4 * 1024 ** 3;
export const DEFAULT_MAX_ENTRIES = 500_000;

export interface ArchiveInput {
  file: string;
  format: ArchiveFormat;
}

/** The format a file name says (`.deb`, `.rpm`, `.tgz`, `.tar.gz`, `.tar.xz`, `.tar.zst`, `.tar`). */
export function archiveFormatOf(file: string): ArchiveFormat {
  if (file.endsWith('.deb')) return 'deb';
  if (file.endsWith('.rpm')) return 'rpm';
  if (/\.(tgz|tar|tar\.gz|tar\.xz|txz|tar\.zst|tzst)$/.test(file)) return 'tgz';
  throw new FalcoProbesError('input', `cannot tell the archive format of ${JSON.stringify(basename(file))}`, {
    location: { file },
    hint: 'expected .deb, .rpm, .tgz, .tar.gz, .tar.xz, .tar.zst or .tar',
  });
}

/** Unpack one archive into `destRoot` (which appears only when complete). */
export function extractPackage(file: string, format: ArchiveFormat, destRoot: string, opts: ExtractOptions = {}): Promise<ExtractSummary> {
  return extractPackages([{ file, format }], destRoot, opts);
}

/**
 * Unpack several archives into one tree (a kernel's headers, common headers
 * and kbuild packages form one `/`-like root; their relative links point at
 * each other). The tree appears at `destRoot` only when all are done.
 */
export async function extractPackages(
  archives: readonly ArchiveInput[],
  destRoot: string,
  opts: ExtractOptions = {},
): Promise<ExtractSummary> {
  const root = resolve(destRoot);
  const parent = dirname(root);
  const name = basename(root);
  await mkdir(parent, { recursive: true });
  if (!opts.replace && (await pathExists(root))) {
    throw new FalcoProbesError('usage', `${root} already exists; not extracting over it`, { hint: 'remove it, or extract with replace' });
  }
  await sweepStaleExtractions(parent, name);
  const tmp = await mkdtemp(join(parent, `.${name}.extract-${process.pid}-`));
  const writer = new TreeWriter(tmp, {
    strip: opts.strip ?? 0,
    maxBytes: opts.maxBytes ?? DEFAULT_MAX_BYTES,
    maxEntries: opts.maxEntries ?? DEFAULT_MAX_ENTRIES,
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  let placed = false;
  try {
    for (const archive of archives) {
      opts.signal?.throwIfAborted();
      switch (archive.format) {
        case 'deb':
          await extractDeb(archive.file, writer);
          break;
        case 'rpm':
          await extractRpm(archive.file, writer);
          break;
        case 'tgz':
          await extractTarball(archive.file, writer);
          break;
      }
    }
    // mkdtemp made it private (0700); the finished tree is read by builders that may run as another user.
    await chmod(tmp, 0o755);
    await placeTree(tmp, root, opts.replace === true);
    placed = true;
    return { root, entries: writer.entries, files: writer.files, bytes: writer.bytes };
  } finally {
    if (!placed) await rm(tmp, { recursive: true, force: true });
  }
}

async function placeTree(tmp: string, root: string, replace: boolean): Promise<void> {
  if (replace && (await pathExists(root))) {
    const old = join(dirname(root), `.${basename(root)}.old-${process.pid}-${randomBytes(4).toString('hex')}`);
    await rename(root, old);
    try {
      await rename(tmp, root);
    } catch (err) {
      await rename(old, root).catch(() => {});
      throw err;
    }
    await rm(old, { recursive: true, force: true });
    return;
  }
  try {
    await rename(tmp, root);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') {
      throw new FalcoProbesError('lock', `${root} appeared while extracting into it (another process?)`, { cause: err });
    }
    throw err;
  }
}

/** Remove temporary folders that killed extractions into `parent/name` left behind. */
async function sweepStaleExtractions(parent: string, name: string): Promise<void> {
  const prefix = `.${name}.`;
  let entries: string[];
  try {
    entries = await readdir(parent);
  } catch {
    return;
  }
  for (const entry of entries) {
    if (!entry.startsWith(prefix)) continue;
    const m = /\.(?:extract|old)-(\d+)-[^/]+$/.exec(entry.slice(prefix.length - 1));
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || processAlive(pid)) continue;
    try {
      if ((await stat(join(parent, entry))).isDirectory()) await rm(join(parent, entry), { recursive: true, force: true });
    } catch {
      /* already gone */
    }
  }
}
