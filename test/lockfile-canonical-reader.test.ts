import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { compileLockfileReader, fieldRule, LOCKFILE_READER, readCanonicalLockfile } from '../src/lockfile/canonical-reader.js';
import { lockfileSchema } from '../src/lockfile/schema.js';
import { serializeLockfile } from '../src/lockfile/lockfile.js';
import { parseLoadedLockfile } from '../src/lockfile/load.js';
import { parseYamlSubset } from '../src/util/yaml-subset.js';
import { sha256Hex } from '../src/util/hash.js';
import { PROJECT_ROOT } from './helpers/cli.js';
import { kernel } from './helpers/graph-project.js';
import type { KernelDescriptor, Lockfile } from '../src/config/types.js';

// The fast reader of serializeLockfile's layout returns exactly what the
// YAML subset reader returns for the same text (values, key order), or
// nothing, and then the subset reader (or the YAML parser) reads it. What
// it returns with `kernelsValid` has kernels the lockfile schema accepts
// (ajv, the validator of record, judges), since the schema is then not run
// on them.

const ajv = new Ajv({ allErrors: false, strict: true, strictRequired: false, allowUnionTypes: true });
const schemaAccepts = ajv.compile(lockfileSchema);

/** Same document, same key order: what the subset reader gives; and kernels the schema accepts when it says so. */
function sameAsSubset(text: string, what: string, reader = LOCKFILE_READER): boolean {
  const fast = readCanonicalLockfile(text, reader);
  if (fast === undefined) return false;
  const subset = parseYamlSubset(text);
  assert.ok(subset !== undefined, `${what}: the fast reader took a text the subset reader does not`);
  assert.equal(JSON.stringify(fast.value), JSON.stringify(subset.value), what);
  assert.equal(fast.kernelsValid, reader.kernelsChecked, what);
  if (fast.kernelsValid) {
    // The part before `kernels:` is the schema's to judge (load.ts): here a valid one.
    const kernelsOnly = { os: 'x', source: { path: 'p', sha256: '0'.repeat(64) }, osRelease: { ID: 'x' }, kernels: fast.value['kernels'] };
    assert.ok(
      schemaAccepts(kernelsOnly),
      `${what}: the fast reader took kernels the schema refuses: ${ajv.errorsText(schemaAccepts.errors)}`,
    );
  }
  return true;
}

function lockWith(kernels: KernelDescriptor[]): Lockfile {
  return {
    os: 'debian12',
    source: { path: 'kernels/debian12.yaml', sha256: sha256Hex('definition') },
    osRelease: { ID: 'debian', PRETTY_NAME: 'Debian GNU/Linux 12 (bookworm)', VERSION_ID: '12' },
    kernels,
  };
}

const sample = () => {
  const noFlavour = kernel('6.1.0-50-amd64');
  delete noFlavour.flavour;
  const noRole = kernel('6.12.9+deb12-amd64');
  delete noRole.packages[0]!.role;
  return serializeLockfile(
    lockWith([
      noFlavour,
      noRole,
      kernel('5.10.0-30-arm64', { machine: 'aarch64', flavour: 'arm64' }),
      kernel('6.1.0-51-rt-amd64', { flavour: 'rt-amd64' }),
      kernel('6.1.0-52-amd64', { name: '6.1.0-52-amd64~1' }),
    ]),
  );
};

test('the checked-in lockfiles and serialized ones read as the subset reader reads them', () => {
  for (const os of ['debian12', 'debian13']) {
    const file = join(PROJECT_ROOT, 'kernels', `${os}.lock.yaml`);
    assert.ok(existsSync(file), `${file} is checked in`);
    assert.ok(sameAsSubset(readFileSync(file, 'utf8'), file), `${file}: the fast reader takes it`);
  }
  const text = sample();
  assert.ok(sameAsSubset(text, 'sample'));
  // A value the schema refuses is left to the slow way, which names it and its line.
  assert.ok(LOCKFILE_READER.kernelsChecked, "the lockfile schema's kernels are all checked by the fast reader's patterns");
  const bad = text.replace('machine: aarch64', 'machine: sparc');
  assert.equal(readCanonicalLockfile(bad), undefined, 'a value the schema refuses is not read fast');
  assert.throws(
    () => parseLoadedLockfile('/x/kernels/debian12.lock.yaml', '/x', bad),
    (err: Error & { location?: { file: string; line?: number } }) =>
      /machine/.test(err.message) && err.location?.file === '/x/kernels/debian12.lock.yaml' && (err.location.line ?? 0) > 1,
  );
});

