import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, withTempDir } from './helpers/cli.js';
import { driversText, kernel, makeProject } from './helpers/graph-project.js';
import { startMirror } from './helpers/server.js';
import { sha256Hex } from '../src/util/hash.js';
import { loadBuildGraph } from '../src/graph/load.js';
import { writeIndex } from '../src/repository/index-file.js';
import { entryFor } from '../src/repository/local.js';
import { publishRepository } from '../src/repository/publish.js';
import { createMemoryLogger } from '../src/util/log.js';
import type { Target } from '../src/graph/types.js';

// is-uploaded answers from the index only, with the key as the truth:
// 0 published for this key, 1 not (or for another key), 2 on any error.
// Over loopback HTTP, only index.json is requested.

const KERNELS = () => [kernel('6.1.0-50-amd64'), kernel('6.1.0-51-amd64'), kernel('6.12.9+deb12-amd64'), kernel('6.1.0-52-amd64')];

async function project(dir: string): Promise<{ root: string; byKernel: Map<string, Target> }> {
  const root = join(dir, 'project');
  await makeProject(root, { oses: { debian12: KERNELS() }, drivers: driversText({ remote: 'none' }) });
  const graph = await loadBuildGraph(root);
  return { root, byKernel: new Map(graph.targets.map((t) => [t.kernel.name, t])) };
}

/** A published site: 6.1.0-50 and 6.12.9 with their current keys, 6.1.0-51 under an old key, 6.1.0-52 absent. */
async function site(dir: string, byKernel: Map<string, Target>): Promise<string> {
  const local = join(dir, 'local');
  const entries = [];
  for (const name of ['6.1.0-50-amd64', '6.12.9+deb12-amd64', '6.1.0-51-amd64']) {
    const t = byKernel.get(name)!;
    const bytes = Buffer.from(`probe of ${name}`);
    await mkdir(join(local, t.output, '..'), { recursive: true });
    await writeFile(join(local, t.output), bytes);
    const entry = entryFor(t, { sha256: sha256Hex(bytes), size: bytes.length });
    entries.push(name === '6.1.0-51-amd64' ? { ...entry, key: sha256Hex('the key before the lockfile changed') } : entry);
  }
  await writeIndex(local, { version: 1, probes: entries });
  await publishRepository({ from: local, to: join(dir, 'site'), logger: createMemoryLogger() });
  return join(dir, 'site');
}

test('is-uploaded on a directory: 0 for the same key, 1 for another key or no entry, 2 for an unknown kernel', async () => {
  await withTempDir(async (dir) => {
    const { root, byKernel } = await project(dir);
    const published = await site(dir, byKernel);
    const ask = (kernelName: string) => runCli(['is-uploaded', 'debian12', kernelName, '--repository', published], { cwd: root });

    const yes = await ask('6.12.9+deb12-amd64');
    assert.equal(yes.code, 0, yes.stderr);
    assert.ok(
      yes.stdout.startsWith(
        `published ${join(published, byKernel.get('6.12.9+deb12-amd64')!.output)} (key ${byKernel.get('6.12.9+deb12-amd64')!.key}`,
      ),
      yes.stdout,
    );

    const otherKey = await ask('6.1.0-51-amd64');
    assert.equal(otherKey.code, 1);
    assert.match(otherKey.stdout, /is published for key [0-9a-f]{64}, the target's key is [0-9a-f]{64} \(its inputs changed\)/);

    const absent = await ask('6.1.0-52-amd64');
    assert.equal(absent.code, 1);
    // The example driver's file, named as Falco's loaders ask for it (Debian's release from uname -v's package version).
    assert.equal(byKernel.get('6.1.0-52-amd64')!.output, '1.0.0/x86_64/example_debian_6.1.52-1-amd64_1.o');
    assert.ok(
      absent.stdout.startsWith('not published: //probes/debian12:6.1.0-52-amd64: 1.0.0/x86_64/example_debian_6.1.52-1-amd64_1.o '),
      absent.stdout,
    );

    const unknown = await ask('6.1.0-5-amd64');
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown kernel.*"6\.1\.0-5-amd64"/);
    assert.match(unknown.stderr, /did you mean: 6\.1\.0-50-amd64/);

    const usage = await runCli(['is-uploaded', 'debian12'], { cwd: root });
    assert.equal(usage.code, 2);
    const noOs = await runCli(['is-uploaded', 'debian13', '6.1.0-50-amd64', '--repository', published], { cwd: root });
    assert.equal(noOs.code, 2);
    assert.match(noOs.stderr, /unknown OS "debian13"/);

    // A directory with nothing published yet: the answer is no, not an error.
    await mkdir(join(dir, 'empty'));
    assert.equal((await runCli(['is-uploaded', 'debian12', '6.1.0-50-amd64', '--repository', join(dir, 'empty')], { cwd: root })).code, 1);
  });
});

