import { NotInSubset, parseYamlSubset, subsetScalar } from '../util/yaml-subset.js';
import { ANNOTATIONS } from '../util/json-schema-lite.js';
import { lockfileSchema } from './schema.js';

// The lockfile as `serializeLockfile` writes it, read by two patterns: one
// for a kernel's own fields, one for a package. A lockfile is tens of
// thousands of lines of the same two shapes; matching a whole kernel or
// package at once is about twice as fast as the YAML subset reader's
// line-by-line walk. The part before `kernels:` (a few lines) goes through
// that reader, and every value through its scalar rules, so what this
// returns is what parseYamlSubset returns for the same text (held by
// test/lockfile-canonical-reader.test.ts). Any other layout (another key
// order, a comment or blank line among the kernels, an unknown key, other
// indentation, `kernels: []`) gives undefined, and the caller reads the
// text with parseYamlSubset or the YAML parser as before.
//
// The patterns also hold each value to the lockfile schema (schema.ts): a
// field's pattern is made from its schema, so a kernel whose value the
// schema refuses does not match, and the text goes the slow way, which
// names the value and its line. What the schema says of the kernels then
// need not be checked again (`kernelsValid`); the part before `kernels:`
// and the rules (rules.ts) still are. A field whose schema has a shape
// these patterns cannot state takes any value instead, and then the schema
// checks the kernels as it does any other document's.

/** A value as serializeLockfile writes it on one line: double-quoted without escapes, or plain. */
const ANY = `("[^"\\\\\\n]*"|[^\\n"' ][^\\n]*)`;

type Schema = Readonly<Record<string, unknown>>;

const onlyKeys = (schema: Schema, keys: readonly string[]) => Object.keys(schema).every((k) => keys.includes(k) || ANNOTATIONS.has(k));

/**
 * A schema pattern made of ASCII character classes with counts, anchored at
 * both ends (`^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$`): ranges of letters or
 * digits, the listed punctuation, and `-` only last. No class of this shape
 * holds a quote, a backslash or a line end, so its text reads the same
 * plain or between double quotes, and with or without the `u` flag.
 */
