import { relative, resolve as resolvePath, basename } from 'node:path';
import fg from 'fast-glob';
import { FalcoProbesError } from '../util/errors.js';
import { sha256Hex } from '../util/hash.js';
import { loadYamlFile } from './yaml-load.js';
import { sourceDefinitionSchema } from './schema/source-definition.js';
import type { SourceDefinition } from './types.js';

export interface LoadedSourceDefinition {
  definition: SourceDefinition;
  /** Absolute path of the YAML file. */
  file: string;
  /** Path relative to the project root, as recorded in lockfiles. */
  relativePath: string;
  /** sha256 of the file's bytes: a lockfile records it to notice a stale lock. */
  sha256: string;
}

export async function loadSourceDefinition(file: string, projectRoot = process.cwd()): Promise<LoadedSourceDefinition> {
  const abs = resolvePath(file);
  const loaded = await loadYamlFile<SourceDefinition>(abs, sourceDefinitionSchema);
  const def = loaded.value;
  const where = (path: (string | number)[]) => ({ file: abs, ...(loaded.positionOf(path) ?? {}) });

  const expectedId = basename(abs).replace(/\.ya?ml$/, '');
  if (def.id !== expectedId)
    throw new FalcoProbesError('config', `id "${def.id}" does not match the file name; expected "${expectedId}"`, {
      location: where(['id']),
    });

  const names = new Set<string>();
  def.repositories.forEach((repo, i) => {
    if (names.has(repo.name))
      throw new FalcoProbesError('config', `repository name "${repo.name}" is used twice`, {
        location: where(['repositories', i, 'name']),
      });
    names.add(repo.name);
    if (def.type === 'apt' && !repo.suite)
      throw new FalcoProbesError('config', `apt repository "${repo.name}" needs a "suite"`, { location: where(['repositories', i]) });
  });

  // Regular expressions are data too: a broken one is a config error with its position.
  const checkRegex = (pattern: string, path: (string | number)[]) => {
    try {
      new RegExp(pattern, 'u');
    } catch (err) {
      throw new FalcoProbesError('config', `invalid regular expression: ${(err as Error).message}`, { location: where(path) });
    }
  };
  def.apt?.headers.forEach((h, i) => {
    checkRegex(h.pattern, ['apt', 'headers', i, 'pattern']);
    if (!/\(\?<release>/.test(h.pattern))
      throw new FalcoProbesError('config', 'a headers pattern needs a named group (?<release>...)', {
        location: where(['apt', 'headers', i, 'pattern']),
      });
  });
  for (const [i, p] of (def.apt?.follow ?? []).entries()) checkRegex(p, ['apt', 'follow', i]);
  if (def.apt?.versionPattern) checkRegex(def.apt.versionPattern, ['apt', 'versionPattern']);

  const relativePath = relative(projectRoot, abs).split('\\').join('/');
  return { definition: def, file: abs, relativePath, sha256: sha256Hex(loaded.text) };
}

/** Every source definition under `kernels/` (not lockfiles, not pin files). */
export async function findSourceDefinitionFiles(kernelsDir: string): Promise<string[]> {
  const files = await fg('*.yaml', { cwd: kernelsDir, absolute: true, onlyFiles: true });
  return files.filter((f) => !f.endsWith('.lock.yaml') && !basename(f).startsWith('drivers')).sort();
}

export async function loadSourceDefinitionById(
  id: string,
  kernelsDir: string,
  projectRoot = process.cwd(),
): Promise<LoadedSourceDefinition> {
  const files = await findSourceDefinitionFiles(kernelsDir);
  const match = files.find((f) => basename(f) === `${id}.yaml`);
  if (!match) {
    const known = files.map((f) => basename(f, '.yaml'));
    throw new FalcoProbesError('usage', `unknown OS "${id}"`, {
      hint: known.length ? `known: ${known.join(', ')}` : `no source definitions in ${kernelsDir}`,
    });
  }
  return loadSourceDefinition(match, projectRoot);
}
