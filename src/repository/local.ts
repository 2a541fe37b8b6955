import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { copyFile, mkdir, open, readdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { FalcoProbesError, fileSystemError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { sha256File, sha256Hex } from '../util/hash.js';
import { checkRelativePath } from '../util/names.js';
import type { Target } from '../graph/types.js';
import { emptyIndex, parseIndexText, serializeIndex, writeIndex } from './index-file.js';
import { acquireLock, type HeldLock, type LockOptions } from './lock.js';
import { isRacy, readRepositoryMemo, serializeRepositoryMemo, statKey, type MemoEntry } from './memo.js';
import { INDEX_FILE, INDEX_VERSION, type ProbeEntry } from './types.js';

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

export interface RepositoryOptions {
  /**
   * The repository's memo (memo.ts, repositoryMemoPath): index entries and
   * the stats of files known to hold their index's bytes. Without it every
   * file is read. Written only by a writer (with the lock held).
   */
  memo?: string;
  /**
   * Read every published file and index.json again, trusting no stat
   * recorded in the repository's memo (`build --verify-all`); the memo is
   * then written afresh.
   */
  verifyAll?: boolean;
}

/** What planning needs of an index entry. */
export type IndexedProbe = Pick<ProbeEntry, 'file' | 'key' | 'sha256' | 'size'>;

/** A published file as found: its sha256 (undefined when its size already differs from the index's) and size. */
export interface FileState {
  sha256: string | undefined;
  size: number;
}

export class LocalRepository {
  readonly root: string;
  /** index.json parsed whole: only when something needs more than keys and hashes (publish, entries()). */
  private full: Map<string, ProbeEntry> | undefined;
  /** Every index entry's file, key, sha256 and size: from the memo, or from the parsed index. */
  private indexed: Map<string, IndexedProbe>;
  private lock: HeldLock | undefined;
  private readonly verifyAll: boolean;
  // The memo (memo.ts): index.json's sha256 and stat as opened, the stat of each file known to hold its index's bytes.
  private indexSha256: string | undefined;
  private indexStat: string | undefined;
  private readonly stats: Map<string, string>;
  private readonly memoWrittenNs: bigint | undefined;
  private readonly memoFile: string | undefined;
  private memoDirty: boolean;
  /** Files written by this process: their stat is not recorded (the next run reads them once). */
  private readonly touched = new Set<string>();
  private indexWritten = false;
  // Index writes are coalesced: publishes that land while a write runs share the next one.
  private writing: Promise<void> | undefined;
  private pending: Promise<void> | undefined;

  private constructor(root: string, state: OpenedState, lock: HeldLock | undefined, options: RepositoryOptions) {
    this.root = root;
    this.memoFile = options.memo;
    this.full = state.full;
    this.indexed = state.indexed;
    this.indexSha256 = state.indexSha256;
    this.indexStat = state.indexStat;
    this.stats = state.stats;
    this.memoWrittenNs = state.memoWrittenNs;
    this.memoDirty = state.memoDirty;
    this.lock = lock;
    this.verifyAll = options.verifyAll === true;
  }

  /** Open for reading only (no lock): planning, --dry-run. Writes nothing, the memo included. */
  static async read(root: string, options: RepositoryOptions = {}): Promise<LocalRepository> {
    const abs = resolve(root);
    return new LocalRepository(abs, openState(abs, options), undefined, options);
  }

  /** Open for writing: takes the repository's lock first, then reads the index. */
  static async openForWrite(root: string, options: LockOptions & RepositoryOptions = {}): Promise<LocalRepository> {
    const abs = resolve(root);
    await mkdir(abs, { recursive: true });
    const lock = await acquireLock(join(abs, LOCK_FILE), options);
    try {
      await removeLeftovers(abs);
      return new LocalRepository(abs, openState(abs, options), lock, options);
    } catch (err) {
      await lock.release();
      throw err;
    }
  }

  /** The index entry of a file, whole (parses index.json when the memo served the open). */
  entry(file: string): ProbeEntry | undefined {
    return this.fullIndex().get(file);
  }

  entries(): readonly ProbeEntry[] {
    return [...this.fullIndex().values()];
  }

  /** The file, key, sha256 and size the index has for a file: all that deciding "up to date" needs, without parsing index.json. */
  indexedProbe(file: string): IndexedProbe | undefined {
    return this.indexed.get(file);
  }

  /**
   * The published file's sha256 and size, or undefined when it is not a
   * file. A size other than `expected`'s proves the bytes differ without
   * reading them (sha256 undefined then). An unchanged stat recorded for
   * `expected`'s bytes, not racy, answers without reading (memo.ts);
   * otherwise the file is read and hashed.
   */
  fileState(expected: IndexedProbe): FileState | undefined {
    const file = expected.file;
    const path = this.pathOf(file);
    const recorded = this.verifyAll ? undefined : this.stats.get(file);
    if (recorded !== undefined && this.memoWrittenNs !== undefined) {
      const st = statSync(path, { bigint: true, throwIfNoEntry: false });
      if (st?.isFile() && statKey(st) === recorded && !isRacy(st, this.memoWrittenNs))
        return { sha256: expected.sha256, size: Number(st.size) };
    }
    const found = hashFile(path, expected.size);
    const good = found !== undefined && found.sha256 === expected.sha256 && found.size === expected.size && !this.touched.has(file);
    if (good && found.stat !== recorded) {
      this.stats.set(file, found.stat!);
      this.memoDirty = true;
    } else if (!good && this.stats.delete(file)) this.memoDirty = true;
    return found && { sha256: found.sha256, size: found.size };
  }

  /** The parsed index, read on first need (the memo may have served the open without parsing it). */
  private fullIndex(): Map<string, ProbeEntry> {
    if (this.full) return this.full;
    const file = join(this.root, INDEX_FILE);
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        throw new FalcoProbesError('config', `cannot read the repository index: ${(err as Error).message}`, { location: { file } });
      text = '';
    }
    const index = text === '' && !existsSync(file) ? emptyIndex() : parseIndexText(text, file);
    const full = new Map(index.probes.map((p) => [p.file, p]));
    // The memo said what this index holds; if the file says otherwise now, the file is the truth.
    const before = this.indexed;
    if (full.size !== before.size || [...full.values()].some((p) => !sameIndexed(p, before.get(p.file)))) {
      this.indexed = new Map(full);
      for (const f of [...this.stats.keys()]) if (!sameIndexed(before.get(f), full.get(f))) this.stats.delete(f);
      this.indexSha256 = undefined;
      this.indexStat = undefined;
      this.memoDirty = true;
    } else this.indexed = new Map(full);
    return (this.full = full);
  }

  /** Absolute path of a repository-relative file, refusing anything that is not a plain relative path. */
  pathOf(file: string): string {
    // A checked relative path has no `.`, `..` or empty segment: joining is concatenation (planning joins one per file).
    checkRelativePath(file);
    return this.root.endsWith('/') ? `${this.root}${file}` : `${this.root}/${file}`;
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
    const byFile = this.fullIndex();
    const indexed = byFile.get(file);
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
      this.touch(file);
      await copyFileAtomic(builtFile, dest, join(this.root, TMP_DIR));
      status = 'restored';
    } else if (onDisk) {
      this.touch(file);
      status = 'adopted';
    } else {
      this.touch(file);
      await copyFileAtomic(builtFile, dest, join(this.root, TMP_DIR));
      status = 'published';
    }
    const entry = { ...entryFor(target, built), ...(indexed?.load !== undefined && status !== 'published' ? { load: indexed.load } : {}) };
    if (status !== 'unchanged') {
      byFile.set(file, entry);
      this.indexed.set(file, entry);
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
    this.indexWritten = true;
    this.memoDirty = true;
    await writeIndex(this.root, { version: INDEX_VERSION, probes: [...this.fullIndex().values()] });
  }

  /** A file this process writes: whatever stat it had is forgotten, and none is recorded for it in this run. */
  private touch(file: string): void {
    this.touched.add(file);
    this.stats.delete(file);
    this.memoDirty = true;
  }

  /**
   * Write the memo when it changed (with the lock held only). Nothing
   * written is fatal: the memo is a cache, and the next run reads the files.
   */
  private async saveMemo(): Promise<void> {
    if (!this.lock || !this.memoDirty || this.memoFile === undefined) return;
    let indexSha256 = this.indexSha256;
    let indexStat = this.indexStat;
    if (this.indexWritten || indexSha256 === undefined) {
      // The bytes this process wrote last (or found): their sha256; their stat is taken by the next run, which hashes them once.
      indexSha256 = sha256Hex(serializeIndex({ version: INDEX_VERSION, probes: [...this.fullIndex().values()] }));
      indexStat = undefined;
    }
    const entries: MemoEntry[] = [];
    for (const p of this.indexed.values()) {
      const stat = this.touched.has(p.file) ? undefined : this.stats.get(p.file);
      entries.push({ file: p.file, key: p.key, sha256: p.sha256, size: p.size, ...(stat !== undefined ? { stat } : {}) });
    }
    try {
      await mkdir(dirname(this.memoFile), { recursive: true });
      await writeFileAtomic(
        this.memoFile,
        serializeRepositoryMemo({ indexSha256, ...(indexStat !== undefined ? { indexStat } : {}), entries }),
      );
      this.memoDirty = false;
    } catch {
      // Not written (a full disk, a read-only repository): every file is read again next time.
    }
  }

  async close(): Promise<void> {
    try {
      if (this.writing) await this.writing;
      if (this.pending) await this.pending;
      if (this.lock) {
        await rm(join(this.root, TMP_DIR), { recursive: true, force: true });
        await this.saveMemo();
      }
    } finally {
      await this.lock?.release();
      this.lock = undefined;
    }
  }
}

function sameIndexed(a: IndexedProbe | undefined, b: IndexedProbe | undefined): boolean {
  return a !== undefined && b !== undefined && a.file === b.file && a.key === b.key && a.sha256 === b.sha256 && a.size === b.size;
}

interface OpenedState {
  full: Map<string, ProbeEntry> | undefined;
  indexed: Map<string, IndexedProbe>;
  indexSha256: string | undefined;
  indexStat: string | undefined;
  stats: Map<string, string>;
  memoWrittenNs: bigint | undefined;
  memoDirty: boolean;
}

/**
 * index.json and the memo, as a repository is opened. The memo's entries
 * stand for index.json when its stat is unchanged and not racy, or when its
 * bytes hash to what the memo recorded; otherwise index.json is parsed.
 */
function openState(root: string, options: RepositoryOptions): OpenedState {
  const memo = options.verifyAll === true || options.memo === undefined ? undefined : readRepositoryMemo(options.memo);
  const file = join(root, INDEX_FILE);
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
      throw new FalcoProbesError('config', `cannot read the repository index: ${(err as Error).message}`, { location: { file } });
    return {
      full: new Map(),
      indexed: new Map(),
      indexSha256: undefined,
      indexStat: undefined,
      stats: new Map(),
      memoWrittenNs: memo?.writtenNs,
      memoDirty: memo !== undefined,
    };
  }
  let bytes: Buffer | undefined;
  let stat: string;
  try {
    const st = fstatSync(fd, { bigint: true });
    stat = statKey(st);
    if (!(memo && memo.indexStat === stat && !isRacy(st, memo.writtenNs))) bytes = readAll(fd, Number(st.size));
  } catch (err) {
    throw new FalcoProbesError('config', `cannot read the repository index: ${(err as Error).message}`, { location: { file } });
  } finally {
    closeSync(fd);
  }
  const stats = new Map<string, string>();
  if (memo && bytes === undefined) {
    for (const e of memo.entries.values()) if (e.stat !== undefined) stats.set(e.file, e.stat);
    return {
      full: undefined,
      indexed: memo.entries,
      indexSha256: memo.indexSha256,
      indexStat: stat,
      stats,
      memoWrittenNs: memo.writtenNs,
      memoDirty: false,
    };
  }
  const sha256 = createHash('sha256').update(bytes!).digest('hex');
  if (memo && sha256 === memo.indexSha256) {
    for (const e of memo.entries.values()) if (e.stat !== undefined) stats.set(e.file, e.stat);
    return {
      full: undefined,
      indexed: memo.entries,
      indexSha256: sha256,
      indexStat: stat,
      stats,
      memoWrittenNs: memo.writtenNs,
      memoDirty: true,
    };
  }
  const index = parseIndexText(bytes!.toString('utf8'), file);
  const full = new Map(index.probes.map((p) => [p.file, p]));
  // Stats the memo has for files whose index entry is unchanged still hold.
  if (memo) for (const e of memo.entries.values()) if (e.stat !== undefined && sameIndexed(e, full.get(e.file))) stats.set(e.file, e.stat);
  return { full, indexed: new Map(full), indexSha256: sha256, indexStat: stat, stats, memoWrittenNs: memo?.writtenNs, memoDirty: true };
}

