import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, withTempDir } from './helpers/cli.js';
import { driversText, kernel, makeProject } from './helpers/graph-project.js';
import { generate } from '../src/generate/generate.js';
import { generateMemoPath } from '../src/generate/generate-memo.js';
import { graphCachePath } from '../src/graph/graph-cache.js';
import { sha256Hex } from '../src/util/hash.js';

// generate's memo (src/generate/generate-memo.ts): with the same inputs and
// every generated file still holding the bytes written last, nothing is
// rendered or written; any changed input, a generated file changed by hand,
// or a damaged memo leads back to rendering, and the output is the same
// bytes either way.

async function withProject(fn: (root: string) => Promise<void>): Promise<void> {
  await withTempDir(async (root) => {
    await makeProject(root, {
      oses: { debian12: [kernel('6.1.0-50-amd64'), kernel('6.12.9+deb12-amd64')], other: [kernel('5.15.0-1-amd64')] },
      drivers: driversText({ remote: 'pinned' }),
    });
    await fn(root);
  }, 'falco-probes-generate-memo-');
}

async function generatedFiles(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const dir of ['generated', ...(await readdir(join(root, 'probes'))).map((d) => `probes/${d}`)])
    for (const name of await readdir(join(root, dir))) out.set(`${dir}/${name}`, await readFile(join(root, dir, name), 'utf8'));
  return out;
}

test('unchanged inputs and files: nothing is rendered or written, and the files are the bytes a full render gives', async () => {
  await withProject(async (root) => {
    const first = await generate(root);
    assert.ok(first.files.every((f) => f.change === 'written'));
    const bytes = await generatedFiles(root);
    const memo = await readFile(generateMemoPath(root), 'utf8');

    const again = await generate(root);
    assert.ok(again.files.every((f) => f.change === 'unchanged'));
    assert.deepEqual(
      again.files.map((f) => f.path),
      first.files.map((f) => f.path),
    );
    assert.equal(await readFile(generateMemoPath(root), 'utf8'), memo, 'not rewritten');

    // Proof that the memo decided: a file changed by hand, recorded in a memo of the same key, is left as it is ...
    const makefile = join(root, 'generated', 'Makefile');
    const edited = `${bytes.get('generated/Makefile')}# edited\n`;
    await writeFile(makefile, edited);
    const planted = memo.replace(
      /^generated\/Makefile \d+ [0-9a-f]{64}$/m,
      `generated/Makefile ${Buffer.byteLength(edited)} ${sha256Hex(edited)}`,
    );
    const [head, section] = [planted.slice(0, planted.indexOf('\n\n') + 2), planted.slice(planted.indexOf('\n\n') + 2)];
    await writeFile(
      generateMemoPath(root),
      head.replace(/^files (\d+) \d+ [0-9a-f]{64}$/m, `files $1 ${Buffer.byteLength(section)} ${sha256Hex(section)}`) + section,
    );
    assert.ok((await generate(root)).files.every((f) => f.change === 'unchanged'));
    assert.equal(await readFile(makefile, 'utf8'), edited);
    // ... and without the memos it is rendered and rewritten to the real bytes.
    process.env['FALCO_PROBES_GRAPH_CACHE'] = '0';
    try {
      const full = await generate(root);
      assert.deepEqual(
        full.files.filter((f) => f.change !== 'unchanged').map((f) => f.path),
        ['generated/Makefile'],
      );
    } finally {
      delete process.env['FALCO_PROBES_GRAPH_CACHE'];
    }
    assert.deepEqual(await generatedFiles(root), bytes);
  });
});

test('a generated file changed by hand is written again; so is every file after a damaged memo', async () => {
  await withProject(async (root) => {
    await generate(root);
    const bytes = await generatedFiles(root);
    await writeFile(join(root, 'probes', 'other', 'BUILD'), 'hand edit\n');
    const r = await generate(root);
    assert.deepEqual(
      r.files.filter((f) => f.change === 'written').map((f) => f.path),
      ['probes/other/BUILD'],
    );
    assert.deepEqual(await generatedFiles(root), bytes);

    const memo = await readFile(generateMemoPath(root), 'utf8');
    for (const damaged of [
      memo.slice(0, -5),
      memo.replace(/ (\d)(\d*) ([0-9a-f]{64})\n/, (_, d: string, rest: string, h: string) => ` ${(Number(d) % 9) + 1}${rest} ${h}\n`),
      'nonsense',
    ]) {
      await writeFile(generateMemoPath(root), damaged);
      await writeFile(join(root, 'generated', 'targets.json'), '{}\n');
      const again = await generate(root);
      assert.deepEqual(
        again.files.filter((f) => f.change === 'written').map((f) => f.path),
        ['generated/targets.json'],
        damaged.slice(0, 40),
      );
      assert.equal(await readFile(generateMemoPath(root), 'utf8'), memo, 'rewritten whole');
    }
  });
});

test('a changed input renders again: a lockfile, the published record; --check answers from the memo without writing it', async () => {
  await withProject(async (root) => {
    await generate(root);
    const memo = await readFile(generateMemoPath(root), 'utf8');
    // The published record pins Please's hashes: a new entry changes a BUILD file.
    const first = (
      JSON.parse(await readFile(join(root, 'generated', 'targets.json'), 'utf8')) as {
        targets: { key: string; output: string; os: string }[];
      }
    ).targets[0]!;
    const published = new Map([[first.key, { file: first.output, sha256: 'c'.repeat(64) }]]);
    const r = await generate(root, { published });
    assert.deepEqual(
      r.files.filter((f) => f.change === 'written').map((f) => f.path),
      [`probes/${first.os}/BUILD`],
    );
    assert.match(await readFile(join(root, 'probes', first.os, 'BUILD'), 'utf8'), /hashes = \["c{64}"\]/);
    assert.notEqual(await readFile(generateMemoPath(root), 'utf8'), memo);
    assert.ok((await generate(root, { published })).files.every((f) => f.change === 'unchanged'));

    // --check: served by the memo, and writes no memo of its own.
    const check = await runCli(['generate', '--check'], { cwd: root });
    assert.equal(check.code, 1, 'the record on disk (none) pins no hash: the BUILD file is out of date');
    const written = await readFile(generateMemoPath(root), 'utf8');
    assert.equal((await runCli(['generate'], { cwd: root })).code, 0);
    assert.equal((await runCli(['generate', '--check'], { cwd: root })).code, 0);
    assert.notEqual(await readFile(generateMemoPath(root), 'utf8'), written);
    // The graph memo and this one live side by side in .falco-probes/cache/.
    assert.ok((await readdir(join(root, '.falco-probes', 'cache'))).includes('generate.memo'));
    assert.ok(graphCachePath(root).endsWith('graph.memo'));
  });
});
