import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { sha256File } from '../util/hash.js';
import type { Target } from '../graph/types.js';
import type { ProbeEntry } from '../repository/types.js';

// Out of date means (issue 4, nothing else, no timestamps): the index has no
// probe for the target's file, or it was built for another key, or the file
// is missing, or its sha256 is not the index's. Checking the last one means
// hashing every published probe; bench/noop.ts measures what that costs.

export type StaleReason = 'no-probe' | 'key-changed' | 'file-missing' | 'file-corrupt';

export const REASON_TEXT: Record<StaleReason, string> = {
  'no-probe': 'no probe in the repository',
  'key-changed': 'key changed',
  'file-missing': 'probe file missing',
  'file-corrupt': 'probe file corrupt (sha256 differs from the index)',
};

export interface PlannedTarget {
  target: Target;
  /** Undefined when the target is up to date. */
  reason?: StaleReason;
  /** Extra words for --explain (old key, the sha256 found). */
  detail?: string;
}

export interface RepositoryView {
  entry(file: string): ProbeEntry | undefined;
  pathOf(file: string): string;
}

/**
 * One target after the other: small files are hashed with synchronous calls
 * (see hashProbe), so running them concurrently would only add scheduling
 * cost; with 2 cores a large file's hash is CPU-bound anyway.
 */
export async function planTargets(targets: readonly Target[], repo: RepositoryView): Promise<PlannedTarget[]> {
  const plan: PlannedTarget[] = new Array(targets.length);
  for (let i = 0; i < targets.length; i++) plan[i] = await planOne(targets[i]!, repo);
  return plan;
}

async function planOne(target: Target, repo: RepositoryView): Promise<PlannedTarget> {
  const entry = repo.entry(target.output);
  if (!entry) return { target, reason: 'no-probe' };
  if (entry.key !== target.key) return { target, reason: 'key-changed', detail: `index has key ${entry.key.slice(0, 12)}, target has ${target.key.slice(0, 12)}` };
  const found = await hashProbe(repo.pathOf(target.output), entry.size);
  if (!found) return { target, reason: 'file-missing', detail: target.output };
  if (found.sha256 !== entry.sha256 || found.size !== entry.size)
    return {
      target,
      reason: 'file-corrupt',
      detail: `${found.sha256 === undefined ? 'size' : `sha256 ${found.sha256.slice(0, 12)},`} ${found.size} bytes; index says sha256 ${entry.sha256.slice(0, 12)}, ${entry.size} bytes`,
    };
  return { target };
}

/** Files up to this size are read whole, synchronously; larger ones are streamed. */
const WHOLE_READ_LIMIT = 16 * 1024 * 1024;

/**
 * The sha256 and size of a published probe, or undefined when it is not a
 * file. A size other than the index's proves the bytes differ without
 * hashing (sha256 undefined then). Small files are read with synchronous
 * calls: planning is the only work at that moment, and for thousands of
 * small files that is several times faster than a round trip through the
 * thread pool per call (bench/noop.ts).
 */
async function hashProbe(path: string, expectedSize: number): Promise<{ sha256: string | undefined; size: number } | undefined> {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
  let size: number;
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return undefined;
    size = st.size;
    if (size !== expectedSize) return { sha256: undefined, size };
    if (size <= WHOLE_READ_LIMIT) {
      const bytes = Buffer.allocUnsafe(size);
      let at = 0;
      while (at < size) {
        const n = readSync(fd, bytes, at, size - at, at);
        if (n === 0) break; // truncated while reading: hash what is there; it will not match
        at += n;
      }
      return { sha256: createHash('sha256').update(bytes.subarray(0, at)).digest('hex'), size: at };
    }
  } finally {
    closeSync(fd);
  }
  return sha256File(path);
}