test('is-uploaded over HTTP reads only index.json; a malformed index, a missing one and a stalled server exit 2', async () => {
  await withTempDir(async (dir) => {
    const { root, byKernel } = await project(dir);
    const mirror = await startMirror({ root: await site(dir, byKernel) });
    try {
      const yes = await runCli(['is-uploaded', 'debian12', '6.1.0-50-amd64', '--repository', `${mirror.url}/`], { cwd: root });
      assert.equal(yes.code, 0, yes.stderr);
      assert.ok(yes.stdout.includes(`${mirror.url}/1.0.0/x86_64/example_debian_6.1.50-1-amd64_1.o`), yes.stdout);
      const no = await runCli(['is-uploaded', 'debian12', '6.1.0-52-amd64', '--repository', mirror.url], { cwd: root });
      assert.equal(no.code, 1);
      assert.deepEqual(mirror.requests, ['index.json', 'index.json'], 'no probe and no kernel package is downloaded');

      mirror.faults.set('index.json', { kind: 'body', body: '{"version": 1, "probes": "everything"}' });
      const malformed = await runCli(['is-uploaded', 'debian12', '6.1.0-50-amd64', '--repository', mirror.url], { cwd: root });
      assert.equal(malformed.code, 2);
      assert.ok(malformed.stderr.includes(`${mirror.url}/index.json`), malformed.stderr);
      assert.match(malformed.stderr, /malformed repository index/);

      mirror.faults.set('index.json', { kind: 'status', status: 404 });
      const missing = await runCli(['is-uploaded', 'debian12', '6.1.0-50-amd64', '--repository', mirror.url], { cwd: root });
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /index\.json: not found: not a probe repository/);

      mirror.faults.set('index.json', { kind: 'stall' });
      const stalled = await runCli(['is-uploaded', 'debian12', '6.1.0-50-amd64', '--repository', mirror.url, '--timeout', '0.2'], {
        cwd: root,
      });
      assert.equal(stalled.code, 2);
      assert.match(stalled.stderr, /timed out after 200 ms without data/);

      const badTimeout = await runCli(['is-uploaded', 'debian12', '6.1.0-50-amd64', '--timeout', 'soon'], { cwd: root });
      assert.equal(badTimeout.code, 2);
    } finally {
      await mirror.close();
    }
  });
});

test('is-uploaded with several drivers asks which one; --driver answers', async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, 'project');
    await makeProject(root, { oses: { debian12: [kernel('6.1.0-50-amd64')] } });
    const ambiguous = await runCli(['is-uploaded', 'debian12', '6.1.0-50-amd64', '--repository', dir], { cwd: root });
    assert.equal(ambiguous.code, 2);
    assert.match(ambiguous.stderr, /has 2 targets; name one with --driver or --arch/);
    const one = await runCli(['is-uploaded', 'debian12', '6.1.0-50-amd64', '--driver', 'falco', '--repository', dir], { cwd: root });
    assert.equal(one.code, 1, one.stderr);
    assert.ok(
      one.stdout.includes('//probes/debian12:6.1.0-50-amd64-falco-9.1.0+driver: 9.1.0+driver/x86_64/falco_debian_6.1.50-1-amd64_1.o '),
      one.stdout,
    );
  });
});
