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
import type { Logger } from '../util/log.js';
import { checkSha256 } from '../util/names.js';
import { extractPackage } from '../fetch/extract.js';
import type { ArchiveFormat } from '../fetch/types.js';
import { processAlive } from '../util/process.js';
import { checkTree, manifestOf, readManifest, writeManifest, type Manifest, type ManifestEntry } from './tree-manifest.js';

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
//
// Nothing here is trusted as found (tree-manifest.ts): every tree and root
// has a manifest, written before it is renamed into place, in
// `<trees>-manifests/` and `<kernel-roots>-manifests/`. A run checks a tree
// before composing from it and a root before its first use (stat level:
// paths, sizes, modification times, links), and a root fully (sha256 of
// every file, and of its trees) when a build from it fails; what fails is
// removed, with a warning naming it, and made again.

export interface KernelRootOptions {
  logger?: Logger;
}

const manifestFile = (dir: string, name: string) => join(`${dir}-manifests`, `${name}.json`);

/** The problem of `dir` against its manifest file, or undefined when it matches. */
async function problemOf(dir: string, file: string, full: boolean): Promise<string | undefined> {
  const manifest = await readManifest(file);
  if (!manifest) return `no manifest at ${file}`;
  return checkTree(dir, manifest, full);
}

/** Remove a damaged tree or root (its files lost their write bits; its folders kept theirs) and its manifest. */
async function removeDamaged(dir: string, file: string, what: string, problem: string, logger: Logger | undefined): Promise<void> {
  logger?.warn(`${what} ${dir} does not match its manifest (${problem}); removing it and making it again`);
  await rm(dir, { recursive: true, force: true });
  await rm(file, { force: true });
}

export interface KernelArchive {
  file: string;
  format: ArchiveFormat;
  /** The package's verified sha256: the tree's address. */
  sha256: string;
}

export type ComposeKernelRoot = (archives: readonly KernelArchive[], dest: string, options?: { signal?: AbortSignal }) => Promise<void>;

export function createKernelRoots(treesDir: string, options: KernelRootOptions = {}): ComposeKernelRoot {
  const compose = composeWithManifest(treesDir, options);
  return async (archives, dest, opts = {}) => {
    await compose(archives, dest, opts.signal);
  };
}

