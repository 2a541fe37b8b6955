import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, chmod, mkdir, readFile, rename, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCli, withTempDir } from './helpers/cli.js';
import { driversText, kernel, makeProject } from './helpers/graph-project.js';
import { loadBuildGraph, type BuildGraph } from '../src/graph/load.js';
import { graphCachePath, sealGraphMemo, unsealGraphMemo } from '../src/graph/graph-cache.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { treeHash } from '../src/util/tree-hash.js';

// The memo of the build graph (src/graph/graph-cache.ts): a load that hits it
// gives the same graph as a load from the lockfiles, and any change to an
// input (a lockfile's bytes, a source definition, drivers.yaml, a local
// driver's files) or a damaged memo leads back to the real load.

const KERNELS = () => [
  kernel('6.1.0-50-amd64'),
  kernel('6.1.0-50-cloud-amd64', { flavour: 'cloud-amd64' }),
  kernel('6.12.9+deb12-amd64'),
  kernel('5.10.0-30-arm64', { machine: 'aarch64' }),
];

/** What a graph says, without its functions (`where`). */
function shape(g: BuildGraph) {
  return {
    targets: g.targets,
    lockfiles: g.lockfiles.map((l) => ({ lock: l.lock, file: l.file, relativePath: l.relativePath })),
    drivers: g.drivers,
    unpinned: g.unpinned,
    builder: g.builder,
    driversFile: g.driversFile,
  };
}

const readMemo = async (root: string) => unsealGraphMemo(await readFile(graphCachePath(root), 'utf8'));

async function withProject(fn: (root: string) => Promise<void>): Promise<void> {
  await withTempDir(async (root) => {
    await makeProject(root, {
      oses: { debian12: KERNELS(), other: [kernel('5.15.0-1-amd64')] },
      drivers: driversText({ remote: 'pinned' }),
    });
    await fn(root);
  }, 'falco-probes-graph-cache-');
}

test('a second load is served by the memo and equals the first, target for target', async () => {
  await withProject(async (root) => {
    const first = await loadBuildGraph(root);
    assert.ok(first.targets.length >= 10, `targets: ${first.targets.length}`);
    const memo = await readMemo(root);
    assert.equal(memo.targets.length, first.targets.length);

    const second = await loadBuildGraph(root);
    assert.deepEqual(shape(second), shape(first));
    // Shared objects stay shared: a target's kernel is its lockfile's entry, as in a real load.
    assert.ok(second.lockfiles.some((l) => l.lock.kernels.includes(second.targets[0]!.kernel)));

    // Proof that the memo served it: a key planted in the memo comes back.
    memo.targets[0]!.key = 'f'.repeat(64);
    await writeFile(graphCachePath(root), sealGraphMemo(memo));
    assert.equal((await loadBuildGraph(root)).targets[0]!.key, 'f'.repeat(64));

    // Without the memo (FALCO_PROBES_GRAPH_CACHE=0) the real key; the memo is neither read nor written.
    const mtime = (await stat(graphCachePath(root))).mtimeMs;
    process.env['FALCO_PROBES_GRAPH_CACHE'] = '0';
    try {
      assert.equal((await loadBuildGraph(root)).targets[0]!.key, first.targets[0]!.key);
    } finally {
      delete process.env['FALCO_PROBES_GRAPH_CACHE'];
    }
    assert.equal((await stat(graphCachePath(root))).mtimeMs, mtime);
  });
});

