import { readFileSync } from 'node:fs';
import { parseYamlText } from '../config/yaml-load.js';
import type { ErrorLocation } from '../util/errors.js';
import type { LoadedSourceDefinition } from '../config/source-definition.js';

// Errors a resolver finds in a definition's data (a pattern that matches
// nothing, a regular expression it cannot compile) name the definition's
// file, line and column, as the schema checks do. The loader does not keep
// the YAML document, so it is parsed again here, only when an error is
// being reported.

const ANY = {};

/** `file:line:col` of the node at `path` in the definition (just the file when it cannot be found). */
export function definitionLocation(source: LoadedSourceDefinition, path: readonly (string | number)[]): ErrorLocation {
  try {
    const loaded = parseYamlText<unknown>(readFileSync(source.file, 'utf8'), source.file, ANY);
    return { file: source.file, ...(loaded.positionOf(path) ?? {}) };
  } catch {
    return { file: source.file };
  }
}
