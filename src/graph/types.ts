import type { Arch, KernelDescriptor } from '../config/types.js';

// The build graph's words. Stages after `graph` (run, fetch, builders,
// repository) consume these; `graph` produces them from lockfiles and pins.

export type DriverKind = 'bpf' | 'kmod';

/**
 * A driver's source. Exactly one way to get the bytes, each pinned by content:
 * - a tarball by URL, pinned by the sha256 of its bytes (`sha256`) or by the
 *   tree hash of its unpacked content after `strip` (`tree`, falco-probes-tree-v1;
 *   the way Nix pins GitHub archives, whose bytes are not guaranteed stable);
 * - a package of a Debian archive (`deb`), pinned like a kernel package
 *   (path, sha256 and size from the signed index), with `dir` the folder of
 *   the package's tree that holds the driver (`usr/src/scap-0.23.2`);
 * - a directory of this repository (`path`), identified by its tree hash.
 */
export type DriverSource =
  | { url: string; sha256?: string; tree?: string; /** leading path components to drop when unpacking (GitHub archives: 1) */ strip?: number }
  | { deb: DriverPackage; dir: string }
  | { path: string };

/** A driver shipped in a package archive: found like a kernel package. */
export interface DriverPackage {
  /** The archive's name (`debian`): `--mirror debian=URL` overrides its mirrors. */
  archive: string;
  /** The archive's mirrors; when none answers (or none is given), the mirrors apt's sources name for the same URI path. */
  mirrors?: string[];
  /** The archive's URI path used to find apt's mirror for it (`/debian`). */
  aptPath?: string;
  /** Package name and version (for messages and `apt-get download`). */
  name: string;
  version: string;
  /** Path relative to the archive root (`pool/main/f/...deb`). */
  path: string;
  sha256: string;
  size: number;
}

/** Which driver to build (kernels/drivers.yaml). */
export interface DriverPin {
  /** `falco`, `scap`, `example`: used in target names when several drivers apply, and the artifact's first word. */
  name: string;
  /** The driver version; the repository's first path level (`9.1.0+driver`). */
  version: string;
  source: DriverSource;
  /**
   * How to build it: `kbuild` (a plain or already configured kbuild directory:
   * examples/probe, Debian's DKMS tree) or `falco-libs` (falcosecurity/libs,
   * configured here as its CMake would).
   */
  recipe: 'kbuild' | 'falco-libs';
  /** Directory inside the source that holds the probe's kbuild Makefile (`driver/bpf`, `.`). Required for kind bpf. */
  bpfDir?: string;
  /** Object file kbuild produces in bpfDir (`probe.o`). Required for kind bpf. */
  object?: string;
  /** Directory inside the source that holds the kernel module's kbuild Makefile (`driver`, `.`). Required for kind kmod. */
  kmodDir?: string;
  /** The module kbuild produces in kmodDir (`falco.ko`, `scap.ko`). Required for kind kmod. */
  module?: string;
  kinds: DriverKind[];
  /** Kernel releases this driver supports: min inclusive, max exclusive (x.y or x.y.z). */
  kernels?: { min?: string; max?: string };
}
/** A driver pin with its content identity resolved: the tarball sha256, or the tree hash of a local directory. */
export interface ResolvedDriver extends DriverPin {
  sourceSha256: string;
}

/**
 * How probes are compiled: the host toolchain, or a Docker builder image.
 * `clang` compiles eBPF probes; `gcc` (the first line of `gcc --version`)
 * compiles kernel modules, and must be the compiler the kernel was built
 * with (its headers' CONFIG_CC_VERSION_TEXT).
 */
export type BuilderPin =
  | { kind: 'host'; clang: string; gcc?: string }
  | { kind: 'docker'; image: string; clang: string; gcc?: string; /** A compiler image's Debian release (`trixie`); absent for the default builder image. */ release?: string };

/**
 * A compiler image (kernels/drivers.yaml `compilerImages`): the builder image
 * made from another Debian release, for kernel modules of kernels that
 * release's gcc built. `image` is its content identity (as the Docker pin).
 */
export interface CompilerImagePin {
  release: string;
  image: string;
  clang: string;
  gcc: string;
}

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
  /** The file Falco's loader asks for: <driver name>_<targetId>_<release>_<kernelversion>.<o|ko> (src/naming). */
  probeFile: string;
  /** Repository-relative output path: <driver version>/<arch>/<probe file> */
  output: string;
}
