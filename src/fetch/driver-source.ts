import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { aptMirrorsForPath, type AptSourcesOptions } from './apt-sources.js';
import { lookupCached } from './cache.js';
import { processAlive } from '../util/process.js';
import { extractPackage } from './extract.js';
import { downloadFromMirrors, openFileUrl } from './mirrors.js';
import { treeHash } from '../util/tree-hash.js';
import { FalcoProbesError, errorMessage } from '../util/errors.js';
import { sha256File } from '../util/hash.js';
import { httpGetStream, tryMirrors, type HttpOptions } from '../util/http.js';
import type { Logger } from '../util/log.js';
import { checkSha256 } from '../util/names.js';
import type { DriverPackage, DriverPin, PackageRef } from '../config/types.js';

// The driver's source tree for a build, by the form of its source:
// - a local directory is used in place (read-only: the builder copies what
//   it compiles into its own work directory);
// - a tarball pinned by sha256 is downloaded once into the cache by that
//   hash, verified, and unpacked once into `<cache>/drivers/<sha256>/`;
// - a tarball pinned by tree hash is downloaded (its bytes are not pinned:
//   GitHub does not promise stable archive bytes), unpacked with `strip`,
//   and its unpacked tree hashed; only a tree whose hash is the pin reaches
//   `<cache>/drivers/tree-<hash>/` (by a rename), and that folder's presence
//   is the proof, so a later run needs no network;
// - a Debian package is fetched and checked by sha256 and size exactly like
//   a kernel package (the package cache's sha256/ store), from the
//   archive's mirrors: `--mirror <archive>=URL`, else the pin's `mirrors`,
//   then the mirrors this machine's apt sources name for the same URI path;
//   it is unpacked once into `<cache>/drivers/deb-<sha256>/`, and the
//   driver is the pin's `dir` inside it.
// Everything is shared by every target and every run. A tarball URL may be
// rewritten (`--driver-mirror PREFIX=REPLACEMENT`): that only says where
// the bytes come from; the pin decides whether they are the right ones.

export type ExtractTarball = (file: string, dest: string, options: { strip: number; signal?: AbortSignal }) => Promise<void>;
export type ExtractDeb = (file: string, dest: string, options: { signal?: AbortSignal }) => Promise<void>;

/** `--driver-mirror PREFIX=REPLACEMENT`: a tarball URL starting with PREFIX is fetched from REPLACEMENT + the rest. */
export interface UrlRewrite {
  prefix: string;
  replacement: string;
}

export interface DriverSourceOptions {
  projectRoot: string;
  /** The package cache's folder: trees go to `<cacheDir>/drivers/`, packages to its `sha256/` store. */
  cacheDir: string;
  extract: ExtractTarball;
  /** Unpacks a .deb (default: the project's own extractor). */
  extractDeb?: ExtractDeb;
  /** Tarball URL rewrites, in order (every matching one is tried, in order, instead of the URL itself). */
  urlRewrites?: readonly UrlRewrite[];
  /** `--mirror NAME=URL`: mirrors of a Debian package's archive by its name. */
  archiveMirrors?: ReadonlyMap<string, string[]>;
  /** Where apt's sources are read (the fallback mirrors of a Debian package). */
  apt?: AptSourcesOptions;
  http?: HttpOptions;
  signal?: AbortSignal;
  logger?: Logger;
}

export function unpinnedDriverError(driver: DriverPin): FalcoProbesError {
  return new FalcoProbesError(
    'config',
    `driver ${driver.name} ${driver.version} is a remote tarball without a sha256 pin (nor a tree pin); refusing to build from unverified source`,
    {
      hint: `run \`falco-probes pin ${driver.name}\` on a machine that can download it, or point its source at a local checkout`,
    },
  );
}

/**
 * A driver source that could not be downloaded from anywhere (every URL or
 * mirror failed with a network error: refused, unresolvable, timed out,
 * HTTP 404/5xx). Never a checksum failure: wrong bytes are always an error.
 */
export class DriverSourceUnreachableError extends FalcoProbesError {
  /** What was asked for: the tarball's URL, or `<archive> package <name> <version> (<path>)`. */
  readonly what: string;
  /** The last network error, one line. */
  readonly reason: string;
  /** The option that serves it from elsewhere: `--driver-mirror PREFIX=URL` or `--mirror ARCHIVE=URL`. */
  readonly serveWith: string;
  readonly driver: DriverPin;
  constructor(driver: DriverPin, what: string, cause: unknown, serveWith: string) {
    const reason = oneLineReason(cause);
    super('network', `driver ${driver.name} ${driver.version}: source ${what} is unreachable (${reason})`, {
      cause,
      hint: `serve it with ${serveWith}`,
    });
    this.what = what;
    this.reason = reason;
    this.serveWith = serveWith;
    this.driver = driver;
  }
}

