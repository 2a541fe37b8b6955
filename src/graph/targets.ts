import { FalcoProbesError } from '../util/errors.js';
import { checkRelativePath, isValidTargetName } from '../util/names.js';
import { compareNatural } from '../util/natural-sort.js';
import { compareKernels } from '../lockfile/lockfile.js';
import type { KernelDescriptor } from '../config/types.js';
import { driverApplies } from './kernel-range.js';
import { createKeyer } from './key.js';
import { artifactFileName } from '../naming/loader-names.js';
import type { LoadedLockfile } from '../lockfile/load.js';
import type { BuilderPin, CompilerImagePin, DriverKind, DriverPin, ResolvedDriver, Target } from './types.js';
import { builderForTarget } from './compiler-choice.js';
import { shadowedKernels, type ShadowedKernel } from './loader-name-clash.js';

// From lockfiles and driver pins to targets: one per (kernel, driver whose
// range and kinds admit it, kind), arch = the kernel's machine.
//
// Target names (Please and Make), per OS:
//   <kernel>                      when one driver entry applies to the OS
//   <kernel>-<driver>-<version>   when several do (a driver applies when its
//                                 range and kinds admit at least one kernel of
//                                 the OS's lockfile, pinned or not, so pinning a
//                                 driver renames nothing; the version is always
//                                 there, so adding or dropping another version of
//                                 a driver renames nothing either)
//   ...-<kind>                    when the driver builds more than one kind
//   ...-<arch>                    when the lockfile has that kernel name for
//                                 more than one machine
// Every name is checked against the Please/Make rules again here.

export interface GraphInputs {
  lockfiles: readonly LoadedLockfile[];
  /** Drivers with a content identity: these get targets. */
  drivers: readonly ResolvedDriver[];
  /** Every driver of drivers.yaml (also unpinned ones): these decide names. */
  allDrivers: readonly DriverPin[];
  builder: BuilderPin;
  /** Builder images of other Debian releases, for modules of kernels their gcc built (compiler-choice.ts). */
  compilerImages?: readonly CompilerImagePin[];
  /** shadowedKernels(lockfiles), when the caller has it already. */
  shadowed?: readonly ShadowedKernel[];
}

const byName = (a: { name: string; version: string }, b: { name: string; version: string }) =>
  compareNatural(a.name, b.name) || compareNatural(a.version, b.version);

/** The file Falco's loader asks for: `<driver>_<target id>_<release>_<kernelversion>.<o|ko>`, by the loader's own per-OS rules. */
export function probeFileOf(kernel: KernelDescriptor, driverName = 'falco', kind: DriverKind = 'bpf'): string {
  return artifactFileName(driverName, kind, kernel);
}

/** A target's Please label. */
export function targetLabel(os: string, name: string): string {
  return `//probes/${os}:${name}`;
}

/**
 * Where a target's artifact is published in the repository: Falco's layout,
 * `<driver version>/<arch>/<file>`. The driver's version and the machine are
 * held to safe patterns by their schemas; the file name by the caller.
 */
export function targetOutput(driverVersion: string, arch: string, probeFile: string): string {
  return `${driverVersion}/${arch}/${probeFile}`;
}

/** Indices of the lockfile's kernels in target order (natural version order; the lockfile's own order does not count). */
function kernelOrder(kernels: readonly KernelDescriptor[]): number[] {
  const order = kernels.map((_, i) => i);
  let sorted = true;
  for (let i = 1; i < kernels.length && sorted; i++) if (compareKernels(kernels[i - 1]!, kernels[i]!) > 0) sorted = false;
  if (!sorted) order.sort((a, b) => compareKernels(kernels[a]!, kernels[b]!));
  return order;
}

