import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { parse } from 'yaml';
import { parseYamlSubset } from '../src/util/yaml-subset.js';
import { serializeLockfile } from '../src/lockfile/lockfile.js';
import { sha256Hex } from '../src/util/hash.js';
import { kernel } from './helpers/graph-project.js';

// The fast lockfile reader must give what the YAML parser gives, or step
// aside (undefined) so the full parser reads the text.

const same = (text: string) => {
  const fast = parseYamlSubset(text);
  assert.ok(fast, `the subset reader should accept:\n${text}`);
  assert.deepEqual(fast.value, parse(text, { version: '1.2' }));
};

test('lockfiles written by serializeLockfile read the same as with the YAML parser', async () => {
  const lock = {
    os: 'debian12',
    source: { path: 'kernels/debian12.yaml', sha256: sha256Hex('x') },
    osRelease: { ID: 'debian', VERSION_ID: '12', PRETTY_NAME: 'Debian GNU/Linux 12 (bookworm)', VERSION: '12 (bookworm)' },
    kernels: [kernel('6.1.0-50-amd64'), kernel('6.12.9+deb12-amd64'), kernel('5.10.0-30-amd64', { machine: 'aarch64' })],
  };
  same(serializeLockfile(lock));
  same(serializeLockfile({ ...lock, kernels: [] }));
  // The committed lockfile, when it exists (another stage writes it).
  const real = await readFile(new URL('../kernels/debian12.lock.yaml', import.meta.url), 'utf8').catch(() => undefined);
  if (real !== undefined) same(real);
});

test('plain, quoted and nested forms of the subset', () => {
  same('a: 1\nb: "12"\nc: \'it\'\'s\'\nd: 0123\ne: x y z\nf: "#1 SMP"\ng: []\nh: {}\n');
  same('list:\n- a\n- b\nnested:\n  - k: v\n    l: w\n  -   k: v2\n  -\n    k: v3\n');
  same('- a\n- b\n');
  same('# comment\n\na:\n  # inner comment\n  b: c\n\nd:\n');
  same("a: back\\slash\nb: 'q\"uote'\nc: 6.12.117+deb12-amd64\nd: 1:6.1-1~deb12u1\n");
  // Flow sequences of plain words, as drivers.yaml writes kinds.
  same('kinds: [bpf]\nboth: [kmod, bpf]\nnums: [1, 22, 0123]\npaths: [a/b, x.y+z~1]\n');
});

test("drivers.yaml: the checked-in file and the tests' read the same as with the YAML parser", async () => {
  same(await readFile(new URL('../kernels/drivers.yaml', import.meta.url), 'utf8'));
  const { driversText } = await import('./helpers/graph-project.js');
  for (const remote of ['pinned', 'unpinned', 'none'] as const) same(driversText({ remote }));
});

test('anything outside the subset goes to the full parser', () => {
  const outside = [
    'a: 1.10\n', // a float, not the string "1.10"
    'a: true\n',
    'a: null\n',
    'a: ~\n',
    'a: 0x1F\n',
    'a: 1e3\n',
    'a: -1\n',
    'a: .inf\n',
    'a: "tab\\there"\n', // escapes in double quotes
    'a: &x 1\nb: *x\n', // anchors and aliases
    'a: !!str 1\n', // tags
    'a: [x,y]\n', // flow sequences other than plain words after ", "
    'a: [x, "y"]\n',
    'a: [x,  y]\n',
    'a: [x, [y]]\n',
    'a: [x, y: z]\n',
    'a: [x, y] # c\n',
    'a: [true, x]\n',
    'a: [1.5]\n',
    'a: [x, ]\n',
    'a: {x: 1}\n',
    'a: x # trailing comment\n',
    'a: b: c\n', // a mapping in a plain scalar's place
    'a: word#1 b # c\n', // a comment after a value holding '#'
    'a: |\n  block\n',
    'a: one\n  two\n', // a plain scalar over two lines
    'a: 1\na: 2\n', // duplicate keys (the full parser reports them)
    '"quoted key": 1\n',
    '---\na: 1\n',
    'a:\tb\n',
    'a: 1\r\n',
    'plain\n',
    '',
    'a:  two spaces\n',
    'a: 99999999999999999999\n', // beyond a safe integer
    'true: 1\n',
    '__proto__: 1\n',
  ];
  for (const text of outside) assert.equal(parseYamlSubset(text), undefined, `should fall back: ${JSON.stringify(text)}`);
});

test('positions of keys and items, for error messages', () => {
  const text = 'os: x\nkernels:\n  - name: a\n    packages:\n      - name: p\n        size: 1\n  - name: b\n';
  const r = parseYamlSubset(text, { track: true });
  assert.ok(r);
  assert.deepEqual(r.positionOf(['kernels', 1, 'name']), { line: 7, column: 5 });
  assert.deepEqual(r.positionOf(['kernels', 0, 'packages', 0, 'size']), { line: 6, column: 9 });
  assert.deepEqual(r.positionOf(['kernels', 1]), { line: 7, column: 3 });
  assert.deepEqual(r.positionOf(['os']), { line: 1, column: 1 });
  assert.equal(parseYamlSubset(text)!.positionOf(['os']), undefined, 'untracked parses keep no positions');
});
