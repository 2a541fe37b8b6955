import { canonicalJson, jsonString, sha256Hex } from '../util/hash.js';
import type { Arch, KernelDescriptor, PackageRef } from '../config/types.js';
import { comparePackages, orderedDescriptor } from '../lockfile/lockfile.js';
import type { BuilderPin, DriverKind, DriverPin, ResolvedDriver } from './types.js';

// A target's key: sha256 of the canonical JSON of everything that decides
// the bytes of its probe, and of nothing else (docs/KEYS.md lists the
// fields). Canonical JSON sorts object keys and drops whitespace; package
// lists are sorted here so that their order in a lockfile does not count.

/**
 * The version of each build recipe. Bump one when its steps change in a way
 * that can change the object it produces: every key built with it moves.
 */
export const RECIPE_VERSIONS: Readonly<Record<DriverPin['recipe'], number>> = {
  kbuild: 1,
  'falco-libs': 1,
};

export interface KeyInputs {
  recipeVersion: number;
  kernel: KernelDescriptor;
  osRelease: Record<string, string>;
  driver: {
    name: string;
    version: string;
    recipe: DriverPin['recipe'];
    bpfDir?: string;
    object?: string;
    kmodDir?: string;
    module?: string;
    sourceSha256: string;
  };
  builder: Record<string, string | undefined>;
  kind: DriverKind;
  arch: Arch;
}

/**
 * The packages that enter a key: all but the bootable image. Only
 * the load test reads the image (and keys its verdicts by the image's sha256);
 * a new image package (Debian moving a kernel from `-unsigned` to the signed
 * one) changes no artifact, so it moves no key.
 */
export function packagesForKey(k: Pick<KernelDescriptor, 'packages'>): PackageRef[] {
  return k.packages.filter((p) => p.role !== 'image');
}

/** The descriptor as it enters the key: every field, its build packages in the lockfile's order (lockfile.ts). */
function kernelForKey(k: KernelDescriptor): KernelDescriptor {
  return orderedDescriptor(k, packagesForKey(k));
}

// Not the source URL or path (where the bytes come from), not `kinds` or
// `kernels` (which targets exist): only what the build of this kind reads.
// A probe's key names its bpfDir and object, a module's its kmodDir and
// module, so adding a kind to a driver moves no key of the other kind.
function driverForKey(driver: ResolvedDriver, kind: DriverKind): KeyInputs['driver'] {
  return {
    name: driver.name,
    version: driver.version,
    recipe: driver.recipe,
    ...(kind === 'bpf' ? { bpfDir: driver.bpfDir, object: driver.object } : { kmodDir: driver.kmodDir, module: driver.module }),
    sourceSha256: driver.sourceSha256,
  };
}

// A probe is compiled by clang, a module by gcc: each key names only its compiler.
function builderForKey(builder: BuilderPin, kind: DriverKind): Record<string, string | undefined> {
  const compiler = kind === 'bpf' ? { clang: builder.clang } : { gcc: builder.gcc ?? '' };
  return builder.kind === 'host'
    ? { kind: 'host', ...compiler }
    : { kind: 'docker', image: builder.image, ...compiler, ...(builder.release !== undefined ? { release: builder.release } : {}) };
}

export interface KeyArgs {
  kernel: KernelDescriptor;
  osRelease: Record<string, string>;
  driver: ResolvedDriver;
  builder: BuilderPin;
  kind: DriverKind;
}

export function keyInputs(args: KeyArgs): KeyInputs {
  const { kernel, osRelease, driver, builder, kind } = args;
  return {
    recipeVersion: RECIPE_VERSIONS[driver.recipe],
    kernel: kernelForKey(kernel),
    osRelease: { ...osRelease },
    driver: driverForKey(driver, kind),
    builder: builderForKey(builder, kind),
    kind,
    arch: kernel.machine,
  };
}

export function keyOf(inputs: KeyInputs): string {
  return sha256Hex(canonicalJson(inputs));
}

/** One target's key (createKeyer's encoder, for a single target). */
export function targetKey(args: KeyArgs): string {
  return createKeyer()(args);
}

/**
 * The key encoder, the only one: generate, the graph's memo and the builders
 * (a builder chosen at build time) all key through it. The canonical JSON of
 * each part is computed once (a kernel descriptor is shared by all its
 * drivers, os-release by a whole lockfile) and the parts are joined in
 * canonicalJson's key order (arch, builder, driver, kernel, kind, osRelease,
 * recipeVersion). `keyInputs` is the same document as an object, to show
 * and explain; test/graph-key.test.ts holds the hash of its canonical JSON
 * equal to the encoder's.
 */
