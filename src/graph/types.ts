import type { Arch, BuilderPin, DriverKind, DriverPin, KernelDescriptor } from '../config/types.js';

// The build graph's words. Stages after `graph` (builders, repository, run,
// verify) consume these; `graph` produces them from lockfiles and pins.

// The configuration's words (driver, builder and compiler-image pins) are
// config/'s; they are named here again for the stages that speak of targets.
export type { BuilderPin, CompilerImagePin, DriverKind, DriverPackage, DriverPin, DriverSource } from '../config/types.js';

/** A driver pin with its content identity resolved: the tarball sha256, or the tree hash of a local directory. */
export interface ResolvedDriver extends DriverPin {
  sourceSha256: string;
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
