import { resolve as resolvePath } from 'node:path';
import { FalcoProbesError } from '../util/errors.js';
import { isUnpinnedRemote, type LoadedDrivers } from '../config/drivers.js';
import { treeHash } from './tree-hash.js';
import type { DriverPin, ResolvedDriver } from './types.js';

// A driver's content identity, the `sourceSha256` that enters every key
// built from it: a tarball's pinned sha256, or the tree hash of a local
// directory. A tarball without a pin has no identity, so no key and no
// targets: it is reported, not guessed.

export interface DriverIdentities {
  resolved: ResolvedDriver[];
  /** Remote drivers without a sha256 (run `falco-probes pin`). */
  unpinned: DriverPin[];
}

export async function resolveDriverIdentities(loaded: LoadedDrivers, projectRoot: string): Promise<DriverIdentities> {
  const resolved: ResolvedDriver[] = [];
  const unpinned: DriverPin[] = [];
  for (const [i, pin] of loaded.drivers.entries()) {
    if (isUnpinnedRemote(pin)) {
      unpinned.push(pin);
      continue;
    }
    const source = pin.source;
    if ('url' in source) {
      resolved.push({ ...pin, sourceSha256: source.sha256! });
      continue;
    }
    try {
      resolved.push({ ...pin, sourceSha256: await treeHash(resolvePath(projectRoot, source.path), source.path) });
    } catch (err) {
      if (err instanceof FalcoProbesError)
        throw new FalcoProbesError(err.kind, `driver ${pin.name}: ${err.message}`, {
          location: loaded.where(['drivers', i, 'source', 'path']),
          hint: err.hint ?? 'source.path is relative to the project root; create the directory or fix the path',
        });
      throw err;
    }
  }
  return { resolved, unpinned };
}
