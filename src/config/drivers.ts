import { resolve as resolvePath } from 'node:path';
import type { YAMLMap } from 'yaml';
import { FalcoProbesError } from '../util/errors.js';
import { compareNatural } from '../util/natural-sort.js';
import { checkRelativePath, checkSha256 } from '../util/names.js';
import { loadYamlFile, parseYamlText, type LoadedYaml } from './yaml-load.js';
import { lazyYaml } from '../util/lazy-require.js';
import { isValid } from '../util/json-schema-lite.js';
import { parseYamlSubset } from '../util/yaml-subset.js';
import { driversSchema } from './schema/drivers.js';
import type { BuilderPin, CompilerImagePin, DriverPin } from './types.js';

// kernels/drivers.yaml: which drivers to build and with which toolchain.
// The schema is the first line of defence; the rules below are the ones a
// schema cannot say (unique versions, ranges in order, the fields each kind
// needs, one pin per tarball, paths that stay inside the project).

export const DRIVERS_FILE = 'drivers.yaml';

export interface DriversFile {
  builder: BuilderPin;
  /** Builder images of other Debian releases, chosen for kernel modules by their kernel's gcc. */
  compilerImages?: CompilerImagePin[];
  drivers: DriverPin[];
}

export interface LoadedDrivers extends DriversFile {
  /** Absolute path of the YAML file. */
  file: string;
  /** `file:line:col` of a node, for errors found later (a missing source directory). */
  where(path: (string | number)[]): { file: string; line?: number; column?: number };
}

export function driversPathFor(kernelsDir: string): string {
  return resolvePath(kernelsDir, DRIVERS_FILE);
}

export async function loadDrivers(file: string): Promise<LoadedDrivers> {
  const abs = resolvePath(file);
  return checkDrivers(await loadYamlFile<DriversFile>(abs, driversSchema), abs);
}

/**
 * drivers.yaml's text, checked. Text in the subset the lockfile reader
 * knows (graph/yaml-subset.ts, which gives what the YAML parser gives)
 * that the schema's small validator accepts is read without the YAML
 * parser; positions for a message are found by parsing it again then.
 * Anything else, and every schema error, goes through the YAML parser and
 * ajv (yaml-load.ts).
 */
export function parseDriversText(text: string, file: string): LoadedDrivers {
  const quick = parseYamlSubset(text);
  let valid = false;
  try {
    valid = quick !== undefined && isValid(driversSchema, quick.value);
  } catch {
    valid = false;
  }
  if (quick && valid) {
    let full: LoadedYaml<DriversFile> | undefined;
    const positionOf = (path: readonly (string | number)[]) =>
      (full ??= parseYamlText<DriversFile>(text, file, driversSchema)).positionOf(path);
    return checkDrivers({ value: quick.value as DriversFile, positionOf, text }, file);
  }
  return checkDrivers(parseYamlText<DriversFile>(text, file, driversSchema), file);
}

/**
 * What a memo remembered of drivers.yaml (graph/graph-cache.ts), held to
 * the schema and every rule below again, as if it had been read from the
 * file; undefined when anything fails (the caller reads the file then).
 * Positions are not known: errors found later name the file only.
 */
export function rememberedDrivers(value: unknown, file: string): LoadedDrivers | undefined {
  try {
    if (!isValid(driversSchema, value)) return undefined;
    return checkDrivers({ value: value as DriversFile, positionOf: () => undefined, text: '' }, file);
  } catch {
    return undefined;
  }
}

/** The part of a loaded drivers.yaml a memo keeps: what the file says. */
export function driversFileOf(loaded: LoadedDrivers): DriversFile {
  return { builder: loaded.builder, ...(loaded.compilerImages ? { compilerImages: loaded.compilerImages } : {}), drivers: loaded.drivers };
}

