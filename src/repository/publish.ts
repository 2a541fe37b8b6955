import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readdir, realpath, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { KeyObject } from 'node:crypto';
import pLimit from 'p-limit';
import { FalcoProbesError } from '../util/errors.js';
import { readFileOrUndefined, writeFileIfChanged } from '../util/fs.js';
import { sha256File } from '../util/hash.js';
import { checkRelativePath } from '../util/names.js';
import type { Logger } from '../util/log.js';
import { legacyPathOf } from './falco-url.js';
import { parseIndexText, readIndex, serializeIndex } from './index-file.js';
import { LOCK_FILE } from './local.js';
import { acquireLock, type HeldLock, type LockHolder } from './lock.js';
import { parseSignatureFile, signRepository, signatureStatement } from './signature.js';
import { parseSums, publishedFiles, renderSums } from './sums.js';
import { INDEX_FILE, INDEX_VERSION, SIGNATURE_FILE, SUMS_FILE, type ProbeEntry, type RepositoryIndex } from './types.js';

// Publish: merge a local repository into a target directory that a static
// host, a bucket sync or a Pages site serves.
//
// 1. Under the target's lock (the same lock the runner takes), read both
//    indexes and decide every file: already there, to copy, or a conflict (a
//    different file under the same name). Any conflict stops here: nothing
//    changed.
// 2. Copy each new file into a private staging folder inside the target,
//    hashing while copying; a byte that differs from the source index stops
//    here, the staging folder is removed: nothing changed.
// 3. Rename the staged files into place (each rename is atomic).
// 4. Only then write SHA256SUMS, index.json and index.json.sig, each
//    atomically and only when their bytes change, so a reader never sees an
//    index that names a missing file and a second publish touches nothing.

export interface PublishOptions {
  from: string;
  to: string;
  /** ed25519 private key; without it the target must be unsigned. */
  signingKey?: KeyObject;
  /** Also keep `<driver version>/<file>` copies of x86_64 probes for pre-arch loaders (default true). */
  legacyLayout?: boolean;
  /** How long to wait for another publisher's lock; 0 fails at once. */
  lockWaitMs?: number;
  /**
   * Hold back artifacts whose recorded load-test verdict is one
   * of these (`publish --refuse refused`): they stay unpublished and are
   * listed in the report. Artifacts already published are never removed.
   */
  refuseVerdicts?: readonly string[];
  logger: Logger;
}

export interface PublishReport {
  /** Repository-relative paths copied (probes and legacy copies). */
  copied: string[];
  /** Files found in the target without an index entry, with the right bytes: indexed now. */
  adopted: string[];
  /** Same bytes under a new key: only the index entry changed. */
  rekeyed: string[];
  /** Indexed in the target but missing or damaged there: copied again with the indexed bytes. */
  restored: string[];
  /** Held back by `refuseVerdicts`, with their verdict: not published. */
  held?: { file: string; verdict: string }[];
  /** Source entries already published as they are. */
  unchanged: number;
  /** Which of index.json, SHA256SUMS, index.json.sig were (re)written. */
  written: string[];
  signed: boolean;
}

interface CopyJob {
  /** Absolute source path. */
  source: string;
  /** Repository-relative destination. */
  dest: string;
  sha256: string;
  size: number;
}

const STAGING_PREFIX = '.publish-staging-';
/** Files copied into staging at once. */
const COPY_CONCURRENCY = 8;

function conflictLine(path: string, published: string, incoming: string): string {
  return `  ${path}: published sha256 ${published}, new sha256 ${incoming}`;
}

async function statOrUndefined(path: string) {
  return stat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
    throw err;
  });
}

async function hashOrUndefined(path: string): Promise<{ sha256: string; size: number } | undefined> {
  const st = await statOrUndefined(path);
  if (!st) return undefined;
  if (!st.isFile()) return { sha256: 'not a regular file', size: -1 };
  return sha256File(path);
}

/** Copy with the sha256 computed from the bytes written; the destination is created new (never replaced). */
async function copyHashing(source: string, dest: string): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      size += chunk.length;
      cb(null, chunk);
    },
  });
  await pipeline(createReadStream(source), tap, createWriteStream(dest, { flags: 'wx', mode: 0o644 }));
  const fh = await open(dest, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  return { sha256: hash.digest('hex'), size };
}

