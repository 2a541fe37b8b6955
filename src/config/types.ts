// The words of docs/ARCHITECTURE.md as types. Every stage speaks these.

export type RepositoryType = 'apt' | 'yum' | 'cos';
export type Arch = 'x86_64' | 'aarch64';

export interface RepositoryDefinition {
  /** Name used in lockfiles (`repository:` of a package) and in `--mirror NAME=URL`. */
  name: string;
  /** Base URLs in order of preference; later ones are fallbacks. */
  mirrors: string[];
  /** yum: the mirrors are `mirror.list` URLs whose lines name the real base URLs (`$basearch` substituted). */
  mirrorList?: boolean;
  /** apt: the suite (`bookworm`, `bookworm-security`). */
  suite?: string;
  /** apt: components (`main`). */
  components?: string[];
  /** apt: an OpenPGP keyring (path relative to the definition) to verify InRelease with gpgv. */
  keyring?: string;
  /**
   * apt: refuse a Release/InRelease whose `Valid-Until` has passed (default true), as apt
   * does; false for a deliberate snapshot of an archive (apt's `Check-Valid-Until=no`).
   */
  checkValidUntil?: boolean;
}

export interface AptHeadersRule {
  flavour: string;
  /** A regular expression on the package name with a named group `release`. */
  pattern: string;
  /**
   * Optional regular expression on the package's `Filename` (its pool path): the rule
   * applies only to packages whose file matches (Ubuntu's `pool/main/l/linux-aws/`), and
   * its named groups become template placeholders.
   */
  filename?: string;
  targetId?: string;
  /** overrides `unameVersion` for this flavour */
  unameVersion?: string;
  /** overrides `kernelVersion` for this flavour */
  kernelVersion?: string;
}

export interface AptKernelSelection {
  /** One entry per flavour. */
  headers: AptHeadersRule[];
  /** Dependencies of a headers package that are part of the kernel's sources (regular expressions on names). */
  follow: string[];
  /** Lockfile role of the packages found through `follow[i]` (default `common`), e.g. `[common, kbuild]`. */
  followRoles?: string[];
  /** Templates for uname -v and Falco's kernelversion. Placeholders: {release} {version} {upstream} {flavour} and named groups. */
  unameVersion: string;
  kernelVersion: string;
  /**
   * Optional template for the release the legacy `falco-driver-loader` script (Falco up to
   * 0.35) names the probe with, when it is not `uname -r` (Debian: `<package
   * version>-<flavour>`); falcoctl uses `uname -r`. See docs/OS.md.
   */
  legacyRelease?: string;
  /** Optional regular expression on the package version whose named groups become placeholders. */
  versionPattern?: string;
  /**
   * Optional: the bootable kernel image package name templates (for the load test), e.g. `linux-image-{release}`.
   * Each entry is one package; `a | b` within an entry are alternatives (the first present with the
   * headers' version is used). An entry with no package present is skipped.
   */
  image?: string[];
}

/** A `yum.devel` entry in its long form: a package name with its own flavour, target id or templates (Oracle's UEK). */
export interface YumDevelPackage {
  name: string;
  flavour?: string;
  targetId?: string;
  unameVersion?: string;
  kernelVersion?: string;
  /** Image package names for this flavour (default: the selection's `kernel`). */
  kernel?: string[];
}

export interface YumKernelSelection {
  /** Package names (exact) that carry the kernel headers/sources, e.g. `kernel-devel`, or long-form entries. */
  devel: (string | YumDevelPackage)[];
  /** Package names of the kernel itself (for the image; also used to list kernels). */
  kernel?: string[];
  unameVersion: string;
  kernelVersion: string;
  /** Flavour name for the kernels found (e.g. `uek`). */
  flavour?: string;
  targetId?: string;
  /**
   * What lockfile package paths are relative to: `repository` (the default; hrefs
   * must stay inside the repository) or `host` (the mirror host's root, for
   * Amazon Linux, whose hrefs climb out to a shared `/blobstore/`).
   */
  packageRoot?: YumPackageRoot;
}

export type YumPackageRoot = 'repository' | 'host';

