import { releaseAtLeast } from '../util/natural-sort.js';
import type { DriverKind, DriverPin } from './types.js';

// Which kernels a driver supports: `kernels.min` inclusive, `kernels.max`
// exclusive, compared on the leading x.y.z numbers of `uname -r`
// (`6.12.117+deb12-amd64` is 6.12.117). Some driver versions do not compile
// on newer kernels, so a range is part of a driver pin.

export function admitsRelease(range: DriverPin['kernels'], release: string): boolean {
  if (!/^\d+\.\d+/.test(release)) return false;
  if (range?.min !== undefined && !releaseAtLeast(release, range.min)) return false;
  if (range?.max !== undefined && releaseAtLeast(release, range.max)) return false;
  return true;
}

/** Does the driver build this kind for this kernel? */
export function driverApplies(driver: Pick<DriverPin, 'kernels' | 'kinds'>, release: string, kind: DriverKind): boolean {
  return driver.kinds.includes(kind) && admitsRelease(driver.kernels, release);
}
