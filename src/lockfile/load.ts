import { readFileSync, statSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { basename, join, relative, resolve as resolvePath } from 'node:path';
import type { ValidateFunction } from 'ajv';
import { lazyAjv } from '../util/lazy-require.js';
import { isValid, UnsupportedSchema } from '../util/json-schema-lite.js';
import { FalcoProbesError, type ErrorLocation } from '../util/errors.js';
import { sha256Hex } from '../util/hash.js';
import { readLockfileText } from './lockfile.js';
import { readCanonicalLockfile } from './canonical-reader.js';
import { checkKernelNames, checkLockfileRules } from './rules.js';
import { lockfileSchema } from './schema.js';
import type { Lockfile } from '../config/types.js';
import { parseYamlSubset, type Position, type YamlPath } from '../util/yaml-subset.js';

// Every lockfile under kernels/, read fast and checked as strictly as
// `readLockfile` does: the same schema, the same rules (rules.ts), plus the check
// that each lockfile was resolved from the source definition as it is now.

export interface LoadedLockfile {
  lock: Lockfile;
  /** Absolute path. */
  file: string;
  /** Path relative to the project root, for messages and generated headers. */
  relativePath: string;
  /** Position of a node (the lockfile is parsed again to find it; only for errors). */
  where(path: YamlPath): ErrorLocation;
}

let validator: ValidateFunction | undefined;
/** The lockfile schema: the small validator's answer when it is yes, ajv's otherwise (it has the messages). */
function validateLockfileShape(value: unknown): boolean {
  try {
    if (isValid(lockfileSchema, value)) return true;
  } catch (err) {
    if (!(err instanceof UnsupportedSchema)) throw err;
  }
  validator ??= new (lazyAjv())({ allErrors: false, strict: true, strictRequired: false, allowUnionTypes: true }).compile(lockfileSchema);
  return validator(value);
}

/**
 * Absolute paths of kernels/*.lock.yaml, sorted: files (or links to files)
 * whose name does not start with a dot, as the glob `*.lock.yaml` finds them.
 */
export async function findLockfiles(kernelsDir: string): Promise<string[]> {
  const dir = resolvePath(kernelsDir);
  const entries = await readdir(dir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return [];
    throw err;
  });
  const files: string[] = [];
  for (const e of entries) {
    if (!e.name.endsWith('.lock.yaml') || e.name.startsWith('.')) continue;
    const path = join(dir, e.name);
    if (e.isFile() || (e.isSymbolicLink() && statSync(path, { throwIfNoEntry: false })?.isFile())) files.push(path);
  }
  return files.sort();
}

/** Positions of nodes of a lockfile's text, found only when asked (a second, tracking parse); `text` is read then when not given. */
function positionsOf(abs: string, text?: string): (path: YamlPath) => ErrorLocation {
  let positioned: ((p: YamlPath) => Position | undefined) | undefined;
  return (path: YamlPath): ErrorLocation => {
    if (!positioned) {
      let t = text;
      if (t === undefined) {
        try {
          t = readFileSync(abs, 'utf8');
        } catch {
          t = '';
        }
      }
      positioned = parseYamlSubset(t, { track: true })?.positionOf ?? (() => undefined);
    }
    return { file: abs, ...(positioned(path) ?? {}) };
  };
}

/** Read one lockfile: the fast subset reader when it can, the full YAML loader (with positions) when it cannot or when something is wrong. */
export async function loadLockfile(file: string, projectRoot: string, alreadyRead?: string): Promise<LoadedLockfile> {
  const abs = resolvePath(file);
  let text: string;
  if (alreadyRead !== undefined) text = alreadyRead;
  else {
    try {
      text = await readFile(abs, 'utf8');
    } catch (err) {
      throw new FalcoProbesError('config', `cannot read: ${(err as Error).message}`, { location: { file: abs } });
    }
  }
  return parseLoadedLockfile(abs, projectRoot, text);
}

/** `loadLockfile` of text already read, synchronously (a graph served by its memo parses a lockfile only when something asks for its kernels). */
export function parseLoadedLockfile(file: string, projectRoot: string, text: string): LoadedLockfile {
  const abs = resolvePath(file);
  const relativePath = relative(projectRoot, abs).split('\\').join('/');
  const where = positionsOf(abs, text);
  // The layout serializeLockfile writes, read fast; then the YAML subset; then the YAML parser.
  const canonical = readCanonicalLockfile(text);
  const value = canonical?.value ?? parseYamlSubset(text)?.value;
  let lock: Lockfile;
  if (value !== undefined) {
    checkKernelNames(value, where);
    // Kernels the fast reader held to the schema as it read them: the schema judges the rest of the document.
    const shape = canonical?.kernelsValid ? { ...canonical.value, kernels: [] } : value;
    if (!validateLockfileShape(shape))
      lock = readLockfileText(text, abs); // throws with file:line:col
    else lock = value as Lockfile;
    checkLockfileRules(lock, where);
  } else {
    lock = readLockfileText(text, abs);
  }
  const expected = basename(abs, '.lock.yaml');
  if (lock.os !== expected)
    throw new FalcoProbesError('config', `os "${lock.os}" does not match the file name; expected "${expected}"`, {
      location: where(['os']),
    });
  return { lock, file: abs, relativePath, where };
}

/**
 * A lockfile records the sha256 of the source definition it was resolved
 * from; when the definition has changed since, its kernels may be wrong.
 */
export async function checkLockfileFresh(loaded: LoadedLockfile, projectRoot: string, definitionBytes?: Buffer): Promise<void> {
  const definition = resolvePath(projectRoot, 'kernels', `${loaded.lock.os}.yaml`);
  checkLockfileFreshSync(loaded, definitionBytes ?? (await readFile(definition).catch(() => undefined)));
}

/** `checkLockfileFresh` with the definition's bytes already read (undefined: there is no definition). */
export function checkLockfileFreshSync(loaded: LoadedLockfile, definitionBytes: Buffer | undefined): void {
  const { lock } = loaded;
  const bytes = definitionBytes;
  if (bytes === undefined) {
    throw new FalcoProbesError('config', `no source definition kernels/${lock.os}.yaml for this lockfile`, {
      location: loaded.where(['source', 'path']),
      hint: `restore kernels/${lock.os}.yaml, or remove ${loaded.relativePath} if the OS is gone`,
    });
  }
  const now = sha256Hex(bytes);
  if (now !== lock.source.sha256)
    throw new FalcoProbesError(
      'stale',
      `${loaded.relativePath} is stale: it was resolved from a kernels/${lock.os}.yaml whose sha256 was ${lock.source.sha256.slice(0, 12)}, the file's is now ${now.slice(0, 12)}`,
      {
        location: loaded.where(['source', 'sha256']),
        hint: `run \`falco-probes resolve ${lock.os}\`, then generate again`,
      },
    );
}