/** A network failure in one line: its message, and for several mirrors what each said. */
function oneLineReason(err: unknown): string {
  if (!(err instanceof FalcoProbesError)) return errorMessage(err).split('\n')[0]!;
  const each = (err.details ?? '')
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  return [err.message, ...each].join('; ');
}

/** The URLs a tarball is fetched from: every rewrite whose prefix it starts with, in order; the URL itself when none does. */
export function driverSourceUrls(url: string, rewrites: readonly UrlRewrite[] = []): string[] {
  const rewritten = rewrites.filter((r) => url.startsWith(r.prefix)).map((r) => r.replacement + url.slice(r.prefix.length));
  return rewritten.length ? [...new Set(rewritten)] : [url];
}

/** The mirrors a Debian package of a driver is fetched from, in order (see the top of this file). */
export async function driverPackageMirrors(
  deb: DriverPackage,
  o: Pick<DriverSourceOptions, 'archiveMirrors' | 'apt'> = {},
): Promise<string[]> {
  const listed = o.archiveMirrors?.get(deb.archive) ?? deb.mirrors ?? [];
  const apt = await aptMirrorsForPath(deb.aptPath ?? `/${deb.archive}`, o.apt ?? {});
  const seen = new Set<string>();
  return [...listed, ...apt].filter((m) => {
    const k = m.replace(/\/+$/, '');
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** One in-flight preparation per source, shared by all targets of the run. */
export function createDriverSources(options: DriverSourceOptions): (driver: DriverPin) => Promise<string> {
  const inFlight = new Map<string, Promise<string>>();
  const once = (key: string, make: () => Promise<string>): Promise<string> => {
    let p = inFlight.get(key);
    if (!p) {
      p = make();
      p.catch(() => inFlight.delete(key));
      inFlight.set(key, p);
    }
    return p;
  };
  return (driver) => {
    const source = driver.source;
    if ('path' in source) return localDriverDir(options.projectRoot, driver);
    if ('deb' in source) {
      const sha = checkSha256(source.deb.sha256);
      return once(`deb:${sha}`, () => debPackageTree(driver, source.deb, options)).then((tree) => driverFolderIn(tree, source.dir, driver));
    }
    if (source.sha256 !== undefined) {
      const sha = checkSha256(source.sha256);
      return once(`sha256:${sha}`, () => sha256DriverDir(driver, source.url, sha, source.strip ?? 0, options));
    }
    if (source.tree !== undefined) {
      const tree = checkSha256(source.tree);
      return once(`tree:${tree}`, () => treeDriverDir(driver, source.url, tree, source.strip ?? 0, options));
    }
    return Promise.reject(unpinnedDriverError(driver));
  };
}

async function isDir(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() === true;
}

async function localDriverDir(projectRoot: string, driver: DriverPin): Promise<string> {
  const dir = resolve(projectRoot, (driver.source as { path: string }).path);
  if (!(await isDir(dir)))
    throw new FalcoProbesError('config', `driver ${driver.name} ${driver.version}: source directory ${dir} does not exist`, {
      hint: 'fix `source.path` in kernels/drivers.yaml (relative to the project root)',
    });
  return dir;
}

function driversDir(o: DriverSourceOptions): string {
  return join(o.cacheDir, 'drivers');
}

/** Where a tarball pinned by sha256 is kept: `<cacheDir>/drivers/<sha256>.tar` (a build and `pin` alike). */
export function driverTarballPath(cacheDir: string, sha256: string): string {
  return join(cacheDir, 'drivers', `${sha256}.tar`);
}

/** A private temporary name beside `final`: `<final>.<pid>.<random>.<suffix>` (swept when its process is gone). */
export function temporaryBeside(final: string, suffix: 'tmp' | 'part'): string {
  return `${final}.${process.pid}.${randomBytes(4).toString('hex')}.${suffix}`;
}

/** Remove temporaries of killed processes in the drivers folder (their pid is gone, and they are 10 minutes old). */
async function sweepStaleTemporaries(dir: string, minAgeMs = 10 * 60_000): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const name of names) {
    const m = /\.(\d+)\.[0-9a-f]{8}\.(tmp|part)$/.exec(name);
    if (!m || Number(m[1]) === process.pid || processAlive(Number(m[1]))) continue;
    const st = await stat(join(dir, name)).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs >= minAgeMs) await rm(join(dir, name), { recursive: true, force: true });
  }
}

/** `https://host/a/b/file.tar.gz` -> `https://host/a/b/`: the prefix to suggest for --driver-mirror. */
function urlFolder(url: string): string {
  return url.slice(0, url.lastIndexOf('/') + 1) || url;
}

