import { FalcoProbesError } from '../util/errors.js';
import type { PrefixMap } from './kernel-tree.js';

// The kbuild command line and environment that every builder uses, so that
// the host and a container run the same recipe.

/**
 * Every path a build compiles from is recorded under this prefix (through
 * -ffile-prefix-map), in debug info, BTF and __FILE__. No file can ever exist
 * below it: /dev/null is a character device on every Linux system, never a
 * directory. That matters because llc fills BTF line info with the text of
 * each source line, which it reads from the *recorded* path: were the
 * recorded paths real (`/usr/src/linux-headers-<abi>-common`, which a host
 * with those headers installed has, and a build container always has), the
 * object's bytes would depend on the machine. Under this prefix every
 * builder, host or container, reads nothing and writes the same bytes.
 */
export const UNREADABLE_ROOT = '/dev/null/falco-probes';

/** Where the driver's build directory is recorded in debug info and BTF. */
export const DRIVER_STABLE_DIR = `${UNREADABLE_ROOT}/driver`;

/** A path of the kernel's file system (`/usr/src/linux-headers-6.1.0-57-amd64`, or `` for its root) as it is recorded. */
export function recordedKernelPath(path: string): string {
  return `${UNREADABLE_ROOT}${path}`;
}

/** The fixed build time: a probe's bytes must not depend on when it was built. */
export const BUILD_EPOCH = 0;

export interface KbuildInvocation {
  /** The kernel directory for `make -C` (a view prepared in the work directory). */
  kernelDir: string;
  /** The probe's kbuild directory (M=). */
  moduleDir: string;
  /** Compiler commands. */
  clang: string;
  llc: string;
  make: string;
  /** -ffile-prefix-map pairs; none may be a string prefix of another. */
  prefixMaps: PrefixMap[];
}

/** `-ffile-prefix-map=<from>=<to>` for each pair (covers debug info, BTF and __FILE__). */
export function prefixMapFlags(maps: PrefixMap[]): string[] {
  for (const a of maps)
    for (const b of maps)
      if (a !== b && b.from.startsWith(a.from))
        throw new FalcoProbesError('internal', `prefix maps overlap: ${a.from} is a prefix of ${b.from}`);
  return maps.map((m) => `-ffile-prefix-map=${m.from}=${m.to}`);
}

/**
 * `make -C <kernel> M=<probe>` with Falco's Makefile variables: CLANG and LLC
 * compile the probe (its rule calls $(CLANG) and $(LLC), never $(CC)).
 * CC is left to the kernel's own configuration (gcc-12 for Debian 12): kbuild
 * only runs it for its compiler probes, whose results do not reach the
 * probe's bytes (checked: CC=clang gives the same object), while CC=clang
 * makes those probes, and so kbuild's whole run, about twice as slow.
 * KBUILD_EXTRA_CPPFLAGS is the hook that Falco's probe Makefile (and the
 * example's) put on the compile line. One job: the runner parallelizes
 * across targets.
 */
export function kbuildArgv(inv: KbuildInvocation): string[] {
  return makeArgv(inv, [`CLANG=${inv.clang}`, `LLC=${inv.llc}`, `KBUILD_EXTRA_CPPFLAGS=${prefixMapFlags(inv.prefixMaps).join(' ')}`]);
}

/** `make -C <kernel> M=<dir> -j1 <variables> V=1 [goal]`: what every kbuild run of a builder looks like. */
function makeArgv(inv: { make: string; kernelDir: string; moduleDir: string }, variables: string[], goal?: string): string[] {
  return [inv.make, '-C', inv.kernelDir, `M=${inv.moduleDir}`, '-j1', ...variables, 'V=1', ...(goal !== undefined ? [goal] : [])];
}

export interface KmodInvocation {
  kernelDir: string;
  moduleDir: string;
  /** The C compiler the kernel was built with, as a plain name or path (`gcc-12`). */
  cc: string;
  make: string;
  prefixMaps: PrefixMap[];
}

/**
 * `make -C <kernel> M=<module> modules` with the kernel's own compiler.
 * KCFLAGS reaches every C compile of the module (kbuild appends it to
 * KBUILD_CFLAGS): gcc's -ffile-prefix-map records the build's paths under
 * stable names in debug info and __FILE__. The module is not signed here
 * (`modules`, not `modules_install`): signing needs the distribution's key.
 */
export function kmodArgv(inv: KmodInvocation): string[] {
  return makeArgv(inv, [`CC=${inv.cc}`, `KCFLAGS=${prefixMapFlags(inv.prefixMaps).join(' ')}`], 'modules');
}

/**
 * A clean environment: nothing of the caller's (MAKEFLAGS from an outer make,
 * CFLAGS, ARCH, CROSS_COMPILE, a locale) reaches the build.
 */
export function kbuildEnv(opts: { path: string; home: string; tmpDir: string }): Record<string, string> {
  return {
    PATH: opts.path,
    HOME: opts.home,
    TMPDIR: opts.tmpDir,
    LC_ALL: 'C',
    LANG: 'C',
    TZ: 'UTC',
    SOURCE_DATE_EPOCH: String(BUILD_EPOCH),
    KBUILD_BUILD_TIMESTAMP: new Date(BUILD_EPOCH * 1000).toUTCString(),
    KBUILD_BUILD_USER: 'falco-probes',
    KBUILD_BUILD_HOST: 'falco-probes',
    KBUILD_BUILD_VERSION: '1',
  };
}