async function takeLock(to: string, waitMs: number, logger: Logger): Promise<HeldLock> {
  let holder: LockHolder | undefined;
  const signal = waitMs > 0 ? AbortSignal.timeout(waitMs) : undefined;
  try {
    return await acquireLock(join(to, LOCK_FILE), {
      wait: waitMs > 0,
      command: 'falco-probes publish',
      ...(signal ? { signal } : {}),
      onWait: (h) => {
        holder = h;
        logger.info(`waiting up to ${Math.round(waitMs / 1000)} s for the lock of ${to} (held by pid ${h.pid} on ${h.host})`);
      },
    });
  } catch (err) {
    if (err instanceof FalcoProbesError && err.kind === 'lock' && waitMs === 0)
      throw new FalcoProbesError('lock', `${err.message}; nothing changed`, {
        location: err.location,
        hint: 'run again when it has finished, or wait for it with --lock-wait SECONDS',
      });
    if (signal?.aborted && !(err instanceof FalcoProbesError)) {
      throw new FalcoProbesError(
        'lock',
        `gave up after ${Math.round(waitMs / 1000)} s waiting for another publish or build to release the repository${holder ? ` (pid ${holder.pid} on ${holder.host})` : ''}; nothing changed`,
        {
          location: { file: join(to, LOCK_FILE) },
          hint: 'run again when it has finished, or raise --lock-wait',
        },
      );
    }
    throw err;
  }
}

/** Remove staging folders left by a publish that was killed (safe: we hold the lock). */
async function removeStaleStaging(to: string): Promise<void> {
  for (const name of await readdir(to)) if (name.startsWith(STAGING_PREFIX)) await rm(join(to, name), { recursive: true, force: true });
}