test('another layout is left to the subset reader; whatever the fast reader takes, it reads as the subset reader does', () => {
  const text = sample();
  const lines = text.split('\n');
  const start = lines.indexOf('kernels:') + 1;
  const mutations: [string, (ls: string[], i: number) => string[]][] = [
    ['a comment line', (ls, i) => [...ls.slice(0, i), '    # note', ...ls.slice(i)]],
    ['a blank line', (ls, i) => [...ls.slice(0, i), '', ...ls.slice(i)]],
    ['a line dropped', (ls, i) => [...ls.slice(0, i), ...ls.slice(i + 1)]],
    ['a line twice', (ls, i) => [...ls.slice(0, i + 1), ...ls.slice(i)]],
    ['two lines swapped', (ls, i) => [...ls.slice(0, i), ls[i + 1]!, ls[i]!, ...ls.slice(i + 2)]],
    ['one more space of indentation', (ls, i) => ls.map((l, j) => (j === i ? ` ${l}` : l))],
    ['a trailing space', (ls, i) => ls.map((l, j) => (j === i ? `${l} ` : l))],
    ['a trailing comment', (ls, i) => ls.map((l, j) => (j === i ? `${l} # c` : l))],
    ['an unknown key', (ls, i) => [...ls.slice(0, i), `${/^ */.exec(ls[i]!)![0]}extra: x`, ...ls.slice(i)]],
    ['a value YAML reads as a number', (ls, i) => ls.map((l, j) => (j === i ? l.replace(/: .*$/, ': 1.5') : l))],
    ['a value YAML reads as true', (ls, i) => ls.map((l, j) => (j === i ? l.replace(/: .*$/, ': true') : l))],
    ['a value YAML reads as null', (ls, i) => ls.map((l, j) => (j === i ? l.replace(/: .*$/, ': ~') : l))],
    ['a value holding ": "', (ls, i) => ls.map((l, j) => (j === i ? l.replace(/: (.*)$/, ': $1: x') : l))],
    ['a single-quoted value', (ls, i) => ls.map((l, j) => (j === i ? l.replace(/: (.*)$/, ": 'v'") : l))],
    ['a quoted value with an escape', (ls, i) => ls.map((l, j) => (j === i ? l.replace(/: (.*)$/, ': "a\\tb"') : l))],
    ['a plain value changed', (ls, i) => ls.map((l, j) => (j === i ? l.replace(/: ([A-Za-z0-9].*)$/, ': changed-value') : l))],
    ['an empty list', (ls, i) => ls.map((l, j) => (j === i ? l.replace(/: (.*)$/, ': []') : l))],
  ];
  let taken = 0;
  let left = 0;
  for (const [what, mutate] of mutations)
    for (let i = start - 1; i < lines.length - 1; i++) {
      const mutated = mutate(lines, i).join('\n');
      if (sameAsSubset(mutated, `${what} at line ${i + 1}`)) taken++;
      else left++;
    }
  assert.ok(taken > 0 && left > 0, `some mutations keep the layout (${taken}), some do not (${left})`);
  for (const text2 of [text.slice(0, -1), `${text}extra: 1\n`, text.replace('kernels:\n', 'kernels: \n'), text.replace(/\n/g, '\r\n')])
    assert.equal(readCanonicalLockfile(text2), undefined);
  assert.equal(readCanonicalLockfile(serializeLockfile(lockWith([]))), undefined, "`kernels: []` is the subset reader's");
});

