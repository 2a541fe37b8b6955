import { readFileSync } from 'node:fs';
import { basename, relative, resolve as resolvePath } from 'node:path';
import { driversFileOf, driversPathFor, loadDrivers, parseDriversText, rememberedDrivers, type LoadedDrivers } from '../config/drivers.js';
import { sha256Hex } from '../util/hash.js';
import type { Logger } from '../util/log.js';
import { resolveDriverIdentities, type DriverIdentities } from './driver-identity.js';
import { graphCacheEnabled, graphCacheKey, readGraphMemo, writeGraphCache, type GraphMemo } from './graph-cache.js';
import {
  checkLockfileFresh,
  checkLockfileFreshSync,
  findLockfiles,
  loadLockfile,
  parseLoadedLockfile,
  type LoadedLockfile,
} from '../lockfile/load.js';
import type { BuilderPin, CompilerImagePin, DriverPin, ResolvedDriver, Target } from './types.js';
import type { ShadowedName } from './loader-name-clash.js';

// The build graph of a project: every lockfile under kernels/, the driver
// and builder pins of kernels/drivers.yaml, and the targets they make. Pure
// with respect to its inputs: the same files give the same targets, keys
// and order. Everything is validated before anything is returned. A graph
// loaded once is remembered by the content of its inputs (graph-cache.ts);
// a graph served by that memo reads a lockfile's kernels only when
// something asks for them (`lockfiles`, a target's `kernel`).

export interface BuildGraph {
  targets: Target[];
  /** Every lockfile, parsed and checked (a graph from the memo parses them on first access). */
  lockfiles: LoadedLockfile[];
  /** The OS of each lockfile, in the same order: known without parsing any. */
  oses: string[];
  /** Drivers that have targets (their source has a content identity). */
  drivers: ResolvedDriver[];
  /** Remote drivers without a sha256: no key, so no targets until `falco-probes pin`. */
  unpinned: DriverPin[];
  builder: BuilderPin;
  /** Builder images of other Debian releases (kernels/drivers.yaml `compilerImages`). */
  compilerImages: CompilerImagePin[];
  /** Absolute path of kernels/drivers.yaml. */
  driversFile: string;
  /** Kernels that yield their loader file name to another OS's kernel (loader-name-clash.ts): they have no targets. */
  shadowed: ShadowedName[];
  /** The key of the graph's inputs (graph-cache.ts), undefined when the memo is off: what other memos of generated output key on. */
  memoKey?: string;
}

export interface LoadOptions {
  logger?: Logger;
  /** false: read the memo but never write it (for commands that promise to write nothing, such as `generate --check`). */
  remember?: boolean;
}

interface InputFile {
  file: string;
  relativePath: string;
  os: string;
  bytes: Buffer | undefined;
  definition: Buffer | undefined;
}

