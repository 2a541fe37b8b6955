import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, open, readdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { FalcoProbesError, fileSystemError } from '../util/errors.js';
import { sha256File } from '../util/hash.js';
import { checkRelativePath } from '../util/names.js';
import type { Target } from '../graph/types.js';
import { readIndex, writeIndex } from './index-file.js';
import { acquireLock, type HeldLock, type LockOptions } from './lock.js';
import type { ProbeEntry, RepositoryIndex } from './types.js';

// The local repository: a directory in Falco's download layout plus its
// index. Publishing writes the probe (atomically), then the index (atomically),
// so a kill at any point leaves every indexed file complete; a probe file that
// made it to disk without its index entry is adopted by the next publish of
// the same bytes.

export const LOCK_FILE = '.falco-probes.lock';
/**
 * Probes are copied here first and renamed into place: a kill mid-copy leaves
 * a partial file only in this hidden folder (never beside published probes),
 * and the next writer, holding the lock, empties it.
 */
export const TMP_DIR = '.falco-probes-tmp';

export type PublishStatus =
  /** A new probe file and index entry. */
  | 'published'
  /** The same bytes were already published for this key: nothing written. */
  | 'unchanged'
  /** Same bytes, new key (an input changed that does not affect the object): only the index entry changed. */
  | 'rekeyed'
  /** The index had the entry but the file was missing or damaged: rewritten with the published bytes. */
  | 'restored'
  /** The file was on disk without an index entry (a run killed between the two writes): indexed now. */
  | 'adopted';

export interface PublishResult {
  status: PublishStatus;
  entry: ProbeEntry;
}

export function entryFor(target: Target, built: { sha256: string; size: number }): ProbeEntry {
  return {
    file: target.output,
    key: target.key,
    sha256: built.sha256,
    size: built.size,
    os: target.os,
    kernel: target.kernel.name,
    driver: target.driver.name,
    driverVersion: target.driver.version,
    arch: target.arch,
    kind: target.kind,
  };
}

