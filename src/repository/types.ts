// The probe repository: Falco's download layout plus an index.
//
//   <root>/<driver version>/<arch>/falco_<targetId>_<release>_<kernelversion>.o
//   <root>/index.json      every probe with its key and sha256 (this file's shape)
//   <root>/SHA256SUMS      `<sha256>  <file>` per probe, sorted by file
//
// A file in it is never overwritten with different bytes.

export const INDEX_FILE = 'index.json';
export const SUMS_FILE = 'SHA256SUMS';
/** Detached ed25519 signature over index.json and SHA256SUMS (docs/PUBLISHING.md). */
export const SIGNATURE_FILE = 'index.json.sig';
export const INDEX_VERSION = 1;

export interface ProbeEntry {
  /** Repository-relative path: `<driver version>/<arch>/<probe file>`. */
  file: string;
  /** The target key it was built for. */
  key: string;
  sha256: string;
  size: number;
  os: string;
  /** Kernel name (the lockfile entry). */
  kernel: string;
  driver: string;
  driverVersion: string;
  arch: string;
  kind: string;
  /** Result of loading it into its own kernel (the load test), when checked. */
  load?: { verdict: 'loaded' | 'refused' | 'no-boot' | 'timeout' | 'unknown'; kernelImageSha256: string; message?: string };
}

export interface RepositoryIndex {
  version: typeof INDEX_VERSION;
  /** Sorted by `file`. */
  probes: ProbeEntry[];
}
