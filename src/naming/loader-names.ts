import { FalcoProbesError } from '../util/errors.js';

// The artifact file names Falco's loaders ask a driver repository for:
//
//   <driver name>_<target id>_<release>_<kernelversion>.<o|ko>
//
// A published probe or module is only ever used if this project derives the
// same three parts from a kernel descriptor as the loader derives on the node
// from os-release, `uname -r` and `uname -v`. So the rules below restate the
// loaders' own, per loader and per distribution, citing where upstream states
// each one. Two loaders are in use:
//
// - falcoctl (`falcoctl driver`, shipped with Falco 0.37 and later). Read at
//   falcosecurity/falcoctl v0.13.0 (92e3d53f85092f607f31902761a46a57e30ad878);
//   the naming rules are the same from v0.8.0 to v0.13.0 (v0.7.x, in Falco
//   0.37, took the whole first word of `uname -v` as kernelversion). v0.13.0
//   dropped the legacy eBPF probe, so `.o` names are what v0.7-v0.12 ask for;
//   `.ko` names are asked for by every version.
//   - pkg/driver/distro/distro.go `toFilename`: the name is built from the
//     distro's FixupKernel() result; `toURL`: `<repo>/<QueryEscape(driver
//     version)>/<arch>/<file>`, the file itself not escaped.
//   - pkg/driver/kernel/kernel_linux.go `FetchInfo`: the release is parsed by
//     driverkit (v0.23.1, pkg/kernelrelease/kernelrelease.go `FromString`) and
//     printed back by its `String()`; the kernel version starts as all of
//     `uname -v`.
// - the falco-driver-loader script (falcosecurity/falco
//   scripts/falco-driver-loader, Falco up to 0.36; read at 0.36.2,
//   1b62b5ccd1c64cd972ef0252262075cbf42a130c, whose naming equals 0.35.1's,
//   aa49db45db929d28a9963fb9d094be0973197e16): `get_target_id` and the
//   KERNEL_RELEASE / KERNEL_VERSION set before it; the download URL is
//   `<repo>/<driver version>/<uname -m>/<file>` with every `+` replaced by
//   `%2B` (`sed s/+/%2B/g` on the whole URL). Scripts before 0.33.0 had no
//   arch folder and scripts before 0.35.0 no Debian rule; docs/OS.md lists
//   what they asked for.
//
// The `targetId` of a descriptor is the one this project recorded from the
// OS's os-release (`debian`, `ubuntu-aws`, `amazonlinux2`, `rocky`...): the
// step from os-release ID to that id (amzn + VERSION_ID -> amazonlinux2) is
// the source definition's; the rules here start from it. Where a loader would
// still name a file from an unparsable `uname -v` or release (it keeps the raw
// string), this module refuses instead: such a name is never one to publish.

export interface LoaderKernel {
  targetId: string;
  release: string;
  version: string;
  kernelVersion: string;
  machine: 'x86_64' | 'aarch64';
  flavour?: string;
}

export interface LoaderParts {
  targetId: string;
  release: string;
  kernelVersion: string;
}

type Loader = 'falcoctl' | 'falco-driver-loader';
type NamingRule = (k: LoaderKernel, loader: Loader) => LoaderParts;

// ---- the patterns the loaders apply (facts, written out as data) ----------

