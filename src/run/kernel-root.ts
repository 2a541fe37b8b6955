import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readlinkSync,
  statSync,
  symlinkSync,
  unlinkSync,
  type Stats,
} from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FalcoProbesError } from '../util/errors.js';
import { checkSha256 } from '../util/names.js';
import { extractPackage } from '../fetch/extract.js';
import type { ArchiveFormat } from '../fetch/types.js';
import { processAlive } from '../repository/lock.js';

// A target's kernel tree, laid out like `/`, from its packages. Unpacking is
// the slow part of a build (Debian's -common headers: 10,000 files, 50 MB,
// shared by every flavour of an ABI), so each verified package is unpacked
// once into a content-addressed tree, `<trees>/<sha256>/`, with the real
// extractor and its checks, and a target's private kernel root is composed
// from those trees with hard links (a copy where links cannot be made):
// new directories, shared file contents, in a fraction of a second.
//
// The trees are inputs: builders treat a kernel root as read-only (the
// Builder contract), and the trees' files lose their write bits so that a
// build that runs as an ordinary user cannot change them through a link.

export interface KernelArchive {
  file: string;
  format: ArchiveFormat;
  /** The package's verified sha256: the tree's address. */
  sha256: string;
}

export type ComposeKernelRoot = (archives: readonly KernelArchive[], dest: string, options?: { signal?: AbortSignal }) => Promise<void>;

export function createKernelRoots(treesDir: string): ComposeKernelRoot {
  const inFlight = new Map<string, Promise<string>>();
  const treeOf = (a: KernelArchive, signal: AbortSignal | undefined): Promise<string> => {
    const sha = checkSha256(a.sha256);
    let p = inFlight.get(sha);
    if (!p) {
      p = unpackOnce(treesDir, a, signal).finally(() => inFlight.delete(sha));
      inFlight.set(sha, p);
    }
    return p;
  };
  return async (archives, dest, options = {}) => {
    const trees = await Promise.all(archives.map((a) => treeOf(a, options.signal)));
    options.signal?.throwIfAborted();
    composeTree(trees, dest);
  };
}

/** Composes one kernel root per distinct list of packages and hands out its path. */
export type SharedKernelRoot = (archives: readonly KernelArchive[], options?: { signal?: AbortSignal }) => Promise<string>;

const ROOT_FORMAT = 'falco-probes-kernel-root-v1';

/**
 * Kernel roots shared by every build of the same packages: composed once
 * (from the unpacked trees under `treesDir`) into `<rootsDir>/<id>/`, where
 * the id is the sha256 of the ordered list of the packages' sha256s, then
 * reused by every later target and run of that kernel. Composing a Debian
 * root links about 10,000 files (most of a second); builders only read a
 * kernel root, so one copy serves them all. Written to a temporary folder
 * and renamed into place, so a root is whole or absent; a temporary folder
 * of a process that died is swept.
 */
