import { FalcoProbesError } from '../util/errors.js';
import { releaseAtLeast } from '../util/natural-sort.js';
import type { LoadedSourceDefinition } from '../config/source-definition.js';
import type { Lockfile } from '../config/types.js';
import type { ResolveOptions, Resolver } from './types.js';

// Code per repository format, never per distribution: a distribution is data.
const resolvers: Record<string, () => Promise<Resolver>> = {
  apt: async () => (await import('./apt.js')).resolveAptSource,
  yum: async () => (await import('./yum.js')).resolveYumSource,
  cos: async () => (await import('./cos.js')).resolveCosSource,
};

/** Resolve a source definition into a lockfile (in memory; the caller decides whether to write it). */
export async function resolveSource(source: LoadedSourceDefinition, options: ResolveOptions = {}): Promise<Lockfile> {
  const def = source.definition;
  for (const name of options.mirrorOverrides?.keys() ?? []) {
    if (!def.repositories.some((r) => r.name === name))
      throw new FalcoProbesError('usage', `--mirror names repository "${name}", which ${source.relativePath} does not define`, {
        hint: `repositories: ${def.repositories.map((r) => r.name).join(', ')}`,
      });
  }
  const load = resolvers[def.type];
  if (!load) throw new FalcoProbesError('config', `no resolver for repository type "${def.type}"`, { location: { file: source.file } });
  const resolver = await load();
  const kernels = (await resolver(source, options)).filter(
    (k) => releaseAtLeast(k.release, def.minimumKernel) && def.architectures.includes(k.machine),
  );
  return {
    os: def.id,
    source: { path: source.relativePath, sha256: source.sha256 },
    osRelease: def.osRelease,
    kernels,
  };
}
