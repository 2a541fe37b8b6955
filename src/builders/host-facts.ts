import type { Arch } from '../config/types.js';

// Facts about the host builder that deciding what to build needs without
// loading the builder itself (host.ts and the kbuild machinery behind it):
// a no-op build imports only this (bench/noop.ts).

/** `x86_64`/`aarch64` of this machine, as a target's arch is written. */
export function hostArch(): Arch | undefined {
  return process.arch === 'x64' ? 'x86_64' : process.arch === 'arm64' ? 'aarch64' : undefined;
}

/** The x.y.z version number in a `--version` line. */
export function versionNumber(text: string): string | undefined {
  return /(\d+\.\d+\.\d+)/.exec(text)?.[1];
}

/**
 * Whether this host's clang (`Debian clang version 14.0.6`) is the one a
 * pin names: the same first line, or, for a bare version pin (`14.0.6`),
 * the same version number.
 */
export function clangSatisfies(pinned: string, actual: string): boolean {
  if (pinned === actual) return true;
  return /^[0-9.]+$/.test(pinned) && versionNumber(actual) === pinned;
}
