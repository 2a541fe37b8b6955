import type { BuilderPin, Target } from '../graph/types.js';

export interface BuildRequest {
  target: Target;
  /**
   * A directory laid out like `/`: every package of the kernel extracted into
   * it (usr/src/linux-headers-<release>, usr/lib/linux-kbuild-x.y,
   * usr/src/kernels/<release>, ...). Read-only for the builder.
   */
  kernelRoot: string;
  /** The driver's source tree (unpacked tarball or local directory). Read-only for the builder. */
  driverDir: string;
  /** A private scratch directory for this target, empty at start. */
  workDir: string;
  /** Where the finished probe is written (the builder writes it atomically). */
  outFile: string;
  /** The target's log file: every line the compiler prints goes here. */
  logFile: string;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface BuildResult {
  sha256: string;
  size: number;
}

export interface Builder {
  /** The identity that goes into every key built with this builder. */
  pin(): Promise<BuilderPin>;
  build(request: BuildRequest): Promise<BuildResult>;
}