/** Compose a root into `dest` from checked trees; returns the root's manifest (its files' stat fields, the trees' sha256s). */
function composeWithManifest(
  treesDir: string,
  options: KernelRootOptions,
): (archives: readonly KernelArchive[], dest: string, signal: AbortSignal | undefined) => Promise<Manifest> {
  const inFlight = new Map<string, Promise<{ tree: string; manifest: Manifest }>>();
  const treeOf = (a: KernelArchive, signal: AbortSignal | undefined) => {
    const sha = checkSha256(a.sha256);
    let p = inFlight.get(sha);
    if (!p) {
      p = unpackOnce(treesDir, a, signal, options.logger).finally(() => inFlight.delete(sha));
      inFlight.set(sha, p);
    }
    return p;
  };
  return async (archives, dest, signal) => {
    const trees = await Promise.all(archives.map((a) => treeOf(a, signal)));
    signal?.throwIfAborted();
    composeTree(
      trees.map((t) => t.tree),
      dest,
    );
    const merged = new Map<string, ManifestEntry>();
    for (const t of trees) for (const e of t.manifest.entries) merged.set(e[0], e);
    const entries: ManifestEntry[] = [];
    let bytes = 0;
    for (const e of [...merged.values()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
      if (e[1] === 'l') entries.push(e);
      else {
        // A link shares its tree's times; a copy (another file system) has its own.
        const st = lstatSync(join(dest, e[0]));
        entries.push([e[0], 'f', st.size, st.mtimeMs, e[4], e[5]]);
        bytes += st.size;
      }
    }
    return {
      format: trees[0]?.manifest.format ?? 'falco-probes-manifest-v1',
      files: entries.filter((e) => e[1] === 'f').length,
      bytes,
      entries,
    };
  };
}

/** Composes one kernel root per distinct list of packages and hands out its path. */
export type SharedKernelRoot = ((archives: readonly KernelArchive[], options?: { signal?: AbortSignal }) => Promise<string>) & {
  /**
   * Check a root this function handed out, and the trees it was composed
   * from, against their manifests by sha256 (after a build from it failed).
   * A damaged one is removed (with a warning): true, and the next call
   * composes it again.
   */
  checkFully(root: string): Promise<boolean>;
};

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
export function createSharedKernelRoots(treesDir: string, rootsDir: string, options: KernelRootOptions = {}): SharedKernelRoot {
  const compose = composeWithManifest(treesDir, options);
  const inFlight = new Map<string, Promise<string>>();
  /** Roots checked (stat level) or made by this process, and the packages of each. */
  const checked = new Set<string>();
  const packagesOf = new Map<string, readonly KernelArchive[]>();
  const make = async (id: string, archives: readonly KernelArchive[], signal: AbortSignal | undefined): Promise<string> => {
    const root = join(rootsDir, id);
    const mfile = manifestFile(rootsDir, id);
    packagesOf.set(root, archives);
    if (await isDirectory(root)) {
      if (checked.has(root)) return root;
      const problem = await problemOf(root, mfile, false);
      if (problem === undefined) {
        checked.add(root);
        return root;
      }
      await removeDamaged(root, mfile, 'kernel root', problem, options.logger);
    }
    await mkdir(rootsDir, { recursive: true });
    await sweepStale(rootsDir, id);
    const tmp = join(rootsDir, `.${id}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    try {
      await writeManifest(mfile, await compose(archives, tmp, signal));
      checked.add(root);
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
  const shared = (archives: readonly KernelArchive[], options: { signal?: AbortSignal } = {}) => {
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
  const checkFully = async (root: string): Promise<boolean> => {
    const id = root.slice(rootsDir.length + 1);
    let damaged = false;
    for (const a of packagesOf.get(root) ?? []) {
      const tree = join(treesDir, a.sha256);
      const problem = await problemOf(tree, manifestFile(treesDir, a.sha256), true);
      if (problem === undefined) continue;
      await removeDamaged(tree, manifestFile(treesDir, a.sha256), 'unpacked package tree', problem, options.logger);
      damaged = true;
    }
    const problem = damaged ? 'composed from a damaged tree' : await problemOf(root, manifestFile(rootsDir, id), true);
    checked.delete(root);
    if (problem === undefined) return false;
    await removeDamaged(root, manifestFile(rootsDir, id), 'kernel root', problem, options.logger);
    return true;
  };
  return Object.assign(shared, { checkFully });
}

async function isDirectory(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() === true;
}

async function unpackOnce(
  treesDir: string,
  a: KernelArchive,
  signal: AbortSignal | undefined,
  logger: Logger | undefined,
): Promise<{ tree: string; manifest: Manifest }> {
  const tree = join(treesDir, a.sha256);
  const mfile = manifestFile(treesDir, a.sha256);
  if (await isDirectory(tree)) {
    const manifest = await readManifest(mfile);
    const problem = manifest ? checkTree(tree, manifest, false) : `no manifest at ${mfile}`;
    if (manifest && problem === undefined) return { tree, manifest };
    await removeDamaged(tree, mfile, 'unpacked package tree', problem!, logger);
  }
  await sweepStale(treesDir, a.sha256);
  const tmp = join(treesDir, `.${a.sha256}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    await extractPackage(a.file, a.format, tmp, signal ? { signal } : {});
    dropWriteBits(tmp);
    const manifest = manifestOf(tmp);
    await writeManifest(mfile, manifest);
    try {
      await rename(tmp, tree);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Another process unpacked the same package meanwhile: the same bytes, use its tree.
      if ((code === 'ENOTEMPTY' || code === 'EEXIST') && (await isDirectory(tree))) return { tree, manifest };
      throw err;
    }
    return { tree, manifest };
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
