import type { AptSourcesOptions } from './apt-sources.js';
import type { PackageRef } from '../config/types.js';
import type { HttpOptions } from '../util/http.js';
import type { Logger } from '../util/log.js';

/** `deb` and `rpm` packages; `tgz` is any tarball (gzip, xz, zstd or none, sniffed from its bytes). */
export type ArchiveFormat = 'deb' | 'rpm' | 'tgz';

export type FetchVia = 'http' | 'apt' | 'auto';

export interface FetchOptions {
  /** Content-addressed cache directory (default: $XDG_CACHE_HOME/falco-probes/packages). */
  cacheDir: string;
  /** `http`: mirrors only; `apt`: `apt-get download name=version` only; `auto`: mirrors, then apt when none answers. */
  via: FetchVia;
  signal?: AbortSignal;
  /** Re-hash a cached file before trusting it (default: its size is checked, its name is its sha256). */
  verify?: boolean;
  /** Timeouts, retries and backoff for each mirror. */
  http?: HttpOptions;
  logger?: Logger;
  /** Time allowed for one `apt-get download` (default 10 minutes). */
  aptTimeoutMs?: number;
  /** apt's configuration, whose mirrors of a package's archive are tried when its own mirrors fail (auto mode). */
  aptSources?: AptSourcesOptions;
}

/** Returns the path of the verified file in the cache (sha256 and size equal to the lockfile's). */
export type FetchPackage = (pkg: PackageRef, mirrors: string[], options: FetchOptions) => Promise<string>;

export interface FetcherOptions {
  /** Default: `defaultCacheDir()`. */
  cacheDir?: string;
  /** Default: `auto`. */
  via?: FetchVia;
  /** At most this many downloads at once, whatever the build concurrency (default 4). */
  downloads?: number;
  logger?: Logger;
  /** The mirror list of a package's repository (after `--mirror` overrides). */
  mirrorsFor: (pkg: PackageRef) => string[];
  http?: HttpOptions;
  verify?: boolean;
  aptTimeoutMs?: number;
  /** apt's configuration, whose mirrors of a package's archive are tried when its own mirrors fail (auto mode). */
  aptSources?: AptSourcesOptions;
  /** Aborts every download of this fetcher. */
  signal?: AbortSignal;
}

export interface FetcherStats {
  /** Packages found verified in the cache. */
  cacheHits: number;
  /** Packages downloaded (over HTTP or through apt) and stored. */
  downloads: number;
  /** Bytes downloaded and stored. */
  bytes: number;
}

/** What the runner holds: one per run, shared by every target. */
export interface Fetcher {
  readonly cacheDir: string;
  /** The verified file's path in the cache. Concurrent calls for one sha256 share one download. */
  fetch(pkg: PackageRef, options?: { signal?: AbortSignal }): Promise<string>;
  stats(): FetcherStats;
}

export interface ExtractOptions {
  /** Drop this many leading path components of every entry (and hard link target), as `tar --strip-components`. */
  strip?: number;
  /** Refuse an archive (or set of archives) that would write more file bytes than this (default 4 GiB). */
  maxBytes?: number;
  /** Refuse more entries than this (default 500,000). */
  maxEntries?: number;
  /** Replace an existing destination (atomically); without it an existing destination is an error. */
  replace?: boolean;
  signal?: AbortSignal;
}

export interface ExtractSummary {
  root: string;
  entries: number;
  files: number;
  bytes: number;
}