export async function loadBuildGraph(projectRoot: string, options: LoadOptions = {}): Promise<BuildGraph> {
  const root = resolvePath(projectRoot);
  const kernelsDir = resolvePath(root, 'kernels');
  const driversFile = driversPathFor(kernelsDir);
  const cacheOn = graphCacheEnabled();
  const memo = cacheOn ? readGraphMemo(root) : undefined;

  // drivers.yaml: what the memo remembers of these bytes, or the file parsed and checked.
  let driversBytes: Buffer | undefined;
  try {
    driversBytes = readFileSync(driversFile);
  } catch {
    driversBytes = undefined; // loadDrivers reports it
  }
  const driversSha256 = driversBytes ? sha256Hex(driversBytes) : undefined;
  const remembered = memo && driversSha256 ? memo.drivers(driversSha256) : undefined;
  let pins: LoadedDrivers | undefined = remembered !== undefined ? rememberedDrivers(remembered, driversFile) : undefined;
  let identities: DriverIdentities | undefined;
  if (pins) {
    try {
      identities = await resolveDriverIdentities(pins, root);
    } catch {
      // Read the file again for an error that names its line (a remembered drivers.yaml has no positions).
      pins = undefined;
    }
  }
  // A memo whose drivers section did not serve is not used at all: the load that follows rewrites it whole.
  const memoServes = pins !== undefined;
  if (!pins || !identities) {
    pins = driversBytes ? parseDriversText(driversBytes.toString('utf8'), driversFile) : await loadDrivers(driversFile);
    identities = await resolveDriverIdentities(pins, root);
  }
  for (const d of identities.unpinned)
    options.logger?.info(
      `notice: driver ${d.name} ${d.version} has no sha256 pin; it gets no targets (run \`falco-probes pin ${d.name}\`)`,
    );
  const compilerImages = pins.compilerImages ?? [];
  const base = {
    drivers: identities.resolved,
    unpinned: identities.unpinned,
    builder: pins.builder,
    compilerImages,
    driversFile: pins.file,
  };

  // Every input's bytes, read once: for the memo's key, then for the load itself (on a miss, or when a memo's kernels are asked for).
  const files = await findLockfiles(kernelsDir);
  const read: InputFile[] = files.map((file) => {
    const os = basename(file, '.lock.yaml');
    return {
      file,
      relativePath: relative(root, file).split('\\').join('/'),
      os,
      bytes: readOrUndefined(file),
      definition: readOrUndefined(resolvePath(kernelsDir, `${os}.yaml`)),
    };
  });
  const oses = read.map((r) => r.os);
  const cache = cacheOn && driversSha256 !== undefined && read.every((r) => r.bytes !== undefined);
  const key = cache
    ? graphCacheKey({
        builder: pins.builder,
        compilerImages,
        drivers: identities.resolved,
        unpinned: identities.unpinned,
        lockfiles: read.map((r) => ({
          relativePath: r.relativePath,
          sha256: sha256Hex(r.bytes!),
          definitionSha256: r.definition ? sha256Hex(r.definition) : null,
        })),
      })
    : undefined;
  if (key && memo && memoServes) {
    const hit = fromMemo(memo, key, root, read, base);
    if (hit) return hit;
  }

  const lockfiles: LoadedLockfile[] = [];
  for (const r of read) {
    const loaded = await loadLockfile(r.file, root, r.bytes?.toString('utf8'));
    // The lockfile's os is its file name (loadLockfile checks it), so `definition` is that OS's definition, read above.
    await checkLockfileFresh(loaded, root, r.definition);
    lockfiles.push(loaded);
  }
  // Loaded only on a miss (keys, names, the loaders' rules): a graph from the memo needs none of it.
  const [{ buildTargets }, { shadowedKernels, shadowedNames }] = await Promise.all([
    import('./targets.js'),
    import('./loader-name-clash.js'),
  ]);
  const shadowedFull = shadowedKernels(lockfiles);
  const targets = buildTargets({
    lockfiles,
    drivers: identities.resolved,
    allDrivers: pins.drivers,
    builder: pins.builder,
    compilerImages,
    shadowed: shadowedFull,
  });
  const shadowed = shadowedNames(shadowedFull);
  if (key && options.remember !== false)
    await writeGraphCache(
      root,
      key,
      { yamlSha256: driversSha256!, value: driversFileOf(pins) },
      { lockfiles, drivers: identities.resolved, targets, shadowed },
      options.logger,
    );
  return { ...base, targets, lockfiles, oses, shadowed, ...(key ? { memoKey: key } : {}) };
}

function readOrUndefined(path: string): Buffer | undefined {
  try {
    return readFileSync(path);
  } catch {
    return undefined;
  }
}

/** The graph the memo holds for `key`, its lockfiles parsed (from the bytes the key was computed from) only when first asked for. */
function fromMemo(
  memo: GraphMemo,
  key: string,
  root: string,
  read: readonly InputFile[],
  base: Omit<BuildGraph, 'targets' | 'lockfiles' | 'oses' | 'shadowed'>,
): BuildGraph | undefined {
  const parsed: (LoadedLockfile | undefined)[] = new Array(read.length);
  const lockfile = (i: number): LoadedLockfile => {
    let loaded = parsed[i];
    if (!loaded) {
      const r = read[i]!;
      loaded = parseLoadedLockfile(r.file, root, r.bytes!.toString('utf8'));
      checkLockfileFreshSync(loaded, r.definition);
      parsed[i] = loaded;
    }
    return loaded;
  };
  const hit = memo.targets(key, {
    drivers: base.drivers,
    builder: base.builder,
    compilerImages: base.compilerImages,
    osOf: (i) => read[i]?.os,
    lockfile,
  });
  if (!hit) return undefined;
  let lockfiles: LoadedLockfile[] | undefined;
  return {
    ...base,
    targets: hit.targets,
    shadowed: hit.shadowed,
    memoKey: key,
    oses: read.map((r) => r.os),
    get lockfiles() {
      return (lockfiles ??= read.map((_, i) => lockfile(i)));
    },
  };
}