/** A small deterministic generator (xorshift), so a failure names a value that comes back. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

test('a value goes fast exactly when the schema accepts it: every field, random values, plain and double-quoted', () => {
  const text = sample();
  const lines = text.split('\n');
  const start = lines.indexOf('kernels:') + 1;
  const random = prng(17);
  const pool = 'aAzZ09-._+~:#/ (),%@="\\\'é[]{}&*!|>?';
  const pick = (s: string) => s[Math.floor(random() * s.length)]!;
  const lengths = [0, 1, 2, 5, 12, 31, 32, 33, 63, 64, 65, 127, 128, 129, 199, 200, 201, 254, 255, 256, 1023, 1024, 1025];
  const values = (): string[] => {
    const out: string[] = [];
    for (const n of lengths) {
      // Mostly characters every field allows, now and then one from the whole pool.
      let v = '';
      for (let i = 0; i < n; i++) v += random() < 0.97 ? pick('abcdef0123456789') : pick(pool);
      out.push(v);
    }
    for (let i = 0; i < 12; i++) {
      let v = '';
      const n = 1 + Math.floor(random() * 12);
      for (let j = 0; j < n; j++) v += pick(pool);
      out.push(v);
    }
    out.push(
      'x86_64',
      'aarch64',
      'sparc',
      '1',
      '007',
      '123456789012345',
      '1234567890123456',
      'true',
      'null',
      '#1 SMP',
      'ABC',
      'a'.repeat(64),
      'F'.repeat(64),
    );
    return out;
  };
  let fast = 0;
  let slow = 0;
  for (let i = start; i < lines.length - 1; i++) {
    const m = /^( *(?:- )?)([A-Za-z]+): (.*)$/.exec(lines[i]!);
    if (!m || m[2] === 'packages') continue;
    for (const v of values())
      for (const written of [v, `"${v}"`]) {
        const mutated = [...lines.slice(0, i), `${m[1]}${m[2]}: ${written}`, ...lines.slice(i + 1)].join('\n');
        const what = `${m[2]} at line ${i + 1} as ${JSON.stringify(written)}`;
        const taken = sameAsSubset(mutated, what);
        // The other way: what the subset reads and the schema accepts (with this layout) goes fast.
        const subset = parseYamlSubset(mutated);
        if (subset !== undefined && !taken) {
          const doc = subset.value as { kernels?: unknown };
          if (Array.isArray(doc.kernels) && doc.kernels.length > 0)
            assert.ok(!schemaAccepts(doc), `${what}: the schema accepts it, but the fast reader did not take it`);
        }
        if (taken) fast++;
        else slow++;
      }
  }
  assert.ok(fast > 500 && slow > 500, `both ways are taken: ${fast} fast, ${slow} slow`);
});

test("a schema the reader's patterns cannot state is checked by the schema again; the patterns' shapes", () => {
  // Every field of the real schema has a pattern the reader states.
  assert.equal(LOCKFILE_READER.kernelRules.filter((r) => r === undefined).length, 0);
  assert.equal(LOCKFILE_READER.packageRules.filter((r) => r === undefined).length, 0);
  // One counted class: matched open, its length checked; two: the pattern as it is.
  assert.deepEqual(fieldRule({ type: 'string', pattern: '^[0-9a-f]{64}$' }), {
    token: '((?:[0-9a-f]*)|"(?:[0-9a-f]*)")',
    type: 'string',
    minLength: 64,
    maxLength: 64,
  });
  assert.deepEqual(fieldRule({ type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$' }), {
    token: '((?:[A-Za-z0-9][A-Za-z0-9._+-]*)|"(?:[A-Za-z0-9][A-Za-z0-9._+-]*)")',
    type: 'string',
    minLength: 1,
    maxLength: 200,
  });
  assert.deepEqual(fieldRule({ type: 'string', pattern: '^[A-Z]{2}[a-z]{1,3}$' }), {
    token: '((?:[A-Z]{2}[a-z]{1,3})|"(?:[A-Z]{2}[a-z]{1,3})")',
    type: 'string',
    minLength: 0,
    maxLength: Infinity,
  });
  // Shapes it does not state: another keyword, an alternation, a range through punctuation (`+-~` holds `"` and `\`), a negated class, an escape.
  for (const schema of [
    { type: 'string', pattern: '^[a-z]+$', maxLength: 5 },
    { type: 'string', pattern: '^(a|b)$' },
    { type: 'string', pattern: '^[+-~]$' },
    { type: 'string', pattern: '^[^"]+$' },
    { type: 'string', pattern: '^[\\w]+$' },
    { type: 'string', pattern: '^[a-z]+' },
    { type: 'string' },
    { type: 'integer', minimum: 1 },
    { type: 'string', enum: ['a b'] },
  ])
    assert.equal(fieldRule(schema), undefined, JSON.stringify(schema));

  // A lockfile schema with such a field (or an extra optional field, or a longer required list) is read the same, and not taken as checked.
  const kernelItem = lockfileSchema.properties.kernels.items;
  const variants = [
    { ...kernelItem, properties: { ...kernelItem.properties, name: { type: 'string', pattern: '^(?:[0-9a-z.+~-]+)$' } } },
    { ...kernelItem, properties: { ...kernelItem.properties, comment: { type: 'string' } } },
    { ...kernelItem, required: [...kernelItem.required, 'flavour'] },
  ];
  const text = sample();
  for (const [i, items] of variants.entries()) {
    const schema = { ...lockfileSchema, properties: { ...lockfileSchema.properties, kernels: { type: 'array', items } } };
    const reader = compileLockfileReader(schema);
    assert.equal(reader.kernelsChecked, false, `variant ${i}`);
    assert.ok(sameAsSubset(text, `variant ${i}`, reader), `variant ${i}: the layout is still read fast`);
    assert.equal(readCanonicalLockfile(text, reader)?.kernelsValid, false);
  }
});