test('any changed input misses the memo: lockfile bytes, source definition, drivers.yaml, a local driver file', async () => {
  await withProject(async (root) => {
    const first = await loadBuildGraph(root);
    const plant = async () => {
      const memo = await readMemo(root);
      for (const t of memo.targets) t.key = 'f'.repeat(64);
      await writeFile(graphCachePath(root), sealGraphMemo(memo));
      assert.ok(
        (await loadBuildGraph(root)).targets.every((t) => t.key === 'f'.repeat(64)),
        'the planted memo is served while nothing changed',
      );
    };
    const keys = (g: BuildGraph) => g.targets.map((t) => t.key);

    await plant();
    await appendFile(join(root, 'kernels', 'other.lock.yaml'), '# a comment\n');
    assert.deepEqual(keys(await loadBuildGraph(root)), keys(first), 'a comment in a lockfile: real load, same keys');

    await plant();
    await appendFile(join(root, 'drivers', 'example', 'probe.c'), '/* changed */\n');
    const changedDriver = await loadBuildGraph(root);
    const example = (g: BuildGraph) => g.targets.filter((t) => t.driver.name === 'example').map((t) => t.key);
    assert.ok(
      example(changedDriver).every((k, i) => k !== 'f'.repeat(64) && k !== example(first)[i]),
      'a changed local driver moves its keys',
    );

    await plant();
    const drivers = await readFile(join(root, 'kernels', 'drivers.yaml'), 'utf8');
    await writeFile(join(root, 'kernels', 'drivers.yaml'), drivers.replace('clang: "14.0.6"', 'clang: "15.0.7"'));
    const changedBuilder = await loadBuildGraph(root);
    assert.ok(
      changedBuilder.targets.every((t) => t.key !== 'f'.repeat(64) && t.builder.clang === '15.0.7'),
      'a new builder pin: real load',
    );

    await plant();
    await appendFile(join(root, 'kernels', 'debian12.yaml'), '# edited\n');
    await assert.rejects(
      loadBuildGraph(root),
      (e: unknown) => e instanceof FalcoProbesError && /debian12\.lock\.yaml is stale/.test(e.message),
    );
  });
});

test('a damaged or foreign memo is ignored and replaced; a failed load writes none', async () => {
  await withProject(async (root) => {
    const first = await loadBuildGraph(root);
    const good = await readFile(graphCachePath(root), 'utf8');
    const damaged = [
      good.slice(0, Math.floor(good.length / 2)),
      // A target's lockfile index (in the targets section), a driver's field (in the drivers section), the format.
      good.replace(/\n\d+ (\d+ \d+ (?:bpf|kmod) )/, '\n99 $1'),
      good.replace('"builder"', '"bUilder"'),
      good.replace('graph memo 4', 'graph memo 3'),
      `${good}0 0 0 bpf x86_64 extra ${'f'.repeat(64)} extra.o\n`,
      '',
      'not a memo',
    ];
    for (const text of damaged.slice(1, 5)) assert.notEqual(text, good);
    for (const text of damaged) {
      await writeFile(graphCachePath(root), text);
      assert.deepEqual(shape(await loadBuildGraph(root)), shape(first), text.slice(0, 40));
      assert.equal(await readFile(graphCachePath(root), 'utf8'), good, 'rewritten whole');
    }
  });
  await withProject(async (root) => {
    await appendFile(join(root, 'kernels', 'other.lock.yaml'), 'kernels: twice\n');
    await assert.rejects(loadBuildGraph(root), FalcoProbesError);
    await assert.rejects(stat(graphCachePath(root)), 'no memo of a graph that did not load');
  });
});

test('`generate --check` and `build --dry-run` read the memo but write none', async () => {
  await withProject(async (root) => {
    const check = await runCli(['generate', '--check'], { cwd: root });
    assert.equal(check.code, 1, check.stderr);
    await assert.rejects(stat(graphCachePath(root)), 'no memo written by a check');
    const dry = await runCli(['build', '--dry-run', '//probes/other/...'], { cwd: root });
    assert.equal(dry.code, 0, dry.stderr);
    await assert.rejects(stat(graphCachePath(root)), 'no memo written by a dry run');
    assert.equal((await runCli(['generate'], { cwd: root })).code, 0);
    const memo = await readFile(graphCachePath(root));
    assert.equal((await runCli(['generate', '--check'], { cwd: root })).code, 0);
    assert.deepEqual(await readFile(graphCachePath(root)), memo);
  });
});