function checkDrivers(loaded: LoadedYaml<DriversFile>, file: string): LoadedDrivers {
  const where = (path: (string | number)[]) => ({ file, ...(loaded.positionOf(path) ?? {}) });
  const { builder, drivers, compilerImages } = loaded.value;
  const releases = new Map<string, number>();
  (compilerImages ?? []).forEach((c, i) => {
    const clash = releases.get(c.release);
    if (clash !== undefined)
      throw new FalcoProbesError('config', `compiler image "${c.release}" is listed twice (also compilerImages[${clash}])`, {
        location: where(['compilerImages', i, 'release']),
      });
    releases.set(c.release, i);
  });
  const versions = new Map<string, number>();
  drivers.forEach((d, i) => {
    const at = (...path: (string | number)[]) => where(['drivers', i, ...path]);
    // One name may have several versions (Falco 0.43's and 0.44's drivers side by side). The repository is
    // laid out by driver version alone (Falco's layout), so a version is used once, whatever the name:
    // that also makes (name, version) unique.
    const sameVersion = versions.get(d.version);
    if (sameVersion !== undefined) {
      const other = drivers[sameVersion]!;
      throw new FalcoProbesError(
        'config',
        other.name === d.name
          ? `driver ${d.name} ${d.version} is listed twice (also drivers[${sameVersion}])`
          : `driver version "${d.version}" is used by two drivers (${other.name} in drivers[${sameVersion}] and ${d.name}); the repository keeps one folder per driver version`,
        { location: at('version') },
      );
    }
    versions.set(d.version, i);
    if (d.version.includes('..'))
      throw new FalcoProbesError('config', `driver version "${d.version}" must not contain ".."`, { location: at('version') });
    const { min, max } = d.kernels ?? {};
    if (min !== undefined && max !== undefined && compareNatural(min, max) >= 0)
      throw new FalcoProbesError('config', `kernels.min ${min} must be lower than kernels.max ${max} (max is exclusive)`, {
        location: at('kernels'),
      });
    const inside = (value: string, path: (string | number)[], what: string) => {
      if (value === '.') return;
      try {
        checkRelativePath(value);
      } catch {
        throw new FalcoProbesError('config', `${what} "${value}" must be a relative path without "." or ".." segments`, {
          location: at(...path),
        });
      }
    };
    // Each kind names where kbuild runs and what it produces; a field of a kind the driver does not build is a mistake.
    const perKind = [
      { kind: 'bpf', fields: ['bpfDir', 'object'], what: "the folder of the probe's kbuild Makefile and the object it makes" },
      { kind: 'kmod', fields: ['kmodDir', 'module'], what: "the folder of the module's kbuild Makefile and the module it makes" },
    ] as const;
    for (const { kind, fields, what } of perKind) {
      const builds = d.kinds.includes(kind);
      for (const field of fields) {
        const value = d[field];
        if (builds && value === undefined)
          throw new FalcoProbesError(
            'config',
            `driver ${d.name} ${d.version} builds kind ${kind}, so it needs ${fields.join(' and ')} (${what}); ${field} is missing`,
            {
              location: at('kinds'),
            },
          );
        if (!builds && value !== undefined)
          throw new FalcoProbesError(
            'config',
            `driver ${d.name} ${d.version} has ${field} but does not build kind ${kind} (kinds: [${d.kinds.join(', ')}])`,
            {
              location: at(field),
              hint: `add ${kind} to kinds, or remove ${field}`,
            },
          );
      }
    }
    if (d.bpfDir !== undefined) inside(d.bpfDir, ['bpfDir'], 'bpfDir');
    if (d.kmodDir !== undefined) inside(d.kmodDir, ['kmodDir'], 'kmodDir');
    const source = d.source;
    if ('path' in source) {
      if (source.path === '.')
        throw new FalcoProbesError('config', 'source.path must name a directory below the project root, not the root itself', {
          location: at('source', 'path'),
        });
      inside(source.path, ['source', 'path'], 'source.path');
    } else if ('url' in source) {
      if (source.sha256 !== undefined && source.tree !== undefined)
        throw new FalcoProbesError('config', `driver ${d.name} ${d.version}: source has both sha256 and tree; pin it one way`, {
          location: at('source', 'tree'),
          hint: "tree (the hash of the unpacked content) for archives whose bytes may change, such as GitHub's; sha256 for fixed bytes",
        });
    } else {
      try {
        checkRelativePath(source.deb.path);
      } catch {
        throw new FalcoProbesError(
          'config',
          `source.deb.path "${source.deb.path}" must be a path relative to the archive root without "." or ".." segments`,
          {
            location: at('source', 'deb', 'path'),
          },
        );
      }
      inside(source.dir, ['source', 'dir'], 'source.dir');
    }
  });
  return { builder, drivers, ...(compilerImages && compilerImages.length > 0 ? { compilerImages } : {}), file, where };
}