const CLASS_PATTERN =
  /^\^((?:\[(?:[A-Z]-[A-Z]|[a-z]-[a-z]|[0-9]-[0-9]|[A-Za-z0-9 #%()+,./:=@_~])+-?\](?:\{[0-9]{1,4}(?:,[0-9]{1,4})?\}|[*+?])?)+)\$$/;
const ENUM_WORD = /^[A-Za-z0-9_.-]{1,64}$/;
const escapeWord = (w: string) => w.replace(/\./g, '\\.');

/** What a value's pattern must be for the schema to accept it, what it must read as, and its length (ASCII: code units are characters). */
interface FieldRule {
  token: string;
  type: 'string' | 'number';
  minLength: number;
  maxLength: number;
}

const ELEMENT = /\[([^\]]*)\](?:\{([0-9]+)(?:(,)([0-9]*))?\}|([*+?]))?/g;

/**
 * The classes of a CLASS_PATTERN body as a pattern and a length. A bounded
 * count (`{0,199}`) costs the regular expression engine about twice what an
 * open one does over a lockfile, so when one class alone has a count other
 * than one, it is matched open (`*`) and the value's length is checked
 * instead: the other classes take one character each, so that is the same
 * test (`[0-9a-f]{64}` is `[0-9a-f]*` of length 64).
 */
function classRule(body: string): Omit<FieldRule, 'token' | 'type'> & { pattern: string } {
  const elements = [...body.matchAll(ELEMENT)].map((m) => {
    const [source, cls, from, comma, to, op] = m;
    let [min, max] = [1, 1];
    if (op === '*') [min, max] = [0, Infinity];
    else if (op === '+') [min, max] = [1, Infinity];
    else if (op === '?') [min, max] = [0, 1];
    else if (from !== undefined) {
      min = Number(from);
      max = comma === undefined ? min : to === '' ? Infinity : Number(to);
    }
    return { cls: `[${cls}]`, source, min, max };
  });
  const counted = elements.filter((e) => e.min !== 1 || e.max !== 1);
  if (counted.length !== 1 || counted[0]!.min > counted[0]!.max) return { pattern: body, minLength: 0, maxLength: Infinity };
  const c = counted[0]!;
  const single = elements.length - 1;
  return {
    pattern: elements.map((e) => (e === c ? `${e.cls}*` : e.source)).join(''),
    minLength: single + c.min,
    maxLength: single + c.max,
  };
}

/**
 * The pattern of one field's value (one capture group: the value as written,
 * quotes and all) that only a value the schema accepts matches (with its
 * type and length checked), or undefined when the schema has any other shape.
 */
export function fieldRule(schema: Schema): FieldRule | undefined {
  if (schema['type'] === 'string' && typeof schema['pattern'] === 'string' && onlyKeys(schema, ['type', 'pattern'])) {
    const m = CLASS_PATTERN.exec(schema['pattern']);
    if (!m) return undefined;
    const { pattern, minLength, maxLength } = classRule(m[1]!);
    return { token: `((?:${pattern})|"(?:${pattern})")`, type: 'string', minLength, maxLength };
  }
  if (schema['type'] === 'string' && Array.isArray(schema['enum']) && onlyKeys(schema, ['type', 'enum'])) {
    const words = schema['enum'] as unknown[];
    if (words.length === 0 || !words.every((w) => typeof w === 'string' && ENUM_WORD.test(w))) return undefined;
    const alternatives = (words as string[]).map(escapeWord).join('|');
    return { token: `((?:${alternatives})|"(?:${alternatives})")`, type: 'string', minLength: 0, maxLength: Infinity };
  }
  // A size: fifteen digits at most, which the YAML subset reads as a number (`06` too), exactly.
  if (schema['type'] === 'integer' && schema['minimum'] === 0 && onlyKeys(schema, ['type', 'minimum']))
    return { token: '([0-9]{1,15})', type: 'number', minLength: 0, maxLength: Infinity };
  return undefined;
}

/** One line per field, in serializeLockfile's order; `optional` fields may be left out. */
type Layout = readonly { name: string; optional?: true }[];
const KERNEL_FIELDS: Layout = [
  { name: 'name' },
  { name: 'release' },
  { name: 'version' },
  { name: 'machine' },
  { name: 'kernelVersion' },
  { name: 'targetId' },
  { name: 'flavour', optional: true },
];
const PACKAGE_FIELDS: Layout = [
  { name: 'name' },
  { name: 'version' },
  { name: 'role', optional: true },
  { name: 'repository' },
  { name: 'path' },
  { name: 'sha256' },
  { name: 'size' },
];

/**
 * An object's fields as the layout writes them, each line's value held to its
 * schema where it can be (`checked`: all of them, and the object's schema
 * allows exactly the layout's fields, requiring no optional one).
 */
function objectPattern(
  schema: Schema | undefined,
  layout: Layout,
  indent: string,
  extra: readonly string[],
): { lines: string; rules: (FieldRule | undefined)[]; checked: boolean } {
  const properties = (schema?.['properties'] ?? {}) as Record<string, Schema>;
  const required = Array.isArray(schema?.['required']) ? (schema['required'] as string[]) : [];
  const names = [...layout.map((f) => f.name), ...extra];
  let checked =
    schema !== undefined &&
    schema['type'] === 'object' &&
    schema['additionalProperties'] === false &&
    onlyKeys(schema, ['type', 'additionalProperties', 'required', 'properties']) &&
    Object.keys(properties).length === names.length &&
    names.every((n) => Object.hasOwn(properties, n)) &&
    required.every((r) => names.includes(r) && !layout.some((f) => f.name === r && f.optional));
  const rules: (FieldRule | undefined)[] = [];
  let lines = '';
  layout.forEach((f, i) => {
    const rule = Object.hasOwn(properties, f.name) ? fieldRule(properties[f.name]!) : undefined;
    if (!rule) checked = false;
    rules.push(rule);
    const line = `${i === 0 ? `${indent}- ` : `${indent}  `}${f.name}: ${rule?.token ?? ANY}\\n`;
    lines += f.optional ? `(?:${line})?` : line;
  });
  return { lines, rules, checked };
}

/** The two patterns of a lockfile schema's layout, each field's rule, and whether they check everything the schema says of the kernels. */
export interface LockfileReader {
  kernel: RegExp;
  package: RegExp;
  kernelRules: (FieldRule | undefined)[];
  packageRules: (FieldRule | undefined)[];
  /**
   * A document read with these patterns holds kernels the schema accepts:
   * every field's pattern comes from its schema, the kernels and packages
   * allow exactly the layout's fields, and the lists' own keywords (a kernel
   * has at least one package; the reader never returns one without) say no more.
   */
  kernelsChecked: boolean;
}

/** The reader of lockfiles for `schema` (the lockfile schema, or another one in tests). */
export function compileLockfileReader(schema: Schema): LockfileReader {
  const kernelsSchema = ((schema['properties'] as Record<string, Schema> | undefined)?.['kernels'] ?? {}) as Schema;
  const kernelSchema = kernelsSchema['items'] as Schema | undefined;
  const packagesSchema = (kernelSchema?.['properties'] as Record<string, Schema> | undefined)?.['packages'];
  const kernel = objectPattern(kernelSchema, KERNEL_FIELDS, '  ', ['packages']);
  const pkg = objectPattern(packagesSchema?.['items'] as Schema | undefined, PACKAGE_FIELDS, '      ', []);
  return {
    kernel: new RegExp(`${kernel.lines}    packages:\\n`, 'y'),
    package: new RegExp(pkg.lines, 'y'),
    kernelRules: kernel.rules,
    packageRules: pkg.rules,
    kernelsChecked:
      kernel.checked &&
      pkg.checked &&
      kernelsSchema['type'] === 'array' &&
      onlyKeys(kernelsSchema, ['type', 'items']) &&
      packagesSchema !== undefined &&
      packagesSchema['type'] === 'array' &&
      onlyKeys(packagesSchema, ['type', 'items', 'minItems']) &&
      (packagesSchema['minItems'] === undefined || packagesSchema['minItems'] === 0 || packagesSchema['minItems'] === 1),
  };
}

/** The reader of this project's lockfiles. */
export const LOCKFILE_READER = compileLockfileReader(lockfileSchema);

const KERNELS_KEY = '\nkernels:\n';

/** The subset's reading of one value; a value it does not take (NotInSubset) means another layout. */
const value = subsetScalar;

/** A value that is not what its field's pattern promised the schema (a plain `1` is a number, not a string): leave the text to the slow way. */
class NotChecked extends Error {}

/** `value`, held to the type and length its field's rule names. */
function typed(rule: FieldRule | undefined): (token: string) => unknown {
  if (rule === undefined) return value;
  const { type, minLength, maxLength } = rule;
  if (type === 'number')
    return (token) => {
      const v = value(token);
      if (typeof v !== 'number') throw new NotChecked();
      return v;
    };
  return (token) => {
    const v = value(token);
    if (typeof v !== 'string' || v.length < minLength || v.length > maxLength) throw new NotChecked();
    return v;
  };
}

/**
 * `typed`, remembering the last value of one field: most fields repeat from
 * one kernel or package to the next (machine, target id, repository, role,
 * a kernel's packages' version), and the one string kept for them all is
 * fewer objects for the garbage collector to move.
 */
function field(rule: FieldRule | undefined): (token: string) => unknown {
  const read = typed(rule);
  let lastToken: string | undefined;
  let lastValue: unknown;
  return (token) => {
    if (token !== lastToken) {
      lastValue = read(token);
      // Strings and numbers only: `[]` or `{}` (which the schema refuses) are new each time, as the subset reader makes them.
      lastToken = typeof lastValue === 'object' ? undefined : token;
    }
    return lastValue;
  };
}

export interface CanonicalLockfile {
  /** What parseYamlSubset returns for the same text. */
  value: Record<string, unknown>;
  /** The schema accepts every kernel of it (the reader's `kernelsChecked`); what comes before `kernels:` is not checked. */
  kernelsValid: boolean;
}

/**
 * The document parseYamlSubset would return for this lockfile text, or
 * undefined when it is not laid out as serializeLockfile writes or a
 * kernel's value is one its field's pattern refuses (the schema's, where it could be made).
 */
export function readCanonicalLockfile(text: string, reader: LockfileReader = LOCKFILE_READER): CanonicalLockfile | undefined {
  const at = text.indexOf(KERNELS_KEY);
  if (at < 0 || text.includes('\r') || text.includes('\t')) return undefined;
  const head = parseYamlSubset(text.slice(0, at + KERNELS_KEY.length));
  const doc = head?.value as Record<string, unknown> | undefined;
  // `kernels:` with nothing after it in the head: the last key, its list below.
  if (doc === undefined || Array.isArray(doc) || doc['kernels'] !== null || Object.keys(doc).at(-1) !== 'kernels') return undefined;
  const kernels: Record<string, unknown>[] = [];
  let pos = at + KERNELS_KEY.length;
  const { kernel: KERNEL_RE, package: PACKAGE_RE } = reader;
  const [kName, kRelease, kVersion] = reader.kernelRules.map(typed);
  const [machine, kernelVersion, targetId, flavour] = reader.kernelRules.slice(3).map(field);
  const [pName, , , , pPath, pSha256] = reader.packageRules.map(typed);
  const [, pkgVersion, role, repository, , , size] = reader.packageRules.map(field);
  try {
    while (pos < text.length) {
      KERNEL_RE.lastIndex = pos;
      const k = KERNEL_RE.exec(text);
      if (k === null) return undefined;
      pos = KERNEL_RE.lastIndex;
      const packages: Record<string, unknown>[] = [];
      for (;;) {
        PACKAGE_RE.lastIndex = pos;
        const p = PACKAGE_RE.exec(text);
        if (p === null) break;
        pos = PACKAGE_RE.lastIndex;
        const pkg: Record<string, unknown> = { name: pName!(p[1]!), version: pkgVersion!(p[2]!) };
        if (p[3] !== undefined) pkg['role'] = role!(p[3]);
        pkg['repository'] = repository!(p[4]!);
        pkg['path'] = pPath!(p[5]!);
        pkg['sha256'] = pSha256!(p[6]!);
        pkg['size'] = size!(p[7]!);
        packages.push(pkg);
      }
      // `packages:` with no item below is null to the subset reader: leave that to it.
      if (packages.length === 0) return undefined;
      const kernel: Record<string, unknown> = {
        name: kName!(k[1]!),
        release: kRelease!(k[2]!),
        version: kVersion!(k[3]!),
        machine: machine!(k[4]!),
        kernelVersion: kernelVersion!(k[5]!),
        targetId: targetId!(k[6]!),
      };
      if (k[7] !== undefined) kernel['flavour'] = flavour!(k[7]);
      kernel['packages'] = packages;
      kernels.push(kernel);
    }
  } catch (err) {
    if (err instanceof NotInSubset || err instanceof NotChecked) return undefined;
    throw err;
  }
  if (kernels.length === 0) return undefined;
  doc['kernels'] = kernels;
  return { value: doc, kernelsValid: reader.kernelsChecked };
}
