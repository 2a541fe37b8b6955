// A small JSON Schema validator for the keywords this project's own schemas
// use (src/config/schema/, the repository index), answering only "valid or
// not". ajv stays the validator of record: it gives the messages, and
// compiling a schema with it costs more than a no-op build (bench/noop.ts),
// so the hot paths ask this one first and go to ajv only when the answer is
// no. A schema with any keyword not implemented here throws
// UnsupportedSchema, and the caller uses ajv for it: this validator never
// accepts what it does not understand. test/json-schema-lite.test.ts holds
// it to ajv's answers on the real schemas.

export class UnsupportedSchema extends Error {}

type Schema = Record<string, unknown>;

/** Annotations that do not constrain a value. */
export const ANNOTATIONS: ReadonlySet<string> = new Set(['$id', '$schema', 'title', 'description', 'default', 'examples', '$comment']);
const KNOWN = new Set([
  ...ANNOTATIONS,
  'type',
  'properties',
  'required',
  'additionalProperties',
  'propertyNames',
  'items',
  'minItems',
  'maxItems',
  'uniqueItems',
  'pattern',
  'minLength',
  'maxLength',
  'minimum',
  'maximum',
  'enum',
  'const',
  'oneOf',
  'anyOf',
]);

type Check = (value: unknown) => boolean;
const compiled = new WeakMap<object, Check>();

/** Whether `value` is valid against `schema`; throws UnsupportedSchema for a schema this validator cannot judge. */
export function isValid(schema: object, value: unknown): boolean {
  return compile(schema)(value);
}

/** Compile once (a schema object is compiled the first time it is seen); throws UnsupportedSchema. */
export function compile(schema: object): Check {
  let check = compiled.get(schema);
  if (!check) {
    check = build(schema as Schema);
    compiled.set(schema, check);
  }
  return check;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isPrimitive = (v: unknown) => v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';

/** Length in code points, as JSON Schema (and ajv) count it. */
function codePoints(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n--;
        i++;
      }
    }
  }
  return n;
}

function typeCheck(type: unknown): Check {
  const one = (t: unknown): Check => {
    switch (t) {
      case 'object':
        return isObject;
      case 'array':
        return Array.isArray;
      case 'string':
        return (v) => typeof v === 'string';
      case 'integer':
        return (v) => typeof v === 'number' && Number.isInteger(v);
      case 'number':
        return (v) => typeof v === 'number' && Number.isFinite(v);
      case 'boolean':
        return (v) => typeof v === 'boolean';
      case 'null':
        return (v) => v === null;
      default:
        throw new UnsupportedSchema(`type ${String(t)}`);
    }
  };
  if (Array.isArray(type)) {
    const checks = type.map(one);
    return (v) => checks.some((c) => c(v));
  }
  return one(type);
}

