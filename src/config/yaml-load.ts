import { readFile } from 'node:fs/promises';
import type { Document, LineCounter, Node as YamlNode } from 'yaml';
import type { Ajv, ErrorObject, ValidateFunction } from 'ajv';
import { FalcoProbesError } from '../util/errors.js';
import { lazyAjv, lazyYaml } from '../util/lazy-require.js';
import { isValid, UnsupportedSchema } from '../util/json-schema-lite.js';

// Reads a YAML file, validates it against a JSON Schema with ajv, and turns
// every failure into `file:line:col: what is wrong, what is expected`.
// `yaml` and `ajv` are loaded on first use (util/lazy-require.ts).

let ajv: Ajv | undefined;
const compiled = new Map<object, ValidateFunction>();

function validatorFor(schema: object): ValidateFunction {
  let v = compiled.get(schema);
  if (!v) {
    ajv ??= new (lazyAjv())({ allErrors: true, strict: true, strictRequired: false, allowUnionTypes: true });
    v = ajv.compile(schema);
    compiled.set(schema, v);
  }
  return v;
}

/** The small validator's yes (util/json-schema-lite.ts): ajv is compiled only to judge a no, and to say what is wrong. */
function quicklyValid(schema: object, value: unknown): boolean {
  try {
    return isValid(schema, value);
  } catch (err) {
    if (err instanceof UnsupportedSchema) return false;
    throw err;
  }
}

export interface LoadedYaml<T> {
  value: T;
  /** Position (1-based line and column) of the node at a path, for later semantic errors. */
  positionOf(path: readonly (string | number)[]): { line: number; column: number } | undefined;
  text: string;
}

export async function loadYamlFile<T>(file: string, schema: object): Promise<LoadedYaml<T>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new FalcoProbesError('config', code === 'ENOENT' ? 'file not found' : `cannot read: ${(err as Error).message}`, {
      location: { file },
    });
  }
  return parseYamlText<T>(text, file, schema);
}

export function parseYamlText<T>(text: string, file: string, schema: object): LoadedYaml<T> {
  const { LineCounter, parseDocument, visit } = lazyYaml();
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false, version: '1.2' });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const pos = lineCounter.linePos(e.pos[0]);
    throw new FalcoProbesError('config', `invalid YAML: ${e.message.split('\n')[0]}`, {
      location: { file, line: pos.line, column: pos.col },
    });
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 50 }) as unknown;
  } catch (err) {
    // `yaml` refuses aliases that expand too far (a "billion laughs" bomb) with a bare ReferenceError: name the first alias.
    let at: { line: number; col: number } = { line: 1, col: 1 };
    visit(doc, {
      Alias(_, node) {
        if (node.range) at = lineCounter.linePos(node.range[0]);
        return visit.BREAK;
      },
    });
    throw new FalcoProbesError('config', `invalid YAML: ${(err as Error).message.split('\n')[0]}`, {
      location: { file, line: at.line, column: at.col },
      hint: 'aliases (*name) that expand to too many nodes are refused; write the values out',
    });
  }
  const positionOf = (path: readonly (string | number)[]) => nodePosition(doc, lineCounter, path);
  if (quicklyValid(schema, value)) return { value: value as T, positionOf, text };
  const validate = validatorFor(schema);
  if (!validate(value)) {
    const errors = pickErrors(validate.errors ?? []);
    const first = errors[0]!;
    const { path, message } = describeAjvError(first);
    const pos = positionOf(path) ?? { line: 1, column: 1 };
    const more = errors.slice(1, 6).map((e) => {
      const d = describeAjvError(e);
      const p = positionOf(d.path);
      return `  ${file}:${p?.line ?? 1}:${p?.column ?? 1}: ${d.message}`;
    });
    throw new FalcoProbesError('config', message, {
      location: { file, line: pos.line, column: pos.column },
      ...(more.length ? { details: more.join('\n') } : {}),
    });
  }
  return { value: value as T, positionOf, text };
}

// With oneOf/anyOf ajv reports every branch; the most specific (deepest path) error is the useful one.
function pickErrors(errors: ErrorObject[]): ErrorObject[] {
  const useful = errors.filter((e) => e.keyword !== 'oneOf' && e.keyword !== 'anyOf' && e.keyword !== 'if');
  const list = useful.length ? useful : errors;
  // Deepest first; at equal depth an unknown key (often a typo) before a missing one.
  const weight = (e: ErrorObject) => e.instancePath.split('/').length + (e.keyword === 'additionalProperties' ? 0.5 : 0);
  return [...list].sort((a, b) => weight(b) - weight(a));
}

function decodePointer(pointer: string): (string | number)[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

function describeAjvError(e: ErrorObject): { path: (string | number)[]; message: string } {
  const path = decodePointer(e.instancePath);
  const at = path.length ? path.join('.') : 'the document';
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = String((e.params as { additionalProperty: string }).additionalProperty);
      return { path: [...path, key], message: `unknown key "${key}" in ${at}` };
    }
    case 'required':
      return { path, message: `${at} is missing the required key "${(e.params as { missingProperty: string }).missingProperty}"` };
    case 'enum':
      return {
        path,
        message: `${at} must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`,
      };
    case 'pattern':
      return { path, message: `${at} must match ${(e.params as { pattern: string }).pattern}` };
    case 'type':
      return { path, message: `${at} must be ${(e.params as { type: string }).type}` };
    default:
      return { path, message: `${at} ${e.message ?? 'is invalid'}` };
  }
}

function nodePosition(doc: Document, lc: LineCounter, path: readonly (string | number)[]): { line: number; column: number } | undefined {
  const { isMap, isPair, isScalar, isSeq } = lazyYaml();
  let node: unknown = doc.contents;
  let keyNode: unknown;
  for (const seg of path) {
    keyNode = undefined;
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) break;
      keyNode = pair.key;
      node = pair.value ?? pair.key;
    } else if (isSeq(node) && typeof seg === 'number') {
      node = node.items[seg];
    } else {
      break;
    }
  }
  const target = (keyNode ?? node) as YamlNode | undefined;
  const range = target && (target as { range?: [number, number, number] }).range;
  if (!range) return undefined;
  const p = lc.linePos(range[0]);
  return { line: p.line, column: p.col };
}
