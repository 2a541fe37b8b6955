import type { PackageRef } from '../config/types.js';
import type { LoadedSourceDefinition } from '../config/source-definition.js';
import { FalcoProbesError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { Target } from '../graph/types.js';

// Which mirrors serve a package: the mirror list of its repository in its
// OS's source definition, or the `--mirror NAME=URL` override. A lockfile
// names repositories, never hosts, so the same package ref can be served
// from anywhere; repository names are only unique within one OS, so each
// package is remembered with the OS of the target it came from.

export interface MirrorTable {
  mirrorsFor(pkg: PackageRef): string[];
}

export function createMirrorTable(
  targets: readonly Target[],
  sources: ReadonlyMap<string, LoadedSourceDefinition>,
  overrides: ReadonlyMap<string, string[]>,
  logger?: Logger,
): MirrorTable {
  const osOf = new WeakMap<PackageRef, string>();
  for (const t of targets) for (const p of t.kernel.packages) osOf.set(p, t.os);
  const known = new Set<string>();
  for (const s of sources.values()) for (const r of s.definition.repositories) known.add(r.name);
  for (const name of overrides.keys())
    if (!known.has(name)) logger?.warn(`--mirror ${name}: no source definition in this build has a repository named ${name}`);
  return {
    mirrorsFor(pkg) {
      const override = overrides.get(pkg.repository);
      if (override) return override;
      const os = osOf.get(pkg);
      const source = os === undefined ? undefined : sources.get(os);
      const repo = source?.definition.repositories.find((r) => r.name === pkg.repository);
      if (!repo)
        throw new FalcoProbesError(
          'config',
          `package ${pkg.name} names repository "${pkg.repository}", which ${source ? `${source.relativePath} does not define` : 'no loaded source definition defines'}`,
          {
            ...(source ? { location: { file: source.file } } : {}),
            hint: 'the lockfile and its source definition disagree: run falco-probes resolve',
          },
        );
      return repo.mirrors;
    },
  };
}