export function createSharedKernelRoots(treesDir: string, rootsDir: string): SharedKernelRoot {
  const compose = createKernelRoots(treesDir);
  const inFlight = new Map<string, Promise<string>>();
  const make = async (id: string, archives: readonly KernelArchive[], signal: AbortSignal | undefined): Promise<string> => {
    const root = join(rootsDir, id);
    if (await isDirectory(root)) return root;
    await mkdir(rootsDir, { recursive: true });
    await sweepStale(rootsDir, id);
    const tmp = join(rootsDir, `.${id}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    try {
      await compose(archives, tmp, signal ? { signal } : {});
      try {
        await rename(tmp, root);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // Another process composed the same root meanwhile: the same tree, use it.
        if ((code === 'ENOTEMPTY' || code === 'EEXIST') && (await isDirectory(root))) return root;
        throw err;
      }
      return root;
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  };
  return (archives, options = {}) => {
    const id = createHash('sha256')
      .update(JSON.stringify([ROOT_FORMAT, archives.map((a) => [checkSha256(a.sha256), a.format])]))
      .digest('hex');
    let p = inFlight.get(id);
    if (!p) {
      p = make(id, archives, options.signal).finally(() => inFlight.delete(id));
      inFlight.set(id, p);
    }
    return p;
  };
}

async function isDirectory(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() === true;
}

async function unpackOnce(treesDir: string, a: KernelArchive, signal: AbortSignal | undefined): Promise<string> {
  const tree = join(treesDir, a.sha256);
  if (await isDirectory(tree)) return tree;
  await sweepStale(treesDir, a.sha256);
  const tmp = join(treesDir, `.${a.sha256}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    await extractPackage(a.file, a.format, tmp, signal ? { signal } : {});
    dropWriteBits(tmp);
    try {
      await rename(tmp, tree);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Another process unpacked the same package meanwhile: the same bytes, use its tree.
      if ((code === 'ENOTEMPTY' || code === 'EEXIST') && (await isDirectory(tree))) return tree;
      throw err;
    }
    return tree;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Temporary trees of processes that died while unpacking this package. */
async function sweepStale(treesDir: string, sha256: string): Promise<void> {
  const names = await readdir(treesDir).catch(() => [] as string[]);
  for (const name of names) {
    const m = new RegExp(`^\\.${sha256}\\.(\\d+)\\.[0-9a-f]{8}\\.tmp$`).exec(name);
    if (m && Number(m[1]) !== process.pid && !processAlive(Number(m[1]))) await rm(join(treesDir, name), { recursive: true, force: true });
  }
}

function dropWriteBits(dir: string): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (e.isDirectory()) dropWriteBits(path);
    else if (e.isFile()) chmodSync(path, statSync(path).mode & 0o7555);
  }
}

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

/**
 * Merge the trees into `dest` (which must not exist) as the extractor merges
 * several archives: folders merge, a later file or link replaces an earlier
 * one, a folder never meets a file or link of the same name. Links are
 * recreated as they are (the extractor made them relative and checked them);
 * nothing is ever written through one. Synchronous calls: a header tree is
 * thousands of small entries, and each call is short.
 */
export function composeTree(trees: readonly string[], dest: string): void {
  mkdirSync(dest);
  for (const tree of trees) mergeDir(tree, dest, tree);
}

function mergeDir(from: string, to: string, tree: string): void {
  for (const e of readdirSync(from, { withFileTypes: true })) {
    const src = join(from, e.name);
    const dst = join(to, e.name);
    if (e.isDirectory()) {
      const existing = lstatOrUndefined(dst);
      if (!existing) mkdirSync(dst, { mode: statSync(src).mode & 0o7777 });
      else if (!existing.isDirectory()) throw conflict(tree, src, dst, 'a folder where another package has a file or link');
      mergeDir(src, dst, tree);
    } else if (e.isSymbolicLink()) {
      replaceable(tree, src, dst);
      symlinkSync(readlinkSync(src), dst);
    } else if (e.isFile()) {
      replaceable(tree, src, dst);
      try {
        linkSync(src, dst);
      } catch (err) {
        // Another file system (a cache elsewhere), or one without hard links: copy.
        if (!['EXDEV', 'EPERM', 'EMLINK', 'ENOTSUP'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
        copyFileSync(src, dst);
      }
    } else {
      throw conflict(tree, src, dst, 'not a file, folder or link');
    }
  }
}

function replaceable(tree: string, src: string, dst: string): void {
  const existing = lstatOrUndefined(dst);
  if (!existing) return;
  if (existing.isDirectory()) throw conflict(tree, src, dst, 'a file or link where another package has a folder');
  unlinkSync(dst);
}

function conflict(tree: string, src: string, dst: string, what: string): FalcoProbesError {
  return new FalcoProbesError('input', `cannot merge ${src.slice(tree.length + 1)} into the kernel tree: ${what}`, {
    location: { file: dst },
    hint: "the kernel's packages disagree about this path; check the lockfile entry",
  });
}
