import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { FalcoProbesError } from '../util/errors.js';
import { sha256File } from '../util/hash.js';
import { httpGetStream, type HttpOptions } from '../util/http.js';
import { checkSha256 } from '../util/names.js';
import type { ResolvedDriver } from '../graph/types.js';

// The driver's source tree for a build. A local directory is used in place
// (read-only: the builder copies what it compiles into its own work
// directory). A remote tarball must be pinned by sha256: it is downloaded
// once into the cache by that hash, verified, and unpacked once into
// `<cache>/drivers/<sha256>/`, shared by every target and every run.

export type ExtractTarball = (file: string, dest: string, options: { strip: number; signal?: AbortSignal }) => Promise<void>;

export interface DriverSourceOptions {
  projectRoot: string;
  /** The package cache's folder: tarballs and trees go to `<cacheDir>/drivers/`, beside its `sha256/` store. */
  cacheDir: string;
  extract: ExtractTarball;
  http?: HttpOptions;
  signal?: AbortSignal;
}

export function unpinnedDriverError(driver: ResolvedDriver): FalcoProbesError {
  return new FalcoProbesError('config', `driver ${driver.name} ${driver.version} is a remote tarball without a sha256 pin; refusing to build from unverified source`, {
    hint: `run \`falco-probes pin ${driver.name}\` on a machine that can download it, or point its source at a local checkout`,
  });
}

/** One in-flight preparation per driver tarball, shared by all targets of the run. */
export function createDriverSources(options: DriverSourceOptions): (driver: ResolvedDriver) => Promise<string> {
  const inFlight = new Map<string, Promise<string>>();
  return (driver) => {
    const source = driver.source;
    if ('path' in source) return localDriverDir(options.projectRoot, driver);
    if (!source.sha256) return Promise.reject(unpinnedDriverError(driver));
    const sha = checkSha256(source.sha256);
    let p = inFlight.get(sha);
    if (!p) {
      p = remoteDriverDir(driver, source.url, sha, source.strip ?? 0, options);
      p.catch(() => inFlight.delete(sha));
      inFlight.set(sha, p);
    }
    return p;
  };
}

async function localDriverDir(projectRoot: string, driver: ResolvedDriver): Promise<string> {
  const dir = resolve(projectRoot, (driver.source as { path: string }).path);
  const st = await stat(dir).catch(() => undefined);
  if (!st?.isDirectory())
    throw new FalcoProbesError('config', `driver ${driver.name} ${driver.version}: source directory ${dir} does not exist`, {
      hint: 'fix `source.path` in kernels/drivers.yaml (relative to the project root)',
    });
  return dir;
}

async function remoteDriverDir(driver: ResolvedDriver, url: string, sha256: string, strip: number, o: DriverSourceOptions): Promise<string> {
  const tree = join(o.cacheDir, 'drivers', sha256);
  if ((await stat(join(tree, '.complete')).catch(() => undefined))?.isFile()) return tree;
  const tarball = join(o.cacheDir, 'drivers', `${sha256}.tar`);
  const cached = await sha256File(tarball).catch(() => undefined);
  if (cached?.sha256 !== sha256) await downloadPinned(url, sha256, tarball, driver, o);
  // Unpack beside the final name and rename: a kill leaves a temporary folder, never a half tree at the address.
  const tmp = `${tree}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
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

async function downloadPinned(url: string, sha256: string, dest: string, driver: ResolvedDriver, o: DriverSourceOptions): Promise<void> {
  await mkdir(dirname(dest), { recursive: true });
  const tmp = `${dest}.${process.pid}.${randomBytes(4).toString('hex')}.part`;
  const hash = createHash('sha256');
  try {
    const { stream } = await httpGetStream(url, { ...o.http, ...(o.signal ? { signal: o.signal } : {}) });
    const fh = await open(tmp, 'wx');
    try {
      for await (const chunk of stream) {
        hash.update(chunk as Buffer);
        await fh.write(chunk as Buffer);
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    const got = hash.digest('hex');
    if (got !== sha256)
      throw new FalcoProbesError('checksum', `driver ${driver.name} ${driver.version}: sha256 mismatch: the pin says ${sha256}, the download is ${got}`, {
        location: { url },
        hint: 'the tarball changed upstream or the pin is wrong; check it, then `falco-probes pin --update`',
      });
    await rename(tmp, dest);
  } finally {
    await rm(tmp, { force: true });
  }
}
