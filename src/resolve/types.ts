import { homedir } from 'node:os';
import { join } from 'node:path';
import type { AptSourcesOptions } from '../fetch/apt-sources.js';
import type { HttpOptions } from '../util/http.js';
import type { Logger } from '../util/log.js';
import type { KernelDescriptor } from '../config/types.js';
import type { LoadedSourceDefinition } from '../config/source-definition.js';

export interface ResolveOptions {
  /** `--mirror NAME=URL`: replaces the mirror list of repository NAME. */
  mirrorOverrides?: ReadonlyMap<string, string[]>;
  http?: HttpOptions;
  logger?: Logger;
  /**
   * Where resolvers that must download more than metadata (COS: each build's headers
   * tarball) remember what they learnt, keyed by content. Default: resolveCacheDir().
   */
  cacheDir?: string;
  /**
   * apt's configuration, read when a definition's own mirrors of an apt
   * repository do not answer (never when --mirror names the repository):
   * apt's mirrors for the same URI path are tried next. Default: /etc/apt
   * ($FALCO_PROBES_APT_ETC).
   */
  aptSources?: AptSourcesOptions;
}

/** `$FALCO_PROBES_RESOLVE_CACHE`, else `$XDG_CACHE_HOME/falco-probes/resolve` (or `~/.cache/...`). */
export function resolveCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const override = env['FALCO_PROBES_RESOLVE_CACHE'];
  if (override) return override;
  const xdg = env['XDG_CACHE_HOME'];
  const base = xdg?.startsWith('/') ? xdg : join(homedir(), '.cache');
  return join(base, 'falco-probes', 'resolve');
}

/** One resolver per repository format. It returns every kernel the mirrors list, unsorted; the caller sorts and writes. */
export type Resolver = (source: LoadedSourceDefinition, options: ResolveOptions) => Promise<KernelDescriptor[]>;

export function mirrorsFor(source: LoadedSourceDefinition, repoName: string, options: ResolveOptions): string[] {
  const override = options.mirrorOverrides?.get(repoName);
  if (override?.length) return override;
  const repo = source.definition.repositories.find((r) => r.name === repoName);
  return repo ? repo.mirrors : [];
}