/** `#<digits>` anywhere in `uname -v`: falcoctl generic.go `genericKernelVersionRegex` (the first match's digits). */
const HASH_NUMBER = /#(\d+)/;
/** The script's `sed 's/#\([[:digit:]]\+\).*\/\1/'`: the same match, but text before the `#` stays. */
const SCRIPT_HASH_NUMBER = /#([0-9]+).*/;
/** Debian's package version inside `uname -v` (`Debian 6.1.170-3`, `6.12.117-1~deb12u1`): debian.go `debianKernelVersionRegex`, the script's `[[ =~ ]]`. */
const DEBIAN_PACKAGE_VERSION = /\d+\.\d+\.\d+-\d+/;
/** The flavour and architecture a Debian release ends with: debian.go `debianKernelReleaseRegex`, the script's `[[ =~ ]]`. */
const DEBIAN_FLAVOUR_ARCH = /-?(rt-|cloud-|)(amd64|arm64)/;
/** Ubuntu's flavour in the release (`5.15.0-1019-aws` is `aws`): ubuntu.go `ubuntuTargetIDRegex`, the script's `[[ =~ ]]`. */
const UBUNTU_FLAVOUR = /-([a-zA-Z]+)(-.*)?$/;
/** When the script keeps more than digits of an Ubuntu `uname -v`: `#26~22.04.1-Ubuntu SMP ...`. */
const SCRIPT_UBUNTU_TILDE_VERSION = /^#[0-9]+~[^-]*-Ubuntu .*$/;
/** ... and what it keeps then: `sed 's/#\([^-\\ ]*\).*\/\1/g'`. */
const SCRIPT_UBUNTU_KEEP = /#([^-\\ ]*).*/;
/**
 * driverkit's kernel release grammar (kernelrelease.go `kernelVersionPattern`):
 * `fullversion` and `fullextraversion`, which `String()` joins again. For real
 * releases that is the release itself; a release it cannot parse prints as ''.
 */
