import { resolve as resolvePath } from 'node:path';
import { driversPathFor, loadDrivers } from '../config/drivers.js';
import type { Logger } from '../util/log.js';
import { resolveDriverIdentities } from './driver-identity.js';
import { checkLockfileFresh, findLockfiles, loadLockfile, type LoadedLockfile } from './lockfiles.js';
import { buildTargets } from './targets.js';
import type { BuilderPin, DriverPin, ResolvedDriver, Target } from './types.js';

// The build graph of a project: every lockfile under kernels/, the driver
// and builder pins of kernels/drivers.yaml, and the targets they make. Pure
// with respect to its inputs: the same files give the same targets, keys
// and order. Everything is validated before anything is returned.

export interface BuildGraph {
  targets: Target[];
  lockfiles: LoadedLockfile[];
  /** Drivers that have targets (their source has a content identity). */
  drivers: ResolvedDriver[];
  /** Remote drivers without a sha256: no key, so no targets until `falco-probes pin`. */
  unpinned: DriverPin[];
  builder: BuilderPin;
  /** Absolute path of kernels/drivers.yaml. */
  driversFile: string;
}

export async function loadBuildGraph(projectRoot: string, options: { logger?: Logger } = {}): Promise<BuildGraph> {
  const root = resolvePath(projectRoot);
  const kernelsDir = resolvePath(root, 'kernels');
  const pins = await loadDrivers(driversPathFor(kernelsDir));
  const identities = await resolveDriverIdentities(pins, root);
  for (const d of identities.unpinned)
    options.logger?.info(`notice: driver ${d.name} ${d.version} has no sha256 pin; it gets no targets (run \`falco-probes pin ${d.name}\`)`);
  const lockfiles: LoadedLockfile[] = [];
  for (const file of await findLockfiles(kernelsDir)) {
    const loaded = await loadLockfile(file, root);
    await checkLockfileFresh(loaded, root);
    lockfiles.push(loaded);
  }
  const targets = buildTargets({ lockfiles, drivers: identities.resolved, allDrivers: pins.drivers, builder: pins.builder });
  return { targets, lockfiles, drivers: identities.resolved, unpinned: identities.unpinned, builder: pins.builder, driversFile: pins.file };
}