function readAll(fd: number, size: number): Buffer {
  const bytes = Buffer.allocUnsafe(size);
  let at = 0;
  while (at < size) {
    const n = readSync(fd, bytes, at, size - at, at);
    if (n === 0) return bytes.subarray(0, at);
    at += n;
  }
  return bytes;
}

/**
 * The sha256, size and stat of a published file, or undefined when it is
 * not a file. The stat is taken on the open file before it is read, so a
 * change while it is read shows as another stat next time. A size other
 * than the index's proves the bytes differ without hashing. Read with
 * synchronous calls: planning is the only work at that moment, and for
 * thousands of small files that is several times faster than a round trip
 * through the thread pool per call (bench/noop.ts).
 */
function hashFile(path: string, expectedSize: number): { sha256: string | undefined; size: number; stat?: string } | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
  try {
    const st = fstatSync(fd, { bigint: true });
    if (!st.isFile()) return undefined;
    const size = Number(st.size);
    if (size !== expectedSize) return { sha256: undefined, size };
    const hash = createHash('sha256');
    const buffer = Buffer.allocUnsafe(Math.min(Math.max(size, 1), CHUNK));
    let at = 0;
    for (;;) {
      const n = readSync(fd, buffer, 0, buffer.length, at);
      if (n === 0) break;
      hash.update(n === buffer.length ? buffer : buffer.subarray(0, n));
      at += n;
    }
    // Grown or shrunk while read: the bytes hashed are not the bytes of this stat, so record nothing.
    return at === size ? { sha256: hash.digest('hex'), size, stat: statKey(st) } : { sha256: hash.digest('hex'), size: at };
  } finally {
    closeSync(fd);
  }
}

const CHUNK = 1 << 20;