function build(schema: Schema): Check {
  if (!isObject(schema)) throw new UnsupportedSchema('schema is not an object');
  for (const k of Object.keys(schema)) if (!KNOWN.has(k)) throw new UnsupportedSchema(`keyword ${k}`);
  const checks: Check[] = [];
  if (schema['type'] !== undefined) checks.push(typeCheck(schema['type']));

  // Object keywords (apply to objects only).
  const properties = schema['properties'];
  const required = schema['required'];
  const additional = schema['additionalProperties'];
  const propertyNames = schema['propertyNames'];
  if (properties !== undefined || required !== undefined || additional !== undefined || propertyNames !== undefined) {
    if (properties !== undefined && !isObject(properties)) throw new UnsupportedSchema('properties');
    if (required !== undefined && !(Array.isArray(required) && required.every((r) => typeof r === 'string')))
      throw new UnsupportedSchema('required');
    const props = new Map<string, Check>(Object.entries((properties ?? {}) as Record<string, object>).map(([k, s]) => [k, compile(s)]));
    const req = (required ?? []) as string[];
    let extra: Check | 'forbidden' | undefined;
    if (additional === false) extra = 'forbidden';
    else if (additional === true || additional === undefined) extra = undefined;
    else if (isObject(additional)) extra = compile(additional);
    else throw new UnsupportedSchema('additionalProperties');
    const names = propertyNames !== undefined ? compile(propertyNames as object) : undefined;
    checks.push((v) => {
      if (!isObject(v)) return true;
      for (const r of req) if (v[r] === undefined) return false; // ajv's test for a missing property
      for (const k of Object.keys(v)) {
        if (names && !names(k)) return false;
        const p = props.get(k);
        if (p) {
          if (!p(v[k])) return false;
        } else if (extra === 'forbidden') return false;
        else if (extra && !extra(v[k])) return false;
      }
      return true;
    });
  }

  // Array keywords.
  const items = schema['items'];
  const minItems = schema['minItems'];
  const maxItems = schema['maxItems'];
  const unique = schema['uniqueItems'];
  if (items !== undefined || minItems !== undefined || maxItems !== undefined || unique !== undefined) {
    if (items !== undefined && !isObject(items)) throw new UnsupportedSchema('items (tuple form)');
    const item = items !== undefined ? compile(items as object) : undefined;
    if (unique !== undefined && typeof unique !== 'boolean') throw new UnsupportedSchema('uniqueItems');
    checks.push((v) => {
      if (!Array.isArray(v)) return true;
      if (typeof minItems === 'number' && v.length < minItems) return false;
      if (typeof maxItems === 'number' && v.length > maxItems) return false;
      if (item) for (const x of v) if (!item(x)) return false;
      if (unique === true) {
        if (!v.every(isPrimitive)) throw new UnsupportedSchema('uniqueItems of non-primitive values');
        if (new Set(v).size !== v.length) return false;
      }
      return true;
    });
  }

  // String keywords.
  const pattern = schema['pattern'];
  const minLength = schema['minLength'];
  const maxLength = schema['maxLength'];
  if (pattern !== undefined || minLength !== undefined || maxLength !== undefined) {
    if (pattern !== undefined && typeof pattern !== 'string') throw new UnsupportedSchema('pattern');
    const re = pattern !== undefined ? new RegExp(pattern, 'u') : undefined;
    checks.push((v) => {
      if (typeof v !== 'string') return true;
      if (minLength !== undefined || maxLength !== undefined) {
        const n = codePoints(v);
        if (typeof minLength === 'number' && n < minLength) return false;
        if (typeof maxLength === 'number' && n > maxLength) return false;
      }
      return re === undefined || re.test(v);
    });
  }

  // Number keywords.
  const minimum = schema['minimum'];
  const maximum = schema['maximum'];
  if (minimum !== undefined || maximum !== undefined) {
    if ((minimum !== undefined && typeof minimum !== 'number') || (maximum !== undefined && typeof maximum !== 'number'))
      throw new UnsupportedSchema('minimum/maximum');
    checks.push(
      (v) =>
        typeof v !== 'number' ||
        ((minimum === undefined || v >= (minimum as number)) && (maximum === undefined || v <= (maximum as number))),
    );
  }

  if (schema['enum'] !== undefined) {
    const values = schema['enum'];
    if (!Array.isArray(values) || !values.every(isPrimitive)) throw new UnsupportedSchema('enum of non-primitive values');
    checks.push((v) => (values as unknown[]).includes(v));
  }
  if (schema['const'] !== undefined) {
    const c = schema['const'];
    if (!isPrimitive(c)) throw new UnsupportedSchema('const of a non-primitive value');
    checks.push((v) => v === c);
  }
  for (const combinator of ['oneOf', 'anyOf'] as const) {
    const branches = schema[combinator];
    if (branches === undefined) continue;
    if (!Array.isArray(branches)) throw new UnsupportedSchema(combinator);
    const bs = branches.map((b) => compile(b as object));
    checks.push(combinator === 'oneOf' ? (v) => bs.filter((b) => b(v)).length === 1 : (v) => bs.some((b) => b(v)));
  }
  if (checks.length === 1) return checks[0]!;
  return (v) => {
    for (const c of checks) if (!c(v)) return false;
    return true;
  };
}