/** What a tarball download reads of the options. */
export type TarballDownloadOptions = Pick<DriverSourceOptions, 'urlRewrites' | 'http' | 'signal'>;

/**
 * Download a tarball from the first of its URLs that answers; a network
 * failure on all of them is "unreachable". The one download path of driver
 * tarballs: a build's (below) and `pin`'s (pin-driver.ts).
 */
export async function downloadTarball(
  driver: DriverPin,
  url: string,
  dest: string,
  o: TarballDownloadOptions,
  check?: (sha256: string, from: string) => void,
): Promise<string> {
  const urls = driverSourceUrls(url, o.urlRewrites);
  try {
    return await tryMirrors(urls, async (from) => {
      await downloadOne(from, dest, o, check);
      return from;
    });
  } catch (err) {
    if (err instanceof FalcoProbesError && err.kind === 'network' && !o.signal?.aborted) {
      const tried = urls.length === 1 && urls[0] === url ? url : `${url} (from ${urls.join(', ')})`;
      throw new DriverSourceUnreachableError(driver, tried, err, `--driver-mirror ${urlFolder(url)}=URL`);
    }
    throw err;
  }
}

/** One URL into `dest` (written under a temporary name, renamed when complete); `check` sees the sha256 first. */
async function downloadOne(
  url: string,
  dest: string,
  o: TarballDownloadOptions,
  check?: (sha256: string, from: string) => void,
): Promise<void> {
  await mkdir(dirname(dest), { recursive: true });
  const tmp = temporaryBeside(dest, 'part');
  const hash = createHash('sha256');
  try {
    const stream = await openSource(url, o);
    stream.on('error', () => {}); // reported through the reader below
    const fh = await open(tmp, 'wx');
    try {
      for await (const chunk of stream) {
        o.signal?.throwIfAborted();
        hash.update(chunk as Buffer);
        await fh.write(chunk as Buffer);
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    check?.(hash.digest('hex'), url);
    await rename(tmp, dest);
  } finally {
    await rm(tmp, { force: true });
  }
}

/** A body to read: HTTP(S), or a file for a `file://` mirror (a missing file is like a 404: the next URL is tried). */
async function openSource(url: string, o: TarballDownloadOptions): Promise<Readable> {
  if (!url.startsWith('file:')) return (await httpGetStream(url, { ...o.http, ...(o.signal ? { signal: o.signal } : {}) })).stream;
  return openFileUrl(url);
}

async function sha256DriverDir(driver: DriverPin, url: string, sha256: string, strip: number, o: DriverSourceOptions): Promise<string> {
  const tree = join(driversDir(o), sha256);
  if ((await stat(join(tree, '.complete')).catch(() => undefined))?.isFile()) return tree;
  const tarball = driverTarballPath(o.cacheDir, sha256);
  const cached = await sha256File(tarball).catch(() => undefined);
  if (cached?.sha256 !== sha256)
    await downloadTarball(driver, url, tarball, o, (got, from) => {
      if (got !== sha256)
        throw new FalcoProbesError(
          'checksum',
          `driver ${driver.name} ${driver.version}: sha256 mismatch: the pin says ${sha256}, the download is ${got}`,
          {
            location: { url: from },
            hint: 'the tarball changed upstream or the pin is wrong; check it, then `falco-probes pin --update`',
          },
        );
    });
  // Unpack beside the final name and rename: a kill leaves a temporary folder, never a half tree at the address.
  const tmp = temporaryBeside(tree, 'tmp');
  try {
    await o.extract(tarball, tmp, { strip, ...(o.signal ? { signal: o.signal } : {}) });
    await open(join(tmp, '.complete'), 'w').then((fh) => fh.close());
    await rm(tree, { recursive: true, force: true });
    await rename(tmp, tree);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
  return tree;
}

/**
 * A tarball pinned by the hash of its unpacked tree. `<cache>/drivers/tree-<hash>/`
 * holds exactly the verified tree (no marker inside, so hashing it again gives
 * the pin); it appears by a rename only after its hash matched.
 */
async function treeDriverDir(driver: DriverPin, url: string, tree: string, strip: number, o: DriverSourceOptions): Promise<string> {
  const final = join(driversDir(o), `tree-${tree}`);
  if (await isDir(final)) return final;
  return (await unpackTarballTree(driver, url, strip, o, tree)).dir;
}

export interface UnpackedTree {
  /** The tree hash (falco-probes-tree-v1) of the unpacked content. */
  tree: string;
  /** `<cache>/drivers/tree-<tree>/`. */
  dir: string;
  /** The URL the bytes came from (after --driver-mirror rewrites). */
  from: string;
}

/**
 * Download a driver tarball, unpack it with `strip` and hash the tree; with
 * `expected`, refuse (a `checksum` error naming the URL and both hashes)
 * unless the hash is that. The tree is kept at the address of its hash
 * (`tree-<hash>`), so it is reused by any later run whose pin names it;
 * anything else leaves nothing in the cache. `falco-probes pin` calls this
 * without `expected` to learn the hash.
 */
export async function unpackTarballTree(
  driver: DriverPin,
  url: string,
  strip: number,
  o: DriverSourceOptions,
  expected?: string,
): Promise<UnpackedTree> {
  await mkdir(driversDir(o), { recursive: true });
  await sweepStaleTemporaries(driversDir(o));
  const name = `tree-${expected ?? 'unknown'}`;
  const tarball = temporaryBeside(join(driversDir(o), name), 'part');
  const tmp = temporaryBeside(join(driversDir(o), name), 'tmp');
  try {
    const from = await downloadTarball(driver, url, tarball, o);
    await o.extract(tarball, tmp, { strip, ...(o.signal ? { signal: o.signal } : {}) });
    const got = await treeHash(tmp, from);
    if (expected !== undefined && got !== expected)
      throw new FalcoProbesError(
        'checksum',
        `driver ${driver.name} ${driver.version}: tree hash mismatch for ${url}: the pin says ${expected}, the unpacked tarball (strip ${strip}) is ${got}`,
        {
          location: { url: from },
          hint: "the archive's content changed upstream, the mirror serves another tarball, or the pin (or strip) is wrong; check it, then `falco-probes pin --update`",
        },
      );
    const dir = join(driversDir(o), `tree-${got}`);
    try {
      await rename(tmp, dir);
    } catch (err) {
      // Another process placed the same verified tree first: use it.
      if (!(await isDir(dir))) throw err;
    }
    return { tree: got, dir, from };
  } finally {
    await rm(tarball, { force: true });
    await rm(tmp, { recursive: true, force: true });
  }
}

/** A Debian package's tree: fetched and verified like a kernel package, unpacked once by its sha256. */
async function debPackageTree(driver: DriverPin, deb: DriverPackage, o: DriverSourceOptions): Promise<string> {
  const tree = join(driversDir(o), `deb-${deb.sha256}`);
  if (await isDir(tree)) return tree;
  const pkg: PackageRef = {
    name: deb.name,
    version: deb.version,
    repository: deb.archive,
    path: deb.path,
    sha256: deb.sha256,
    size: deb.size,
  };
  let file = await lookupCached(o.cacheDir, pkg, o.logger ? { logger: o.logger } : {});
  if (!file) {
    const what = `${deb.archive} package ${deb.name} ${deb.version} (${deb.path})`;
    const serveWith = `--mirror ${deb.archive}=URL`;
    const mirrors = await driverPackageMirrors(deb, o);
    if (mirrors.length === 0)
      throw new DriverSourceUnreachableError(
        driver,
        what,
        new FalcoProbesError(
          'network',
          `no mirror: none is listed for archive ${deb.archive}, and apt's sources name none for ${deb.aptPath ?? `/${deb.archive}`}`,
        ),
        serveWith,
      );
    try {
      file = await downloadFromMirrors(pkg, mirrors, {
        cacheDir: o.cacheDir,
        ...(o.http ? { http: o.http } : {}),
        ...(o.signal ? { signal: o.signal } : {}),
        ...(o.logger ? { logger: o.logger } : {}),
      });
    } catch (err) {
      if (err instanceof FalcoProbesError && err.kind === 'network' && !o.signal?.aborted)
        throw new DriverSourceUnreachableError(driver, `${what} from ${mirrors.join(', ')}`, err, serveWith);
      throw err;
    }
  }
  const extractDeb: ExtractDeb =
    o.extractDeb ??
    (async (f, dest, opts) => {
      await extractPackage(f, 'deb', dest, opts.signal ? { signal: opts.signal } : {});
    });
  try {
    await extractDeb(file, tree, o.signal ? { signal: o.signal } : {});
  } catch (err) {
    // Another process unpacked the same package first (the extractor places its tree by a rename).
    if (!(await isDir(tree))) throw err;
  }
  return tree;
}

async function driverFolderIn(tree: string, dir: string, driver: DriverPin): Promise<string> {
  const folder = dir === '.' ? tree : join(tree, dir);
  if (!(await isDir(folder))) {
    const deb = (driver.source as { deb: DriverPackage }).deb;
    throw new FalcoProbesError(
      'config',
      `driver ${driver.name} ${driver.version}: the package ${deb.name} ${deb.version} has no folder ${dir}`,
      {
        location: { file: folder },
        hint: "fix `source.dir` in kernels/drivers.yaml: the folder of the package's tree that holds the driver (for example usr/src/<name>-<version>)",
      },
    );
  }
  return folder;
}
