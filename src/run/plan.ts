import type { Target } from '../graph/types.js';
import type { FileState, IndexedProbe } from '../repository/local.js';

// Out of date means (issue 4, nothing else): the index has no probe for the
// target's file, or it was built for another key, or the file is missing,
// or its sha256 is not the index's. The last one is git's answer: a file
// whose stat is unchanged since it was read and found to hold the index's
// bytes is not read again (repository/memo.ts; `--verify-all` reads every
// one). bench/noop.ts measures what that costs.

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
  indexedProbe(file: string): IndexedProbe | undefined;
  fileState(expected: IndexedProbe): FileState | undefined;
}

/**
 * One target after the other: files are stat'ed and, when they must be,
 * hashed with synchronous calls (LocalRepository.fileState), so running them
 * concurrently would only add scheduling cost; with 2 cores a large file's
 * hash is CPU-bound anyway.
 */
export async function planTargets(targets: readonly Target[], repo: RepositoryView): Promise<PlannedTarget[]> {
  const plan: PlannedTarget[] = new Array(targets.length);
  for (let i = 0; i < targets.length; i++) plan[i] = planOne(targets[i]!, repo);
  return plan;
}

function planOne(target: Target, repo: RepositoryView): PlannedTarget {
  const entry = repo.indexedProbe(target.output);
  if (!entry) return { target, reason: 'no-probe' };
  if (entry.key !== target.key)
    return { target, reason: 'key-changed', detail: `index has key ${entry.key.slice(0, 12)}, target has ${target.key.slice(0, 12)}` };
  const found = repo.fileState(entry);
  if (!found) return { target, reason: 'file-missing', detail: target.output };
  if (found.sha256 !== entry.sha256 || found.size !== entry.size)
    return {
      target,
      reason: 'file-corrupt',
      detail: `${found.sha256 === undefined ? 'size' : `sha256 ${found.sha256.slice(0, 12)},`} ${found.size} bytes; index says sha256 ${entry.sha256.slice(0, 12)}, ${entry.size} bytes`,
    };
  return { target };
}
