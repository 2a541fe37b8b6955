import type { ProbeEntry } from './types.js';

// How Falco's loaders find a probe in a repository (DRIVERS_REPO for
// falco-driver-loader, FALCOCTL_DRIVER_REPOS or `driver.repos` for falcoctl):
//
//   <repo>/<driver version>/<arch>/falco_<targetId>_<release>_<kernelversion>.o
//
// with every path segment URL-encoded, so the `+` of `9.1.0+driver` or of a
// Debian `6.12.117+deb12-amd64` release travels as `%2B` (a literal `+` is
// read as a space by some servers and object stores). Loaders before the arch
// folder existed fetched `<repo>/<driver version>/<file>`, x86_64 only; a
// published repository keeps a copy there for x86_64 probes (docs/PUBLISHING.md).

/** Architectures the legacy no-arch layout served (it predates aarch64 builds). */
export const LEGACY_LAYOUT_ARCHES: readonly string[] = ['x86_64'];

/** URL-encode each segment of a repository-relative path (`+` becomes `%2B`, `/` stays). */
export function encodeRepositoryPath(relPath: string): string {
  return relPath.split('/').map(encodeURIComponent).join('/');
}

/** The download URL of a repository-relative file under a repository base URL. */
export function repositoryFileUrl(base: string, relPath: string): string {
  return `${base.replace(/\/+$/, '')}/${encodeRepositoryPath(relPath)}`;
}

/**
 * The legacy no-arch path of an indexed probe (`<driver version>/<probe file>`),
 * or undefined when the probe's arch never had that layout.
 */
export function legacyPathOf(entry: Pick<ProbeEntry, 'file' | 'arch'>): string | undefined {
  if (!LEGACY_LAYOUT_ARCHES.includes(entry.arch)) return undefined;
  const parts = entry.file.split('/');
  if (parts.length !== 3 || parts[1] !== entry.arch) return undefined;
  return `${parts[0]}/${parts[2]}`;
}
