import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { PROJECT_ROOT } from './helpers/cli.js';

// The shape of src/ that docs/ARCHITECTURE.md states: each folder is a stage
// and imports only stages before it (type imports and dynamic imports count
// too), and no modules import each other in a loop. Read from the sources'
// own import lines.

const SRC = join(PROJECT_ROOT, 'src');
/** docs/ARCHITECTURE.md's order; `cli` is last and may import every stage. */
const STAGES = [
  'util',
  'config',
  'lockfile',
  'naming',
  'fetch',
  'resolve',
  'graph',
  'generate',
  'builders',
  'repository',
  'run',
  'verify',
  'cli',
];

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Every relative module a source file imports or re-exports, statically or with import(). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs = new Set<string>();
  for (const m of text.matchAll(/^\s*(?:import|export)\b[^;'"]*?\bfrom\s*'(\.{1,2}\/[^']+)'/gms)) specs.add(m[1]!);
  for (const m of text.matchAll(/^\s*import\s*'(\.{1,2}\/[^']+)'/gm)) specs.add(m[1]!);
  for (const m of text.matchAll(/\bimport\(\s*'(\.{1,2}\/[^']+)'\s*\)/g)) specs.add(m[1]!);
  return [...specs].map((s) => resolve(dirname(file), s.replace(/\.js$/, '.ts')));
}

const files = sources(SRC);
const graph = new Map(files.map((f) => [f, importsOf(f)]));
const stageOf = (file: string) => relative(SRC, file).split('/')[0]!;
const rel = (file: string) => relative(SRC, file);

test('every module a source imports exists', () => {
  const missing: string[] = [];
  for (const [file, deps] of graph) for (const d of deps) if (!graph.has(d)) missing.push(`${rel(file)} -> ${relative(SRC, d)}`);
  assert.deepEqual(missing, []);
});

test('every folder of src/ is a stage of docs/ARCHITECTURE.md, and the document lists them in this order', () => {
  const folders = [...new Set(files.map(stageOf))].filter((f) => !f.endsWith('.ts')).sort();
  assert.deepEqual(folders, [...STAGES].sort());
  const doc = readFileSync(join(PROJECT_ROOT, 'docs', 'ARCHITECTURE.md'), 'utf8');
  const listed = [...doc.matchAll(/^\| \d+ \| `([a-z]+)\/` \|/gm)].map((m) => m[1]);
  assert.deepEqual(listed, STAGES);
});

test('a stage imports only the stages before it', () => {
  const backEdges: string[] = [];
  for (const [file, deps] of graph) {
    const from = STAGES.indexOf(stageOf(file));
    for (const d of deps) {
      const to = STAGES.indexOf(stageOf(d));
      if (to > from) backEdges.push(`${rel(file)} (${stageOf(file)}) imports ${rel(d)} (${stageOf(d)})`);
    }
  }
  assert.deepEqual(backEdges, []);
});

test('no modules import each other in a loop', () => {
  // Tarjan's strongly connected components; any component of more than one module is a loop.
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const loops: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(rel(w));
      } while (w !== v);
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) loops.push(component.sort());
    }
  };
  for (const f of files) if (!index.has(f)) visit(f);
  assert.deepEqual(loops, []);
});
