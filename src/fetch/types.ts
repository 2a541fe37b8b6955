import type { PackageRef } from '../config/types.js';

export type ArchiveFormat = 'deb' | 'rpm' | 'tgz';

export interface FetchOptions {
  /** Content-addressed cache directory (default: $XDG_CACHE_HOME/falco-probes/packages). */
  cacheDir: string;
  /** `http`: mirrors only; `apt`: `apt-get download name=version` only; `auto`: mirrors, then apt when none answers. */
  via: 'http' | 'apt' | 'auto';
  signal?: AbortSignal;
}

/** Returns the path of the verified file in the cache (sha256 and size equal to the lockfile's). */
export type FetchPackage = (pkg: PackageRef, mirrors: string[], options: FetchOptions) => Promise<string>;