export function createKeyer(): (args: KeyArgs) => string {
  // The descriptor of the last kernel: a kernel's targets (its drivers and kinds) are keyed one after the other,
  // and a descriptor kept for every kernel of a fleet would be megabytes of strings for the collector to move.
  let lastKernel: KernelDescriptor | undefined;
  let lastBody = '';
  const ids = new WeakMap<object, number>();
  let nextId = 0;
  const idOf = (o: object) => {
    let id = ids.get(o);
    if (id === undefined) ids.set(o, (id = nextId++));
    return id;
  };
  // Everything before the descriptor depends on (arch, builder, driver), everything after it on
  // (kind, os-release, recipe): each is built once and the hash takes three pieces per target.
  // The pieces are found by the identity of their objects (builder pins made per target for
  // compiler images are found by their contents), without building a string per target.
  const prefixes = new Map<string, string>();
  const suffixes = new Map<string, string>();
  // The last few (builder, driver, kind, machine, os-release) seen: a kernel's targets take turns among them.
  type Seen = {
    builder: BuilderPin;
    driver: ResolvedDriver;
    kind: DriverKind;
    machine: string;
    osRelease: object;
    prefix: string;
    suffix: string;
  };
  const recent: Seen[] = [];
  return (args) => {
    const { kernel, osRelease, driver, builder, kind } = args;
    let seen: Seen | undefined;
    for (const r of recent)
      if (r.builder === builder && r.driver === driver && r.kind === kind && r.machine === kernel.machine && r.osRelease === osRelease) {
        seen = r;
        break;
      }
    if (seen === undefined) {
      const pre = `${kernel.machine}/${idOf(builder)}/${builder.kind === 'docker' ? (builder.release ?? '') : ''}/${idOf(driver)}/${kind}`;
      let prefix = prefixes.get(pre);
      if (prefix === undefined) {
        prefix = `{"arch":${JSON.stringify(kernel.machine)},"builder":${canonicalJson(builderForKey(builder, kind))},"driver":${canonicalJson(driverForKey(driver, kind))},"kernel":`;
        prefixes.set(pre, prefix);
      }
      const suf = `${kind}/${idOf(osRelease)}/${driver.recipe}`;
      let suffix = suffixes.get(suf);
      if (suffix === undefined) {
        suffix = `,"kind":${JSON.stringify(kind)},"osRelease":${canonicalJson(osRelease)},"recipeVersion":${JSON.stringify(RECIPE_VERSIONS[driver.recipe])}}`;
        suffixes.set(suf, suffix);
      }
      seen = { builder, driver, kind, machine: kernel.machine, osRelease, prefix, suffix };
      if (recent.unshift(seen) > 8) recent.pop();
    }
    if (kernel !== lastKernel) {
      lastBody = kernelCanonicalJson(kernel);
      lastKernel = kernel;
    }
    return sha256Hex(seen.prefix + lastBody + seen.suffix);
  };
}

const str = jsonString;

/**
 * `canonicalJson(kernelForKey(k))` written out field by field (keys in code
 * unit order, undefined members left out): the descriptor is the bulk of
 * every key, and this avoids the generic encoder's sorting and copying for
 * each of ten thousand kernels. test/graph-key.test.ts compares the two.
 */
export function kernelCanonicalJson(k: KernelDescriptor): string {
  // packagesForKey without a copy when there is no image package (a lockfile's build-only kernels).
  let forKey: readonly PackageRef[] = k.packages;
  for (const p of k.packages)
    if (p.role === 'image') {
      forKey = packagesForKey(k);
      break;
    }
  // Lockfiles list packages in this order already (serializeLockfile): check before sorting.
  for (let i = 1; i < forKey.length; i++)
    if (comparePackages(forKey[i - 1]!, forKey[i]!) > 0) {
      forKey = [...forKey].sort(comparePackages);
      break;
    }
  // One string grown piece by piece: no array of the packages' strings to join.
  let out =
    (k.flavour !== undefined ? `{"flavour":${str(k.flavour)},` : '{') +
    `"kernelVersion":${str(k.kernelVersion)},"machine":${str(k.machine)},"name":${str(k.name)},"packages":[`;
  for (let i = 0; i < forKey.length; i++) {
    const p = forKey[i]!;
    out +=
      `${i === 0 ? '' : ','}{"name":${str(p.name)},"path":${str(p.path)},"repository":${str(p.repository)}` +
      (p.role !== undefined ? `,"role":${str(p.role)}` : '') +
      `,"sha256":${str(p.sha256)},"size":${str(p.size)},"version":${str(p.version)}}`;
  }
  return `${out}],"release":${str(k.release)},"targetId":${str(k.targetId)},"version":${str(k.version)}}`;
}
