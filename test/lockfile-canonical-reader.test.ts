import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readCanonicalLockfile } from '../src/lockfile/canonical-reader.js';
import { serializeLockfile } from '../src/lockfile/lockfile.js';
import { parseLoadedLockfile } from '../src/lockfile/load.js';
import { parseYamlSubset } from '../src/util/yaml-subset.js';
import { sha256Hex } from '../src/util/hash.js';
import { PROJECT_ROOT } from './helpers/cli.js';
import { kernel } from './helpers/graph-project.js';
import type { KernelDescriptor, Lockfile } from '../src/config/types.js';

// The fast reader of serializeLockfile's layout returns exactly what the
// YAML subset reader returns for the same text (values, key order), or
// nothing, and then the subset reader (or the YAML parser) reads it.

/** Same document, same key order: what the subset reader gives. */
function sameAsSubset(text: string, what: string): boolean {
  const fast = readCanonicalLockfile(text);
  if (fast === undefined) return false;
  const subset = parseYamlSubset(text);
  assert.ok(subset !== undefined, `${what}: the fast reader took a text the subset reader does not`);
  assert.equal(JSON.stringify(fast), JSON.stringify(subset.value), what);
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
  // And parseLoadedLockfile, which reads through it, still checks everything: a bad value is an error with its line.
  const bad = text.replace('machine: aarch64', 'machine: sparc');
  assert.ok(readCanonicalLockfile(bad) !== undefined, 'a wrong value is still the same layout');
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