/** Is the driver's source a tarball pinned neither by sha256 nor by tree hash (it cannot have a key)? */
export function isUnpinnedRemote(driver: DriverPin): boolean {
  return 'url' in driver.source && driver.source.sha256 === undefined && driver.source.tree === undefined;
}

/** How a driver is named in messages: `falco 9.1.0+driver`. */
export function driverLabel(driver: Pick<DriverPin, 'name' | 'version'>): string {
  return `${driver.name} ${driver.version}`;
}

/**
 * Set a tarball pin (`source.sha256` or `source.tree`) of one driver in the
 * text of drivers.yaml and return the new text. The yaml Document API finds
 * the nodes; the edit itself is made on the text at their source positions
 * (replace the old value, or add one line under `url:` at its indentation),
 * so every comment, blank line and quoting style elsewhere stays byte for byte.
 */
export function setDriverPin(
  text: string,
  file: string,
  driver: string | { name: string; version: string },
  field: 'sha256' | 'tree',
  value: string,
): string {
  checkSha256(value);
  const { isMap, isScalar, isSeq, parseDocument, Scalar } = lazyYaml();
  const doc = parseDocument(text);
  if (doc.errors.length)
    throw new FalcoProbesError('config', `invalid YAML: ${doc.errors[0]!.message.split('\n')[0]}`, { location: { file } });
  const drivers = doc.get('drivers');
  if (!isSeq(drivers)) throw new FalcoProbesError('config', 'no "drivers" list', { location: { file } });
  const wanted = typeof driver === 'string' ? { name: driver } : driver;
  const shown = 'version' in wanted ? `${wanted.name} ${wanted.version}` : wanted.name;
  const entries = drivers.items.filter(
    (item): item is YAMLMap =>
      isMap(item) && item.get('name') === wanted.name && (!('version' in wanted) || String(item.get('version')) === wanted.version),
  );
  if (entries.length === 0) throw new FalcoProbesError('usage', `no driver ${shown} in ${file}`);
  if (entries.length > 1)
    throw new FalcoProbesError('usage', `${entries.length} drivers are named ${shown} in ${file}; name the version too`);
  const source = entries[0]!.get('source');
  if (!isMap(source) || !source.has('url'))
    throw new FalcoProbesError('usage', `driver ${shown} has no tarball source (source.url) to pin`, { location: { file } });
  const existing = source.get(field, true);
  if (isScalar(existing) && existing.range) return text.slice(0, existing.range[0]) + value + text.slice(existing.range[1]);
  const urlPair = source.items.find((p) => isScalar(p.key) && p.key.value === 'url');
  const keyStart = isScalar(urlPair?.key) ? urlPair.key.range?.[0] : undefined;
  const valueEnd = isScalar(urlPair?.value) ? urlPair.value.range?.[1] : undefined;
  if (source.flow || keyStart === undefined || valueEnd === undefined) {
    // A flow mapping (`source: {url: ...}`): let the Document write it.
    source.set(field, new Scalar(value));
    return doc.toString({ lineWidth: 0, flowCollectionPadding: false });
  }
  const column = keyStart - (text.lastIndexOf('\n', keyStart - 1) + 1);
  const lineEnd = text.indexOf('\n', valueEnd);
  const at = lineEnd < 0 ? text.length : lineEnd;
  return `${text.slice(0, at)}\n${' '.repeat(column)}${field}: ${value}${text.slice(at)}`;
}
