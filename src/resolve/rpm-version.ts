import { FalcoProbesError, type ErrorLocation } from '../util/errors.js';

// How RPM's name-epoch-version-release-arch becomes the strings a kernel
// descriptor holds. `uname -r` of an RPM kernel is `<version>-<release>.<arch>`
// (4.14.232-176.381.amzn2.x86_64): the epoch is not part of it.

/** RPM architectures as they appear in `<arch>`: a short word, nothing else. */
export const RPM_ARCH_RE = /^[A-Za-z0-9_]{1,32}$/;
/** An RPM epoch: digits only. */
export const RPM_EPOCH_RE = /^[0-9]{1,10}$/;

/** Refuse an arch value that is not a plain word (it names a file and a folder later). */
export function checkRpmArch(value: string, location?: ErrorLocation): string {
  if (!RPM_ARCH_RE.test(value))
    throw new FalcoProbesError('input', `refusing arch ${JSON.stringify(value)}: allowed are letters, digits and _`, {
      location: location ?? {},
    });
  return value;
}

export function checkRpmEpoch(value: string, location?: ErrorLocation): string {
  if (!RPM_EPOCH_RE.test(value))
    throw new FalcoProbesError('input', `refusing epoch ${JSON.stringify(value)}: expected digits`, { location: location ?? {} });
  return value;
}

/** The package version as a lockfile records it: `[epoch:]version-release` (epoch left out when 0, as rpm prints it). */
export function rpmEvr(epoch: string, version: string, release: string): string {
  return `${epoch && epoch !== '0' ? `${epoch}:` : ''}${version}-${release}`;
}

/** `uname -r` of an RPM kernel package. */
export function rpmKernelRelease(version: string, release: string, arch: string): string {
  return `${version}-${release}.${arch}`;
}