export async function publishRepository(options: PublishOptions): Promise<PublishReport> {
  const from = resolve(options.from);
  const to = resolve(options.to);
  const legacyLayout = options.legacyLayout ?? true;
  const { logger } = options;

  const fromStat = await statOrUndefined(from);
  if (!fromStat?.isDirectory())
    throw new FalcoProbesError('usage', 'the repository to publish from is not a directory', { location: { file: from } });
  const sourceIndexBytes = await readFileOrUndefined(join(from, INDEX_FILE));
  if (!sourceIndexBytes)
    throw new FalcoProbesError('usage', 'not found: nothing to publish', {
      location: { file: join(from, INDEX_FILE) },
      hint: 'build first (falco-probes build), or point --from at a local repository',
    });
  const source = parseIndexText(sourceIndexBytes.toString('utf8'), join(from, INDEX_FILE));

  await mkdir(to, { recursive: true });
  if ((await realpath(from)) === (await realpath(to)))
    throw new FalcoProbesError('usage', '--from and --to are the same directory', { location: { file: to } });

  const lock = await takeLock(to, options.lockWaitMs ?? 60_000, logger);
  try {
    await removeStaleStaging(to);
    const target = await readIndex(to);
    const existingSums = await readFileOrUndefined(join(to, SUMS_FILE));
    const existingSumsMap = existingSums
      ? safeParseSums(existingSums.toString('utf8'), join(to, SUMS_FILE), logger)
      : new Map<string, string>();
    const existingSig = await readFileOrUndefined(join(to, SIGNATURE_FILE));

    const merged = new Map<string, ProbeEntry>(target.probes.map((p) => [p.file, p]));
    const report: PublishReport = { copied: [], adopted: [], rekeyed: [], restored: [], unchanged: 0, written: [], signed: false };
    const conflicts: string[] = [];
    const jobs: CopyJob[] = [];

    const refuse = new Set(options.refuseVerdicts ?? []);
    for (const entry of [...source.probes].sort((a, b) => (a.file < b.file ? -1 : 1))) {
      checkFalcoLayout(entry, join(from, INDEX_FILE));
      const verdict = entry.load?.verdict;
      if (verdict !== undefined && refuse.has(verdict) && !merged.has(entry.file)) {
        (report.held ??= []).push({ file: entry.file, verdict });
        logger.warn(
          `${entry.file}: not published, its load test says ${verdict}${entry.load?.message ? ` (${entry.load.message.split('\n')[0]})` : ''}`,
        );
        continue;
      }
      const published = merged.get(entry.file);
      const destAbs = join(to, checkRelativePath(entry.file));
      const sourceAbs = join(from, entry.file);
      let present: boolean;
      if (published) {
        if (published.sha256 !== entry.sha256) {
          conflicts.push(conflictLine(entry.file, published.sha256, entry.sha256));
          continue;
        }
        // The index is trusted for the bytes (verify hashes them); a file that is
        // missing or has the wrong size is not what was published, and gets the
        // indexed bytes back from the source.
        const st = await statOrUndefined(destAbs);
        present = st?.isFile() === true && st.size === published.size;
        if (!present) {
          report.restored.push(entry.file);
          logger.warn(`${destAbs}: ${st ? 'damaged (wrong size)' : 'missing'}; restoring the published bytes`);
        }
        if (published.key !== entry.key) report.rekeyed.push(entry.file);
        else if (present) report.unchanged++;
      } else {
        const found = await hashOrUndefined(destAbs);
        if (found && found.sha256 !== entry.sha256) {
          conflicts.push(`${conflictLine(entry.file, found.sha256, entry.sha256)} (a file without an index entry)`);
          continue;
        }
        present = found !== undefined;
        if (present) report.adopted.push(entry.file);
      }
      if (!present) jobs.push({ source: sourceAbs, dest: entry.file, sha256: entry.sha256, size: entry.size });

      const legacy = legacyLayout ? legacyPathOf(entry) : undefined;
      if (legacy !== undefined) {
        const legacyAbs = join(to, legacy);
        const listed = existingSumsMap.get(legacy) === entry.sha256;
        const st = await statOrUndefined(legacyAbs);
        if (!st) jobs.push({ source: sourceAbs, dest: legacy, sha256: entry.sha256, size: entry.size });
        else if (!(listed && st.isFile() && st.size === entry.size)) {
          const found = await hashOrUndefined(legacyAbs);
          if (found && found.sha256 !== entry.sha256)
            conflicts.push(`${conflictLine(legacy, found.sha256, entry.sha256)} (the no-arch copy of ${entry.file})`);
        }
      }
      merged.set(entry.file, published?.load !== undefined && entry.load === undefined ? { ...entry, load: published.load } : entry);
    }

    if (conflicts.length) {
      throw new FalcoProbesError(
        'checksum',
        `refusing to replace ${conflicts.length} published file(s) with different bytes; nothing changed`,
        {
          location: { file: to },
          details: conflicts.join('\n'),
          hint: 'a published probe never changes; if an input changed without changing the file name, bump the driver version or remove the old probe and its index entry by hand',
        },
      );
    }

    const mergedIndex: RepositoryIndex = { version: INDEX_VERSION, probes: [...merged.values()] };
    const indexText = serializeIndex(mergedIndex);
    const sumsText = renderSums(publishedFiles(mergedIndex, legacyLayout));
    const indexBytes = Buffer.from(indexText);
    const sumsBytes = Buffer.from(sumsText);
    const currentIndex = await readFileOrUndefined(join(to, INDEX_FILE));
    const metadataChanges = !currentIndex?.equals(indexBytes) || !existingSums?.equals(sumsBytes);

    // Decide about the signature before touching anything.
    let signatureText: string | undefined;
    if (options.signingKey) {
      signatureText = signRepository(options.signingKey, indexBytes, sumsBytes);
    } else if (existingSig && (metadataChanges || !signatureStillValid(existingSig, indexBytes, sumsBytes))) {
      throw new FalcoProbesError(
        'usage',
        `the target repository is signed (${SIGNATURE_FILE}); publishing without --key would leave a stale signature. Nothing changed`,
        {
          location: { file: join(to, SIGNATURE_FILE) },
          hint: 'pass --key PREFIX.key (the key that signed it, or a new one: clients then need the new public key)',
        },
      );
    }

    await copyAll(jobs, to, report, logger);

    if (await writeFileIfChanged(join(to, SUMS_FILE), sumsBytes)) report.written.push(SUMS_FILE);
    if (await writeFileIfChanged(join(to, INDEX_FILE), indexBytes)) report.written.push(INDEX_FILE);
    if (signatureText !== undefined) {
      if (await writeFileIfChanged(join(to, SIGNATURE_FILE), signatureText)) report.written.push(SIGNATURE_FILE);
      report.signed = true;
    } else if (!existingSig) {
      logger.warn(`${to} is not signed: clients cannot verify it (falco-probes keygen, then publish --key)`);
    }
    return report;
  } finally {
    await lock.release();
  }
}

