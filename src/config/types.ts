// The words of DESIGN.md as types. Every stage speaks these.

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
}

export interface AptKernelSelection {
  /** One entry per flavour: a regular expression on the package name with a named group `release`. */
  headers: { flavour: string; pattern: string; targetId?: string; /** overrides `unameVersion` for this flavour */ unameVersion?: string }[];
  /** Dependencies of a headers package that are part of the kernel's sources (regular expressions on names). */
  follow: string[];
  /** Lockfile role of the packages found through `follow[i]` (default `common`), e.g. `[common, kbuild]`. */
  followRoles?: string[];
  /** Templates for uname -v and Falco's kernelversion. Placeholders: {release} {version} {upstream} {flavour} and named groups. */
  unameVersion: string;
  kernelVersion: string;
  /** Optional regular expression on the package version whose named groups become placeholders. */
  versionPattern?: string;
  /**
   * Optional: the bootable kernel image package name templates (for verify-load), e.g. `linux-image-{release}`.
   * Each entry is one package; `a | b` within an entry are alternatives (the first present with the
   * headers' version is used). An entry with no package present is skipped.
   */
  image?: string[];
}

export interface YumKernelSelection {
  /** Package names (exact) that carry the kernel headers/sources, e.g. `kernel-devel`. */
  devel: string[];
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
  cos?: Record<string, unknown>;
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