const DRIVERKIT_RELEASE =
  /^(?<fullversion>(?:0|[1-9]\d*)(?:\.(?:0|[1-9]\d*)[.+]?(?:0|[1-9]\d*)?)?)(?<fullextraversion>[-.+](?:\d+|\d*[a-zA-Z-][0-9a-zA-Z-]*)?(?:[.+~](?:\d+|\d*[a-zA-Z-][0-9a-zA-Z_-]*))*)?(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?$/;
/** What a part of a file name may hold (the same set as a `uname -r`; `_` for `x86_64` and `1_<VERSION_ID>`). */
const SAFE_PART = /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$/;
/** The `1_<VERSION_ID>[-<variant>]` kernelversion that Talos, Bottlerocket and minikube get from os-release. */
const OS_RELEASE_KERNEL_VERSION = /^1_[0-9][0-9A-Za-z.+~-]*$/;
const DRIVER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const DRIVER_VERSION = /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$/;

function refuse(k: LoaderKernel, loader: Loader, why: string): never {
  throw new FalcoProbesError(
    'config',
    `cannot name the ${loader} artifact of kernel ${JSON.stringify(k.release)} (${JSON.stringify(k.version)}, target ${JSON.stringify(k.targetId)}): ${why}`,
  );
}

/** driverkit's `FromString(r).String()` and its extraversion part; falcoctl names files from these, never from `uname -r` itself. */
function driverkitRelease(k: LoaderKernel, release: string): { release: string; fullExtraversion: string } {
  const m = DRIVERKIT_RELEASE.exec(release);
  if (!m) refuse(k, 'falcoctl', `driverkit cannot parse the release ${JSON.stringify(release)} (falcoctl would ask for an empty release)`);
  const fullversion = m.groups?.['fullversion'] ?? '';
  const fullExtraversion = m.groups?.['fullextraversion'] ?? '';
  return { release: fullversion + fullExtraversion, fullExtraversion };
}

/** The target id as the loaders print it: both lower-case os-release's ID. */
function recordedTarget(k: LoaderKernel): string {
  return k.targetId.toLowerCase();
}

// ---- kernelversion ----------------------------------------------------------

/** falcoctl generic.go `FixupKernel`: the digits of the first `#<digits>` (`#1-photon SMP` is `1`). */
function falcoctlHashNumber(k: LoaderKernel): string {
  const m = HASH_NUMBER.exec(k.version);
  if (!m) refuse(k, 'falcoctl', 'uname -v has no "#<number>" (falcoctl would use all of uname -v as kernelversion)');
  return m[1]!;
}

/** The script's default KERNEL_VERSION: `#<digits>...` replaced by the digits (anything before the `#` stays). */
function scriptHashNumber(k: LoaderKernel): string {
  const m = SCRIPT_HASH_NUMBER.exec(k.version);
  if (!m) refuse(k, 'falco-driver-loader', 'uname -v has no "#<number>" (the script would use all of uname -v as kernelversion)');
  return k.version.slice(0, m.index) + m[1]!;
}

/** The kernelversion a node takes from os-release (Talos, Bottlerocket) or /etc/VERSION (minikube): only the recorded one can say it. */
function osReleaseKernelVersion(k: LoaderKernel, loader: Loader): string {
  if (!OS_RELEASE_KERNEL_VERSION.test(k.kernelVersion))
    refuse(
      k,
      loader,
      `a ${k.targetId} kernelversion is "1_<VERSION_ID>" from os-release (Bottlerocket: "1_<VERSION_ID>-<variant>"), recorded as kernelVersion; got ${JSON.stringify(k.kernelVersion)}`,
    );
  return k.kernelVersion;
}

// ---- the rules, per distribution ----------------------------------------------

/**
 * Every distribution without a rule of its own: the release is `uname -r`
 * (through driverkit for falcoctl), the kernelversion the number after `#`.
 * falcoctl generic.go; the script's `(*)` case and its KERNEL_VERSION default.
 * Covers centos and rhel (centos.go, rhel.go only detect them without
 * os-release), ol (oracle.go only changes the preferred driver), cos (cos.go
 * only fetches headers for builds), amazonlinux* (amzn.go only maps
 * VERSION_ID to the id), and rocky, almalinux, fedora, devuan...
 */
const generic: NamingRule = (k, loader) =>
  loader === 'falcoctl'
    ? { targetId: recordedTarget(k), release: driverkitRelease(k, k.release).release, kernelVersion: falcoctlHashNumber(k) }
    : { targetId: recordedTarget(k), release: k.release, kernelVersion: scriptHashNumber(k) };

/**
 * Debian: the release is rebuilt from the package version in `uname -v` plus
 * the flavour and arch of `uname -r` (`6.1.0-47-amd64` with `Debian 6.1.170-3`
 * is `6.1.170-3-amd64`), because `uname -r` names the ABI, not the kernel.
 * falcoctl debian.go `FixupKernel` (matches the flavour in driverkit's
 * extraversion, re-parses the result and sets the kernelversion to "1"); the
 * script's `("debian")` case (matches in all of `uname -r`, keeps its
 * KERNEL_VERSION). Without a package version both fall back to the generic rule.
 */
const debian: NamingRule = (k, loader) => {
  const pkg = DEBIAN_PACKAGE_VERSION.exec(k.version);
  if (!pkg) return generic(k, loader);
  const where = loader === 'falcoctl' ? driverkitRelease(k, k.release).fullExtraversion : k.release;
  const arch = DEBIAN_FLAVOUR_ARCH.exec(where);
  const rebuilt = pkg[0] + (arch ? `-${arch[1]}${arch[2]}` : '');
  return loader === 'falcoctl'
    ? { targetId: recordedTarget(k), release: driverkitRelease(k, rebuilt).release, kernelVersion: '1' }
    : { targetId: recordedTarget(k), release: rebuilt, kernelVersion: scriptHashNumber(k) };
};

/**
 * Ubuntu: the target is `ubuntu-<flavour>`, the flavour being the first run
 * of letters after a `-` of the release that reaches its end or another `-`
 * (`5.0.0-1028-aws-5.0` is `ubuntu-aws`), `ubuntu-generic` without one
 * (ubuntu.go `init`, on driverkit's extraversion; the script, on `uname -r`).
 * kernelversion: falcoctl (ubuntu.go `FixupKernel`) keeps the first word of
 * `uname -v` without `#` and `-Ubuntu` (`#26~22.04.1-Ubuntu SMP` is
 * `26~22.04.1`, `#9.1` is `9.1`); the script keeps more than the digits only
 * for `#<n>~<...>-Ubuntu <...>` (`#9.1` is `9`).
 */
const ubuntu: NamingRule = (k, loader) => {
  const where = loader === 'falcoctl' ? driverkitRelease(k, k.release).fullExtraversion : k.release;
  const targetId = `ubuntu-${UBUNTU_FLAVOUR.exec(where)?.[1] ?? 'generic'}`;
  if (loader === 'falcoctl') {
    if (!/^#+[^\s#]/.test(k.version)) refuse(k, loader, 'uname -v does not start with "#<number>"');
    const word = k.version.replace(/^#+/, '').split(' ')[0]!;
    return {
      targetId,
      release: driverkitRelease(k, k.release).release,
      kernelVersion: word.endsWith('-Ubuntu') ? word.slice(0, -'-Ubuntu'.length) : word,
    };
  }
  const kernelVersion = SCRIPT_UBUNTU_TILDE_VERSION.test(k.version) ? k.version.replace(SCRIPT_UBUNTU_KEEP, '$1') : scriptHashNumber(k);
  return { targetId, release: k.release, kernelVersion };
};

/** Talos (talos.go; the script's `("talos")`), Bottlerocket (bottlerocket.go; `("bottlerocket")`), minikube (minikube.go; `("minikube")`): the release is `uname -r`, the kernelversion comes from os-release. */
const osReleaseVersioned: NamingRule = (k, loader) => ({
  targetId: recordedTarget(k),
  release: loader === 'falcoctl' ? driverkitRelease(k, k.release).release : k.release,
  kernelVersion: osReleaseKernelVersion(k, loader),
});

/** Flatcar: the release is os-release's VERSION_ID, not `uname -r` (flatcar.go `FixupKernel`, the script's `("flatcar")`); a descriptor does not carry it. */
const flatcar: NamingRule = (k, loader) =>
  refuse(k, loader, "Flatcar's release is os-release VERSION_ID, which a kernel descriptor does not record");

/** `amzn` is never a target id: amzn.go and the script's `("amzn")` turn it into amazonlinux, amazonlinux2, amazonlinux2022 or amazonlinux2023 by VERSION_ID. */
const amzn: NamingRule = (k, loader) =>
  refuse(k, loader, 'no loader asks for target "amzn"; record amazonlinux<VERSION_ID> (amazonlinux2, amazonlinux2023...)');

/** Rules by recorded target id; anything else is `generic`. The same table serves both loaders: their cases are the same distributions. */
const RULES: Readonly<Record<string, NamingRule>> = {
  debian,
  ubuntu,
  talos: osReleaseVersioned,
  bottlerocket: osReleaseVersioned,
  minikube: osReleaseVersioned,
  flatcar,
  amzn,
};

function ruleFor(targetId: string): NamingRule {
  const id = targetId.toLowerCase();
  // The recorded Ubuntu id already carries a flavour; the loaders compute it again from the release.
  if (id.startsWith('ubuntu-')) return ubuntu;
  return Object.hasOwn(RULES, id) ? RULES[id]! : generic;
}

const PART_NAMES = ['targetId', 'release', 'kernelVersion'] as const satisfies readonly (keyof LoaderParts)[];

function partsFor(k: LoaderKernel, loader: Loader): LoaderParts {
  if (!SAFE_PART.test(k.targetId)) refuse(k, loader, 'the target id is not a plain name');
  const parts = ruleFor(k.targetId)(k, loader);
  // The three parts by name (no entries array per kernel: every kernel of a fleet passes here).
  for (const name of PART_NAMES) {
    const value = parts[name];
    if (!SAFE_PART.test(value)) refuse(k, loader, `the ${name} would be ${JSON.stringify(value)}, which is not a safe file name part`);
  }
  return parts;
}

/**
 * What falcoctl (`falcoctl driver`, Falco's loader since 0.37; Falco 0.36 still ran
 * the script) derives for this kernel: falcoctl pkg/driver/distro/*.go `FixupKernel`.
 */
export function falcoctlParts(k: LoaderKernel): LoaderParts {
  // Asked for every driver and kind of a kernel, and again to find clashing names: worked out once per descriptor.
  let parts = falcoctlMemo.get(k);
  if (!parts) falcoctlMemo.set(k, (parts = partsFor(k, 'falcoctl')));
  return parts;
}

/** Descriptors are not changed once read (a lockfile's, a graph's). */
const falcoctlMemo = new WeakMap<LoaderKernel, LoaderParts>();

/** What the falco-driver-loader script (Falco <= 0.36; its naming as of 0.35.1 to 0.36.2) derives: `get_target_id`. */
export function legacyScriptParts(k: LoaderKernel): LoaderParts {
  return partsFor(k, 'falco-driver-loader');
}

function fileName(driverName: string, kind: 'bpf' | 'kmod', parts: LoaderParts): string {
  if (!DRIVER_NAME.test(driverName))
    throw new FalcoProbesError('config', `refusing driver name ${JSON.stringify(driverName)}: letters, digits and . _ - only`);
  // drivertype bpf.go / kmod.go `Extension()`; the script's BPF_PROBE_FILENAME and FALCO_KERNEL_MODULE_FILENAME.
  const extension = kind === 'bpf' ? '.o' : '.ko';
  return `${driverName}_${parts.targetId}_${parts.release}_${parts.kernelVersion}${extension}`;
}

/**
 * False when the loaders' name for this kernel drops part of what tells it
 * from other kernels: Debian's rule keeps only the `<x.y.z>-<n>` of the
 * package version, so bookworm's backport `6.12.107-1~deb12u1` is named
 * `6.12.107-1`, as trixie's own `6.12.107-1` is. True for every other rule.
 */
export function loaderNameIsExact(k: LoaderKernel): boolean {
  if (ruleFor(k.targetId) !== debian) return true;
  const pkg = DEBIAN_PACKAGE_VERSION.exec(k.version);
  if (!pkg) return true;
  const rest = k.version.slice(pkg.index + pkg[0].length);
  return rest === '' || /^\s/.test(rest);
}

/** `<driverName>_<target>_<release>_<kernelversion>.<o|ko>` as falcoctl asks for it. */
export function artifactFileName(driverName: string, kind: 'bpf' | 'kmod', k: LoaderKernel): string {
  return fileName(driverName, kind, falcoctlParts(k));
}

/** The same for the legacy script (may differ, e.g. older Debian rules). */
export function legacyArtifactFileName(driverName: string, kind: 'bpf' | 'kmod', k: LoaderKernel): string {
  return fileName(driverName, kind, legacyScriptParts(k));
}

/** Go's `url.QueryEscape`: letters, digits and `-_.~` stay, a space is `+`, every other byte `%XX`. */
function goQueryEscape(s: string): string {
  let out = '';
  for (const byte of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9_.~-]/.test(c)) out += c;
    else if (c === ' ') out += '+';
    else out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/**
 * The URL path each loader requests below DRIVERS_REPO. falcoctl (distro.go
 * `toURL`): `<QueryEscape(driver version)>/<arch>/<file>`, so `9.1.0+driver`
 * travels as `9.1.0%2Bdriver` while a `+` in the file name (COS `6.1.100+`)
 * stays literal. The script (0.33.0-0.36.2): `<driver version>/<uname -m>/<file>`
 * with every `+` as `%2B`. (Scripts before 0.33.0 sent no arch folder:
 * `<driver version>/<file>`, with `uname -r`-based Debian names; not returned here.)
 */
export function loaderRequestPaths(
  driverVersion: string,
  k: LoaderKernel,
  driverName: string,
  kind: 'bpf' | 'kmod',
): { falcoctl: string; legacyScript: string } {
  if (!DRIVER_VERSION.test(driverVersion))
    throw new FalcoProbesError('config', `refusing driver version ${JSON.stringify(driverVersion)}: letters, digits and . _ + ~ - only`);
  if (k.machine !== 'x86_64' && k.machine !== 'aarch64')
    throw new FalcoProbesError(
      'config',
      `refusing machine ${JSON.stringify(k.machine)}: Falco's repositories have x86_64 and aarch64 folders`,
    );
  // falcoctl: runtime.GOARCH through driverkit's ToNonDeb (amd64 -> x86_64, arm64 -> aarch64), which is `uname -m`.
  const falcoctl = `${goQueryEscape(driverVersion)}/${k.machine}/${artifactFileName(driverName, kind, k)}`;
  const legacyScript = `${driverVersion}/${k.machine}/${legacyArtifactFileName(driverName, kind, k)}`.replaceAll('+', '%2B');
  return { falcoctl, legacyScript };
}
