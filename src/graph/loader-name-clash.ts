import type { KernelDescriptor } from '../config/types.js';
import { falcoctlParts, loaderNameIsExact } from '../naming/loader-names.js';
import type { LoadedLockfile } from '../lockfile/load.js';

// Two OSes' kernels that Falco's loaders ask for under one file name.
//
// Debian's loader rule names a kernel by the `<x.y.z>-<n>` of its package
// version, so a bookworm backport (`6.12.107+deb12-amd64`, package
// `6.12.107-1~deb12u1`) and trixie's own kernel of that version
// (`6.12.107+deb13-amd64`, `6.12.107-1`) are both
// `falco_debian_6.12.107-1-amd64_1.ko`. They are different builds (other
// `uname -r`, other gcc), and one repository path holds one file. The file
// goes to the kernel whose name the loaders did not cut (trixie's: its
// version is exactly the name's); the other kernel gets no target, and
// `generate` and `plan` say so. A Falco node on the other kernel downloads
// the file, fails to load it (the module's vermagic names the other
// release), and falls back as it does for any kernel without a driver. When
// no single kernel of a clash is exact, nothing is decided here and building
// the targets fails, naming both (targets.ts).

export interface ShadowedKernel {
  os: string;
  kernel: KernelDescriptor;
  /** The kernel whose file it would be. */
  by: { os: string; kernel: KernelDescriptor };
  /** `<machine>/<target>_<release>_<kernelversion>`, the part of the file name the two share. */
  name: string;
}

/** What is said of a shadowed kernel: the names (a graph from its memo knows these without its lockfiles). */
export interface ShadowedName {
  os: string;
  kernel: { name: string; machine: string };
  by: { os: string; kernel: { name: string } };
}

/** The names of each shadowed kernel. */
export function shadowedNames(shadowed: readonly ShadowedKernel[]): ShadowedName[] {
  return shadowed.map((s) => ({
    os: s.os,
    kernel: { name: s.kernel.name, machine: s.kernel.machine },
    by: { os: s.by.os, kernel: { name: s.by.kernel.name } },
  }));
}

/** Every kernel that yields its loader file name to another OS's kernel, in lockfile order. */
export function shadowedKernels(lockfiles: readonly LoadedLockfile[]): ShadowedKernel[] {
  const groups = new Map<string, { os: string; kernel: KernelDescriptor }[]>();
  for (const { lock } of lockfiles)
    for (const kernel of lock.kernels) {
      let name: string;
      try {
        // Driver name and kind are the same on both sides of a clash: the rest of the name
        // (artifactFileName's `<target>_<release>_<kernelversion>`) is compared.
        const parts = falcoctlParts(kernel);
        name = `${kernel.machine}/${parts.targetId}_${parts.release}_${parts.kernelVersion}`;
      } catch {
        continue; // no safe name: buildTargets reports it
      }
      const group = groups.get(name);
      if (group) group.push({ os: lock.os, kernel });
      else groups.set(name, [{ os: lock.os, kernel }]);
    }
  const out: ShadowedKernel[] = [];
  for (const [name, group] of groups) {
    if (group.length < 2 || new Set(group.map((g) => g.os)).size < group.length) continue;
    const exact = group.filter((g) => loaderNameIsExact(g.kernel));
    if (exact.length !== 1) continue;
    const by = exact[0]!;
    for (const g of group) if (g !== by) out.push({ ...g, by, name });
  }
  return out;
}

/**
 * For people: per pair of OSes, how many kernels yield their file names and
 * which (`debian12: 15 kernels have no targets: ...`).
 */
export function shadowedSummary(shadowed: readonly ShadowedName[]): string[] {
  const byPair = new Map<string, ShadowedName[]>();
  for (const s of shadowed) {
    const pair = `${s.os}\0${s.by.os}`;
    const list = byPair.get(pair);
    if (list) list.push(s);
    else byPair.set(pair, [s]);
  }
  return [...byPair.values()].map((list) => {
    const { os, by } = list[0]!;
    const n = list.length;
    return `${os}: ${n} kernel${n === 1 ? ' has' : 's have'} no targets: Falco's loaders ask for the same files for ${n === 1 ? 'it' : 'them'} as for ${by.os}'s kernels of the same package version, and the files are ${by.os}'s (${list.map((s) => s.kernel.name).join(', ')})`;
  });
}