test("a local driver's tree hash: contents, names and the executable bit count; times and other mode bits do not", async () => {
  await withTempDir(async (dir) => {
    await mkdir(join(dir, 'sub'));
    await writeFile(join(dir, 'Makefile'), 'always-y += probe.o\n');
    await writeFile(join(dir, 'sub', 'probe.c'), '/* a probe */\n');
    await chmod(join(dir, 'Makefile'), 0o644);
    const base = await treeHash(dir);
    assert.equal(await treeHash(dir), base, 'deterministic');

    await utimes(join(dir, 'sub', 'probe.c'), new Date(0), new Date(0));
    await chmod(join(dir, 'Makefile'), 0o600);
    assert.equal(await treeHash(dir), base, 'times and non-executable mode bits do not count');

    await chmod(join(dir, 'Makefile'), 0o755);
    const exec = await treeHash(dir);
    assert.notEqual(exec, base, 'the executable bit counts');
    await chmod(join(dir, 'Makefile'), 0o700);
    assert.equal(await treeHash(dir), exec, 'any executable bit is one state');
    await chmod(join(dir, 'Makefile'), 0o644);
    assert.equal(await treeHash(dir), base);

    await writeFile(join(dir, 'sub', 'probe.o'), 'an object kbuild left behind');
    assert.equal(await treeHash(dir), base, 'build leftovers are ignored');
    await rename(join(dir, 'sub', 'probe.c'), join(dir, 'sub', 'other.c'));
    assert.notEqual(await treeHash(dir), base, 'a renamed file counts');
  }, 'falco-probes-tree-hash-');
});

test("the tool's code hash: the sources' own, or the one dist/BUILT recorded for them (npm run build), the same either way", async () => {
  const { codeHashOf, hashCodeTree } = await import('../src/graph/graph-cache.js');
  const { execFileSync } = await import('node:child_process');
  await withTempDir(async (dir) => {
    await mkdir(join(dir, 'src', 'graph'), { recursive: true });
    await writeFile(join(dir, 'src', 'graph', 'graph-cache.ts'), '// the sources\n');
    await writeFile(join(dir, 'src', 'main.ts'), 'export {};\n');
    await mkdir(join(dir, 'dist', 'graph'), { recursive: true });
    await writeFile(join(dir, 'dist', 'graph', 'graph-cache.js'), '// compiled\n');
    const sources = hashCodeTree(join(dir, 'src'));
    assert.equal(codeHashOf(join(dir, 'src')), sources, 'running the sources: their hash');
    await writeFile(join(dir, 'dist', 'BUILT'), '');
    assert.equal(codeHashOf(join(dir, 'dist')), sources, 'compiled, BUILT without a hash: the sources are hashed');
    await writeFile(join(dir, 'dist', 'BUILT'), `falco-probes-code ${'a'.repeat(64)}\n`);
    assert.equal(codeHashOf(join(dir, 'dist')), 'a'.repeat(64), 'compiled: what BUILT says, src/ is not read');
    // scripts/write-built.mjs writes the sources' hash, as hashCodeTree computes it.
    await mkdir(join(dir, 'scripts'));
    await writeFile(
      join(dir, 'scripts', 'write-built.mjs'),
      await readFile(new URL('../scripts/write-built.mjs', import.meta.url), 'utf8'),
    );
    // Its dist/graph/graph-cache.js here is the real module, through tsx.
    await writeFile(
      join(dir, 'dist', 'graph', 'graph-cache.js'),
      `export { BUILT_LINE_PREFIX, hashCodeTree } from ${JSON.stringify(new URL('../src/graph/graph-cache.ts', import.meta.url).href)};\n`,
    );
    execFileSync(process.execPath, ['--import', 'tsx', join(dir, 'scripts', 'write-built.mjs')], {
      cwd: fileURLToPath(new URL('..', import.meta.url)),
    });
    assert.equal(await readFile(join(dir, 'dist', 'BUILT'), 'utf8'), `falco-probes-code ${sources}\n`);
  }, 'falco-probes-code-hash-');
});