/** A group of COS build ids: a milestone's release branch, listed by its build number prefix. */
export interface CosMilestone {
  /** `117` in `cos-117-18613-339-26`. */
  milestone: number;
  /** The first part of the milestone's build ids (`18613` in `18613.339.26`). */
  build: number;
}

export interface CosKernelSelection {
  /** Repository (name) whose mirrors are GCS JSON API object listings of the bucket (`.../storage/v1/b/<bucket>/o`). */
  listing: string;
  /** Repository (name) whose mirrors serve the bucket's objects (`<base>/<build id>/kernel-headers.tgz`). */
  headers: string;
  milestones: CosMilestone[];
  /** Optional regular expression a build id must match to be kept (e.g. to leave out `.0.0` branch points). */
  buildIdPattern?: string;
  /** Refuse a headers tarball larger than this many bytes (default 1 GiB). */
  maxHeadersBytes?: number;
}

export interface SourceDefinition {
  /** `debian12`; also the Please package name `//probes/<id>`. */
  id: string;
  description?: string;
  type: RepositoryType;
  /** Falco's target id (`debian`, `amazonlinux2`, `ubuntu-generic`). A flavour may override it. */
  targetId: string;
  architectures: Arch[];
  /** Oldest kernel release to keep (Falco's eBPF probe needs 4.14). */
  minimumKernel: string;
  /** The os-release contents written into the build environment. */
  osRelease: Record<string, string>;
  repositories: RepositoryDefinition[];
  apt?: AptKernelSelection;
  yum?: YumKernelSelection;
  cos?: CosKernelSelection;
}

export interface PackageRef {
  /** Package name, checked against the strict rules. */
  name: string;
  version: string;
  /** Repository name from the source definition (never a host). */
  repository: string;
  /** Path relative to the repository root. */
  path: string;
  sha256: string;
  size: number;
  /** What the package is for: headers of this flavour, common headers, kbuild, image... */
  role?: string;
}

/** One kernel: the six inputs that make its probe (plus Falco's naming parts). */
export interface KernelDescriptor {
  /** Unique in its lockfile; the Please/Make target name. Usually the release. */
  name: string;
  /** `uname -r` */
  release: string;
  /** `uname -v` (as Falco's loader would see it, where metadata can tell). */
  version: string;
  /** `uname -m` */
  machine: Arch;
  /** Falco's kernelversion (the number after `#` in `uname -v`, or the OS's rule). */
  kernelVersion: string;
  /** Falco's target id for this kernel (`debian`, `ubuntu-aws`). */
  targetId: string;
  flavour?: string;
  /**
   * Debian's release as Falco's loaders rebuild it from `uname -v` (`6.1.170-3-amd64` for
   * `6.1.0-47-amd64`), when a definition records it (debian13). Informational: the artifact
   * name is computed by src/naming/loader-names.ts from release and version.
   */
  legacyRelease?: string;
  packages: PackageRef[];
}

export interface Lockfile {
  /** The OS id (source definition id). */
  os: string;
  /** Source definition path (repository-relative) and the sha256 of its bytes, to detect a stale lockfile. */
  source: { path: string; sha256: string };
  osRelease: Record<string, string>;
  kernels: KernelDescriptor[];
}

// ---- kernels/drivers.yaml: which drivers, and how they are compiled ----

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
  | {
      url: string;
      sha256?: string;
      tree?: string /** leading path components to drop when unpacking (GitHub archives: 1) */;
      strip?: number;
    }
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
/**
 * How probes are compiled: the host toolchain, or a Docker builder image.
 * `clang` compiles eBPF probes; `gcc` (the first line of `gcc --version`)
 * compiles kernel modules, and must be the compiler the kernel was built
 * with (its headers' CONFIG_CC_VERSION_TEXT).
 */
export type BuilderPin =
  | { kind: 'host'; clang: string; gcc?: string }
  | {
      kind: 'docker';
      image: string;
      clang: string;
      gcc?: string /** A compiler image's Debian release (`trixie`); absent for the default builder image. */;
      release?: string;
    };

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
