import type { Target } from '../graph/types.js';
import type { ProbeEntry, RepositoryIndex } from './types.js';

// `is-uploaded`: answered from the index alone (no kernel package is
// downloaded: the lockfile already knows the probe's name and key). The key is
// the truth: a probe published under the target's file name but for another
// key was built from other inputs, so the target is not uploaded.

export type UploadState =
  | { state: 'published'; entry: ProbeEntry }
  /** The file is published, but for other inputs (a changed lockfile entry, driver or builder). */
  | { state: 'other-key'; entry: ProbeEntry }
  | { state: 'absent' };

export function uploadState(index: RepositoryIndex, target: Pick<Target, 'output' | 'key'>): UploadState {
  const entry = index.probes.find((p) => p.file === target.output);
  if (!entry) return { state: 'absent' };
  return entry.key === target.key ? { state: 'published', entry } : { state: 'other-key', entry };
}
