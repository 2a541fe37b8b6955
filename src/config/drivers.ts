import { resolve as resolvePath } from 'node:path';
import { isMap, isScalar, isSeq, parseDocument, Scalar, type YAMLMap } from 'yaml';
import { FalcoProbesError } from '../util/errors.js';
import { compareNatural } from '../util/natural-sort.js';
import { checkRelativePath, checkSha256 } from '../util/names.js';
import { loadYamlFile, parseYamlText, type LoadedYaml } from './yaml-load.js';
import { driversSchema } from './schema/drivers.js';
import type { BuilderPin, DriverPin } from '../graph/types.js';

// kernels/drivers.yaml: which drivers to build and with which toolchain.
// The schema is the first line of defence; the rules below are the ones a
// schema cannot say (unique names and versions, ranges in order, paths that
// stay inside the project).

export const DRIVERS_FILE = 'drivers.yaml';

export interface DriversFile {
  builder: BuilderPin;
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

export function parseDriversText(text: string, file: string): LoadedDrivers {
  return checkDrivers(parseYamlText<DriversFile>(text, file, driversSchema), file);
}

function checkDrivers(loaded: LoadedYaml<DriversFile>, file: string): LoadedDrivers {
  const where = (path: (string | number)[]) => ({ file, ...(loaded.positionOf(path) ?? {}) });
  const { builder, drivers } = loaded.value;
  const names = new Map<string, number>();
  const versions = new Map<string, number>();
  drivers.forEach((d, i) => {
    const clash = names.get(d.name);
    if (clash !== undefined) throw new FalcoProbesError('config', `driver name "${d.name}" is used twice (also drivers[${clash}])`, { location: where(['drivers', i, 'name']) });
    names.set(d.name, i);
    // The repository is laid out by driver version alone (Falco's layout), so two drivers cannot share one.
    const sameVersion = versions.get(d.version);
    if (sameVersion !== undefined)
      throw new FalcoProbesError('config', `driver version "${d.version}" is used by two drivers (also drivers[${sameVersion}]); the repository keeps one folder per driver version`, {
        location: where(['drivers', i, 'version']),
      });
    versions.set(d.version, i);
    if (d.version.includes('..')) throw new FalcoProbesError('config', `driver version "${d.version}" must not contain ".."`, { location: where(['drivers', i, 'version']) });
    const { min, max } = d.kernels ?? {};
    if (min !== undefined && max !== undefined && compareNatural(min, max) >= 0)
      throw new FalcoProbesError('config', `kernels.min ${min} must be lower than kernels.max ${max} (max is exclusive)`, { location: where(['drivers', i, 'kernels']) });
    const inside = (value: string, path: (string | number)[], what: string) => {
      if (value === '.') return;
      try {
        checkRelativePath(value);
      } catch {
        throw new FalcoProbesError('config', `${what} "${value}" must be a relative path without "." or ".." segments`, { location: where(path) });
      }
    };
    inside(d.bpfDir, ['drivers', i, 'bpfDir'], 'bpfDir');
    if ('path' in d.source) {
      if (d.source.path === '.') throw new FalcoProbesError('config', 'source.path must name a directory below the project root, not the root itself', { location: where(['drivers', i, 'source', 'path']) });
      inside(d.source.path, ['drivers', i, 'source', 'path'], 'source.path');
    }
  });
  return { builder, drivers, file, where };
}

/** Is the driver's source a tarball without a sha256 pin (it cannot have a key)? */
export function isUnpinnedRemote(driver: DriverPin): boolean {
  return 'url' in driver.source && driver.source.sha256 === undefined;
}

/**
 * Set `drivers[name].source.sha256` in the text of drivers.yaml and return
 * the new text. The yaml Document API finds the nodes; the edit itself is
 * made on the text at their source positions (replace the old value, or add
 * one line under `url:` at its indentation), so every comment, blank line
 * and quoting style elsewhere stays byte for byte.
 */
export function setDriverSha256(text: string, file: string, driverName: string, sha256: string): string {
  checkSha256(sha256);
  const doc = parseDocument(text);
  if (doc.errors.length) throw new FalcoProbesError('config', `invalid YAML: ${doc.errors[0]!.message.split('\n')[0]}`, { location: { file } });
  const drivers = doc.get('drivers');
  if (!isSeq(drivers)) throw new FalcoProbesError('config', 'no "drivers" list', { location: { file } });
  const entry = drivers.items.find((item) => isMap(item) && item.get('name') === driverName) as YAMLMap | undefined;
  if (!entry) throw new FalcoProbesError('usage', `no driver named "${driverName}" in ${file}`);
  const source = entry.get('source');
  if (!isMap(source) || !source.has('url')) throw new FalcoProbesError('usage', `driver "${driverName}" has no tarball source (source.url) to pin`, { location: { file } });
  const existing = source.get('sha256', true);
  if (isScalar(existing) && existing.range) return text.slice(0, existing.range[0]) + sha256 + text.slice(existing.range[1]);
  const urlPair = source.items.find((p) => isScalar(p.key) && p.key.value === 'url');
  const keyStart = isScalar(urlPair?.key) ? urlPair.key.range?.[0] : undefined;
  const valueEnd = isScalar(urlPair?.value) ? urlPair.value.range?.[1] : undefined;
  if (source.flow || keyStart === undefined || valueEnd === undefined) {
    // A flow mapping (`source: {url: ...}`): let the Document write it.
    source.set('sha256', new Scalar(sha256));
    return doc.toString({ lineWidth: 0, flowCollectionPadding: false });
  }
  const column = keyStart - (text.lastIndexOf('\n', keyStart - 1) + 1);
  const lineEnd = text.indexOf('\n', valueEnd);
  const at = lineEnd < 0 ? text.length : lineEnd;
  return `${text.slice(0, at)}\n${' '.repeat(column)}sha256: ${sha256}${text.slice(at)}`;
}
