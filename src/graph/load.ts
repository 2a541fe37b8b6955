import { readFile } from 'node:fs/promises';
import { basename, relative, resolve as resolvePath } from 'node:path';
import { driversPathFor, loadDrivers } from '../config/drivers.js';
import { sha256Hex } from '../util/hash.js';
import type { Logger } from '../util/log.js';
import { resolveDriverIdentities } from './driver-identity.js';
import { graphCacheEnabled, graphCacheKey, readGraphCache, writeGraphCache } from './graph-cache.js';
import { checkedLockfile, checkLockfileFresh, findLockfiles, loadLockfile, type LoadedLockfile } from './lockfiles.js';
import { buildTargets } from './targets.js';
import type { BuilderPin, CompilerImagePin, DriverPin, ResolvedDriver, Target } from './types.js';

// The build graph of a project: every lockfile under kernels/, the driver
// and builder pins of kernels/drivers.yaml, and the targets they make. Pure
// with respect to its inputs: the same files give the same targets, keys
// and order. Everything is validated before anything is returned. A graph
// loaded once is remembered by the content of its inputs (graph-cache.ts).

export interface BuildGraph {
  targets: Target[];
  lockfiles: LoadedLockfile[];
  /** Drivers that have targets (their source has a content identity). */
  drivers: ResolvedDriver[];
  /** Remote drivers without a sha256: no key, so no targets until `falco-probes pin`. */
  unpinned: DriverPin[];
  builder: BuilderPin;
  /** Builder images of other Debian releases (kernels/drivers.yaml `compilerImages`). */
  compilerImages: CompilerImagePin[];
  /** Absolute path of kernels/drivers.yaml. */
  driversFile: string;
}

export interface LoadOptions {
  logger?: Logger;
  /** false: read the memo but never write it (for commands that promise to write nothing, such as `generate --check`). */
  remember?: boolean;
}

export async function loadBuildGraph(projectRoot: string, options: LoadOptions = {}): Promise<BuildGraph> {
  const root = resolvePath(projectRoot);
  const kernelsDir = resolvePath(root, 'kernels');
  const pins = await loadDrivers(driversPathFor(kernelsDir));
  const identities = await resolveDriverIdentities(pins, root);
  for (const d of identities.unpinned)
    options.logger?.info(`notice: driver ${d.name} ${d.version} has no sha256 pin; it gets no targets (run \`falco-probes pin ${d.name}\`)`);
  const compilerImages = pins.compilerImages ?? [];
  const base = { drivers: identities.resolved, unpinned: identities.unpinned, builder: pins.builder, compilerImages, driversFile: pins.file };

  // Every input's bytes, read once: for the memo's key, then for the load itself on a miss.
  const files = await findLockfiles(kernelsDir);
  const read = await Promise.all(
    files.map(async (file) => ({
      file,
      relativePath: relative(root, file).split('\\').join('/'),
      bytes: await readFile(file).catch(() => undefined),
      definition: await readFile(resolvePath(kernelsDir, `${basename(file, '.lock.yaml')}.yaml`)).catch(() => undefined),
    })),
  );
  const cache = graphCacheEnabled() && read.every((r) => r.bytes !== undefined);
  const key = cache
    ? graphCacheKey({
        builder: pins.builder,
        compilerImages,
        drivers: identities.resolved,
        unpinned: identities.unpinned,
        lockfiles: read.map((r) => ({ relativePath: r.relativePath, sha256: sha256Hex(r.bytes!), definitionSha256: r.definition ? sha256Hex(r.definition) : null })),
      })
    : undefined;
  if (key) {
    const hit = await readGraphCache(root, key, {
      drivers: identities.resolved,
      builder: pins.builder,
      compilerImages,
      lockfile: (relativePath, lock) => checkedLockfile(root, relativePath, lock),
    });
    if (hit) return { ...base, ...hit };
  }

  const lockfiles: LoadedLockfile[] = [];
  for (const r of read) {
    const loaded = await loadLockfile(r.file, root, r.bytes?.toString('utf8'));
    // The lockfile's os is its file name (loadLockfile checks it), so `definition` is that OS's definition, read above.
    await checkLockfileFresh(loaded, root, r.definition);
    lockfiles.push(loaded);
  }
  const targets = buildTargets({ lockfiles, drivers: identities.resolved, allDrivers: pins.drivers, builder: pins.builder, compilerImages });
  if (key && options.remember !== false) await writeGraphCache(root, key, { lockfiles, drivers: identities.resolved, targets }, options.logger);
  return { ...base, targets, lockfiles };
}