export function buildTargets(inputs: GraphInputs): Target[] {
  const drivers = [...inputs.drivers].sort(byName);
  const keyOf = createKeyer();
  const targets: Target[] = [];
  const outputs = new Map<string, Target>();
  const shadowed = new Set((inputs.shadowed ?? shadowedKernels(inputs.lockfiles)).map((s) => s.kernel));
  // Per driver, once (this loop runs for every kernel and driver of a fleet: tens of thousands of times).
  const sortedKinds = new Map<DriverPin, DriverKind[]>(inputs.allDrivers.map((d) => [d, [...d.kinds].sort() as DriverKind[]]));
  for (const d of drivers) sortedKinds.set(d, [...d.kinds].sort() as DriverKind[]);
  for (const loaded of [...inputs.lockfiles].sort((a, b) => compareNatural(a.lock.os, b.lock.os))) {
    const { lock } = loaded;
    if (lock.os === 'all')
      throw new FalcoProbesError('config', 'an OS cannot be called "all" (a reserved Make and Please name)', {
        location: loaded.where(['os']),
      });
    const kinds = (d: DriverPin) => sortedKinds.get(d) ?? ([...d.kinds].sort() as DriverKind[]);
    const applying = inputs.allDrivers.filter((d) => lock.kernels.some((k) => kinds(d).some((kind) => driverApplies(d, k.release, kind))));
    const withDriverName = applying.length > 1;
    const machinesOf = new Map<string, number>();
    for (const k of lock.kernels) machinesOf.set(k.name, (machinesOf.get(k.name) ?? 0) + 1);
    const names = new Map<string, number>();

    for (const i of kernelOrder(lock.kernels)) {
      const kernel = lock.kernels[i]!;
      if (shadowed.has(kernel)) continue;
      // For messages only: made when one is needed.
      const entry = () => `${loaded.relativePath}: kernel "${kernel.name}" (${kernel.machine})`;
      const severalMachines = (machinesOf.get(kernel.name) ?? 0) > 1;
      for (const driver of drivers) {
        for (const kind of kinds(driver)) {
          if (!driverApplies(driver, kernel.release, kind)) continue;
          let probeFile: string;
          try {
            probeFile = checkRelativePath(probeFileOf(kernel, driver.name, kind));
          } catch (err) {
            throw new FalcoProbesError('config', `${entry()}: no safe artifact file name: ${(err as Error).message}`, {
              location: loaded.where(['kernels', i]),
            });
          }
          let name = kernel.name;
          if (withDriverName) name += `-${driver.name}-${driver.version}`;
          if (driver.kinds.length > 1) name += `-${kind}`;
          if (severalMachines) name += `-${kernel.machine}`;
          if (!isValidTargetName(name))
            throw new FalcoProbesError(
              'config',
              `${entry()}: target name ${JSON.stringify(name)} is not one Please and Make can take literally`,
              {
                location: loaded.where(['kernels', i, 'name']),
                hint: 'names may hold letters, digits and . _ + ~ -, start with a letter or digit, and have no "..", at most 255 characters, not "all"',
              },
            );
          const clash = names.get(name);
          if (clash !== undefined)
            throw new FalcoProbesError(
              'config',
              `${entry()}: target name "${name}" is also the name of kernel "${lock.kernels[clash]!.name}"'s target`,
              {
                location: loaded.where(['kernels', i, 'name']),
              },
            );
          names.set(name, i);
          const output = targetOutput(driver.version, kernel.machine, probeFile); // the file name is checked above
          const builder = builderForTarget(kernel, kind, inputs.builder, inputs.compilerImages);
          const key = keyOf({ kernel, osRelease: lock.osRelease, driver, builder, kind });
          const target: Target = {
            label: targetLabel(lock.os, name),
            name,
            os: lock.os,
            kernel,
            osRelease: lock.osRelease,
            driver,
            builder,
            kind,
            arch: kernel.machine,
            key,
            probeFile,
            output,
          };
          const other = outputs.get(output);
          if (other)
            throw new FalcoProbesError('config', `${entry()}: ${target.label} and ${other.label} would both publish ${output}`, {
              location: loaded.where(['kernels', i]),
              hint: "the file name is <driver>_<targetId>_<release>_<kernelversion>.<o|ko>, as Falco's loaders derive it; when exactly one of the kernels is named by its whole version (Debian: the other's package version was cut), the file is that kernel's (loader-name-clash.ts); otherwise give one of the OSes' kernels another targetId",
            });
          outputs.set(output, target);
          targets.push(target);
        }
      }
    }
  }
  return targets;
}