async function hashOrUndefined(path: string): Promise<{ sha256: string; size: number } | undefined> {
  try {
    return await sha256File(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Copy `from` to `to` (through `tmpDir`, on the same file system) so that `to` appears complete or not at all. */
async function copyFileAtomic(from: string, to: string, tmpDir: string): Promise<void> {
  await mkdir(dirname(to), { recursive: true });
  await mkdir(tmpDir, { recursive: true });
  const tmp = join(tmpDir, `${basename(to)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    await copyFile(from, tmp);
    const fh = await open(tmp, 'r+');
    try {
      await fh.chmod(0o644);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, to);
  } catch (err) {
    await rm(tmp, { force: true });
    throw fileSystemError(err, to);
  }
}

/** Temporary files of writers that were killed: only called with the lock held, so no live writer owns them. */
async function removeLeftovers(root: string): Promise<void> {
  await rm(join(root, TMP_DIR), { recursive: true, force: true });
  for (const name of await readdir(root)) {
    if (/^\.(index\.json|SHA256SUMS)\..+\.tmp$/.test(name)) await rm(join(root, name), { force: true });
  }
}

export class LocalRepository {
  readonly root: string;
  private index: RepositoryIndex;
  private byFile: Map<string, ProbeEntry>;
  private lock: HeldLock | undefined;
  // Index writes are coalesced: publishes that land while a write runs share the next one.
  private writing: Promise<void> | undefined;
  private pending: Promise<void> | undefined;

  private constructor(root: string, index: RepositoryIndex, lock: HeldLock | undefined) {
    this.root = root;
    this.index = index;
    this.byFile = new Map(index.probes.map((p) => [p.file, p]));
    this.lock = lock;
  }

  /** Open for reading only (no lock): planning, --dry-run. */
  static async read(root: string): Promise<LocalRepository> {
    const abs = resolve(root);
    return new LocalRepository(abs, await readIndex(abs), undefined);
  }

  /** Open for writing: takes the repository's lock first, then reads the index. */
  static async openForWrite(root: string, lockOptions: LockOptions = {}): Promise<LocalRepository> {
    const abs = resolve(root);
    await mkdir(abs, { recursive: true });
    const lock = await acquireLock(join(abs, LOCK_FILE), lockOptions);
    try {
      await removeLeftovers(abs);
      return new LocalRepository(abs, await readIndex(abs), lock);
    } catch (err) {
      await lock.release();
      throw err;
    }
  }

  entry(file: string): ProbeEntry | undefined {
    return this.byFile.get(file);
  }

  entries(): readonly ProbeEntry[] {
    return [...this.byFile.values()];
  }

  /** Absolute path of a repository-relative file, refusing anything that is not a plain relative path. */
  pathOf(file: string): string {
    return join(this.root, checkRelativePath(file));
  }

  /**
   * Put a built probe into the repository. A file already there (indexed or
   * not) is never replaced with different bytes: that fails with kind
   * 'reproducibility' and the published file stays.
   */
  async publish(target: Target, builtFile: string, built: { sha256: string; size: number }): Promise<PublishResult> {
    if (!this.lock) throw new FalcoProbesError('internal', 'publish on a repository opened read-only');
    const file = target.output;
    const dest = this.pathOf(file);
    const indexed = this.byFile.get(file);
    const onDisk = await hashOrUndefined(dest);
    const published = indexed?.sha256 ?? onDisk?.sha256;

    if (published !== undefined && published !== built.sha256) {
      const sameKey = indexed?.key === target.key;
      throw new FalcoProbesError(
        'reproducibility',
        sameKey
          ? `${target.label}: the rebuild gave other bytes (sha256 ${built.sha256}) than the published ${file} (sha256 ${published}) for the same key; kept the published probe`
          : `${target.label}: the new build of ${file} has other bytes (sha256 ${built.sha256}) than the published one (sha256 ${published}); a published probe is never overwritten, kept it`,
        {
          location: { file: dest },
          hint: sameKey
            ? 'this is a reproducibility bug in the recipe or the toolchain: compare the two objects (llvm-objdump -h) and the build log'
            : 'its inputs changed but Falco names the file the same; if the published probe must really be replaced, remove it and its index entry by hand',
        },
      );
    }

    let status: PublishStatus;
    if (indexed && onDisk?.sha256 === indexed.sha256) {
      status = indexed.key === target.key ? 'unchanged' : 'rekeyed';
    } else if (indexed) {
      await copyFileAtomic(builtFile, dest, join(this.root, TMP_DIR));
      status = 'restored';
    } else if (onDisk) {
      status = 'adopted';
    } else {
      await copyFileAtomic(builtFile, dest, join(this.root, TMP_DIR));
      status = 'published';
    }
    const entry = { ...entryFor(target, built), ...(indexed?.load !== undefined && status !== 'published' ? { load: indexed.load } : {}) };
    if (status !== 'unchanged') {
      this.byFile.set(file, entry);
      await this.flush();
    }
    return { status, entry };
  }

  /** Write the index now (coalescing concurrent callers); resolves once a write that includes every change so far is on disk. */
  flush(): Promise<void> {
    if (this.pending) return this.pending;
    if (!this.writing) {
      this.writing = this.writeNow().finally(() => {
        this.writing = undefined;
      });
      return this.writing;
    }
    this.pending = this.writing
      .catch(() => undefined)
      .then(() => {
        this.pending = undefined;
        return this.flush();
      });
    return this.pending;
  }

  private async writeNow(): Promise<void> {
    this.index = { version: this.index.version, probes: [...this.byFile.values()] };
    await writeIndex(this.root, this.index);
  }

  async close(): Promise<void> {
    try {
      if (this.writing) await this.writing;
      if (this.pending) await this.pending;
      if (this.lock) await rm(join(this.root, TMP_DIR), { recursive: true, force: true });
    } finally {
      await this.lock?.release();
      this.lock = undefined;
    }
  }
}