/**
 * Every probe sits at `<driver version>/<arch>/<file>` (the runner writes no
 * other shape); holding the source to it keeps a probe's path and its no-arch
 * copy's path from ever meeting another entry's.
 */
function checkFalcoLayout(entry: ProbeEntry, indexFile: string): void {
  const parts = entry.file.split('/');
  const name = parts[2] ?? '';
  if (
    parts.length !== 3 ||
    parts[0] !== entry.driverVersion ||
    parts[1] !== entry.arch ||
    !name.startsWith(`${entry.driver}_`) ||
    !/\.k?o$/.test(name)
  )
    throw new FalcoProbesError(
      'input',
      `index entry "${entry.file}" is not in Falco's layout <driver version>/<arch>/<driver>_<target>_<release>_<kernelversion>.<o|ko> (driver ${entry.driver}, version ${entry.driverVersion}, arch ${entry.arch}); nothing changed`,
      {
        location: { file: indexFile },
      },
    );
}

function safeParseSums(text: string, file: string, logger: Logger): Map<string, string> {
  try {
    return parseSums(text, file);
  } catch (err) {
    // It is rewritten from the index below; a damaged one only means legacy copies get hashed.
    logger.warn(`${file}: ${(err as Error).message}; it will be rewritten`);
    return new Map();
  }
}

/** Whether the existing signature file already signs exactly these bytes (any key). */
function signatureStillValid(sigBytes: Buffer, indexBytes: Buffer, sumsBytes: Buffer): boolean {
  try {
    return parseSignatureFile(sigBytes.toString('utf8'), SIGNATURE_FILE).statement === signatureStatement(indexBytes, sumsBytes);
  } catch {
    return false;
  }
}

async function copyAll(jobs: CopyJob[], to: string, report: PublishReport, logger: Logger): Promise<void> {
  if (!jobs.length) return;
  const staging = join(to, `${STAGING_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(staging);
  try {
    // Stage and verify everything first: a bad byte anywhere leaves the target as it was.
    // Several copies at once, so that their fsyncs overlap.
    const limit = pLimit(COPY_CONCURRENCY);
    const settled = await Promise.allSettled(
      jobs.map((job, i) =>
        limit(async () => {
          const file = join(staging, String(i));
          let got;
          try {
            got = await copyHashing(job.source, file);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === 'ENOENT')
              throw new FalcoProbesError('input', `the source repository's index names a file that is not there; nothing changed`, {
                location: { file: job.source },
              });
            throw err;
          }
          if (got.sha256 !== job.sha256 || got.size !== job.size)
            throw new FalcoProbesError(
              'checksum',
              `sha256 ${got.sha256} (${got.size} bytes) differs from the source index (sha256 ${job.sha256}, ${job.size} bytes); nothing changed`,
              {
                location: { file: job.source },
                hint: 'the local repository is damaged: rebuild that probe (falco-probes build) before publishing',
              },
            );
          return { file, dest: job.dest };
        }),
      ),
    );
    // Every copy has finished before the staging folder is removed; the first failure is the one reported.
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const staged = settled.map((r) => (r as PromiseFulfilledResult<{ file: string; dest: string }>).value);
    for (const s of staged) {
      const dest = join(to, s.dest);
      await mkdir(dirname(dest), { recursive: true });
      await rename(s.file, dest);
      report.copied.push(s.dest);
      logger.debug(`published ${s.dest}`);
    }
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}
