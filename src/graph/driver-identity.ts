import { resolve as resolvePath } from 'node:path';
import { FalcoProbesError } from '../util/errors.js';
import { sha256Hex } from '../util/hash.js';
import { isUnpinnedRemote, type LoadedDrivers } from '../config/drivers.js';
import { treeHash } from '../util/tree-hash.js';
import type { DriverPackage, DriverPin, DriverSource, ResolvedDriver } from './types.js';

// A driver's content identity, the `sourceSha256` that enters every key
// built from it (the key calls it that whatever the source's form):
// - a tarball pinned by `sha256`: that sha256 (of the tarball's bytes);
// - a tarball pinned by `tree`: that tree hash (falco-probes-tree-v1 of the
//   unpacked content after `strip`), the same hash a local directory with
//   the same content gets, so the same content has the same keys;
// - a Debian package: debSourceIdentity below, from the package's sha256
//   (which fixes every byte of its tree) and the folder used;
// - a local directory: its tree hash, computed here.
// Each is known without a download, so a graph loads offline. A tarball
// pinned neither way has no identity, so no key and no targets: it is
// reported, not guessed.

export interface DriverIdentities {
  resolved: ResolvedDriver[];
  /** Remote drivers without a sha256 or tree pin (run `falco-probes pin`). */
  unpinned: DriverPin[];
}

/**
 * The identity of a driver in a Debian package: sha256 of the text
 * `deb:<the package's sha256>:<dir>` (dir as written in drivers.yaml,
 * `.` for the package's root). The package's sha256 fixes the bytes;
 * the folder says which part of its tree is the driver.
 */
export function debSourceIdentity(deb: Pick<DriverPackage, 'sha256'>, dir: string): string {
  return sha256Hex(`deb:${deb.sha256}:${dir}`);
}

/** The identity of a source that can be known without reading anything; undefined for a local directory (its tree hash) or an unpinned tarball. */
export function pinnedSourceIdentity(source: DriverSource): string | undefined {
  if ('url' in source) return source.sha256 ?? source.tree;
  if ('deb' in source) return debSourceIdentity(source.deb, source.dir);
  return undefined;
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
    if (!('path' in source)) {
      resolved.push({ ...pin, sourceSha256: pinnedSourceIdentity(source)! });
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
