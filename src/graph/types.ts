import type { Arch, KernelDescriptor } from '../config/types.js';

// The build graph's words. Stages after `graph` (run, fetch, builders,
// repository) consume these; `graph` produces them from lockfiles and pins.

export type DriverKind = 'bpf' | 'kmod';

/** A driver's source: a tarball pinned by sha256, or a directory in this repository. */
export type DriverSource =
  | { url: string; sha256?: string; /** leading path components to drop when unpacking (GitHub archives: 1) */ strip?: number }
  | { path: string };

/** Which driver to build (kernels/drivers.yaml). */
export interface DriverPin {
  /** `falco`, `example`: used in target names when several drivers apply. */
  name: string;
  /** The driver version; the repository's first path level (`9.1.0+driver`). */
  version: string;
  source: DriverSource;
  /** How to build it: `kbuild` (a plain kbuild directory) or `falco-libs` (falcosecurity/libs with driver_config.h generation). */
  recipe: 'kbuild' | 'falco-libs';
  /** Directory inside the source that holds the probe's kbuild Makefile (`driver/bpf`, `.`). */
  bpfDir: string;
  kinds: DriverKind[];
  /** Kernel releases this driver supports: min inclusive, max exclusive (x.y or x.y.z). */
  kernels?: { min?: string; max?: string };
  /** Object file kbuild produces in bpfDir (`probe.o`). */
  object: string;
}

/** A driver pin with its content identity resolved: the tarball sha256, or the tree hash of a local directory. */
export interface ResolvedDriver extends DriverPin {
  sourceSha256: string;
}

/** How probes are compiled: the host toolchain, or a Docker builder image. */
export type BuilderPin =
  | { kind: 'host'; clang: string }
  | { kind: 'docker'; image: string; clang: string };

/** One (OS, kernel, driver, kind, arch). */
export interface Target {
  /** `//probes/<os>:<name>` */
  label: string;
  /** The Please/Make target name: the kernel name, or `<kernel>-<driver>` where several drivers apply to the OS (docs/KEYS.md has the full rule). */
  name: string;
  os: string;
  kernel: KernelDescriptor;
  osRelease: Record<string, string>;
  driver: ResolvedDriver;
  builder: BuilderPin;
  kind: DriverKind;
  arch: Arch;
  /** sha256 of the canonical JSON of descriptor, driver pin, builder pin and recipe version. */
  key: string;
  /** Falco's probe file name: falco_<targetId>_<release>_<kernelversion>.o */
  probeFile: string;
  /** Repository-relative output path: <driver version>/<arch>/<probe file> */
  output: string;
}
