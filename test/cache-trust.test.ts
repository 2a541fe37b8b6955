import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, withTempDir } from './helpers/cli.js';
import { driversText, kernel, makeProject } from './helpers/graph-project.js';
import { startMirror } from './helpers/server.js';
import { graphCachePath, sealGraphMemo, unsealGraphMemo } from '../src/graph/graph-cache.js';
import { buildTarget, type TargetPipeline } from '../src/run/build-target.js';
import { fetchAptRelease } from '../src/resolve/apt-release.js';
import { loadSourceDefinition } from '../src/config/source-definition.js';
import { errorKindOf, errorMessage, exitCodeFor, FalcoProbesError, fileSystemError } from '../src/util/errors.js';
import { writeFileAtomic } from '../src/util/fs.js';
import type { Target } from '../src/graph/types.js';

// Issue 14, the rows that need no compile: nothing in the graph memo is
// trusted as found, expired apt Release files are refused, and bad input
// (an alias bomb, --out naming a folder, a full disk) is named as such.
// The rows that build are in cache-trust-build.test.ts.

const memoOf = async (root: string) => unsealGraphMemo(await readFile(graphCachePath(root), 'utf8'));

async function withProject(fn: (root: string) => Promise<void>): Promise<void> {
  await withTempDir(async (root) => {
    await makeProject(root, {
      oses: { debian12: [kernel('6.1.0-50-amd64'), kernel('6.12.9+deb12-amd64')] },
      drivers: driversText({ remote: 'none' }),
    });
    await fn(root);
  }, 'falco-probes-cache-trust-');
}

test('graph memo: one bit flipped in a target key is a miss; generate writes the real keys', async () => {
  await withProject(async (root) => {
    assert.equal((await runCli(['generate'], { cwd: root })).code, 0);
    const targetsJson = await readFile(join(root, 'generated', 'targets.json'), 'utf8');
    const text = await readFile(graphCachePath(root), 'utf8');
    const key = (await memoOf(root)).targets[0]!.key;
    // Flip one bit of one hex digit of the key (still valid JSON, still 64 hex digits).
    const at = text.indexOf(key) + 10;
    const flipped = String.fromCharCode(text.charCodeAt(at) ^ 1);
    assert.match(flipped, /[0-9a-f]/);
    const damaged = text.slice(0, at) + flipped + text.slice(at + 1);
    await writeFile(graphCachePath(root), damaged);
    const again = await runCli(['generate'], { cwd: root });
    assert.equal(again.code, 0, again.stderr);
    assert.equal(await readFile(join(root, 'generated', 'targets.json'), 'utf8'), targetsJson, 'the real keys, not the flipped one');
    assert.equal(await readFile(graphCachePath(root), 'utf8'), text, 'the memo was rewritten whole');
  });
});

test('graph memo: a resealed memo with a "../" probe file name is a miss; build-target refuses such a name before any work', async () => {
  await withProject(async (root) => {
    assert.equal((await runCli(['generate'], { cwd: root })).code, 0);
    const memo = await memoOf(root);
    const real = memo.targets[0]!.probeFile;
    memo.targets[0]!.probeFile = '../../../../../../tmp/falco-probes-escape.o';
    // Sealed as the tool seals it: only the path rules stand between it and a build.
    await writeFile(graphCachePath(root), sealGraphMemo(memo));
    const dry = await runCli(['build', '--dry-run', '--json'], { cwd: root });
    assert.equal(dry.code, 0, dry.stderr);
    const files = (JSON.parse(dry.stdout) as { results: { file: string }[] }).results.map((r) => r.file);
    assert.ok(
      files.some((f) => f.endsWith(`/${real}`)),
      files.join('\n'),
    );
    assert.ok(
      files.every((f) => !f.includes('..')),
      files.join('\n'),
    );

    const untouched = (what: string) => () => assert.fail(`${what} was called for a hostile name`);
    const pipeline = {
      fetch: untouched('fetch'),
      extract: untouched('extract'),
      driverDir: untouched('driverDir'),
      builder: {},
    } as unknown as TargetPipeline;
    const target = {
      label: '//probes/x:y',
      key: 'a'.repeat(64),
      probeFile: '../../escape.o',
      kernel: { packages: [] },
    } as unknown as Target;
    await assert.rejects(
      buildTarget(target, pipeline, { workDir: join(root, 'w'), logFile: join(root, 'l.log') }),
      (e: unknown) => e instanceof FalcoProbesError && /refusing file name/.test(e.message),
    );
  });
});

test('apt: a Release whose Valid-Until has passed is refused naming its URL, unless the repository opts out', async () => {
  await withTempDir(async (dir) => {
    const release = (validUntil: string) =>
      `Origin: Test\nSuite: stable\nCodename: stable\nDate: Sat, 01 Jan 2022 00:00:00 UTC\nValid-Until: ${validUntil}\nSHA256:\n ${'0'.repeat(64)} 0 main/binary-amd64/Packages\n`;
    const mirror = await startMirror({
      files: {
        'dists/stable/Release': release('Sat, 08 Jan 2022 00:00:00 UTC'),
        'dists/fresh/Release': release('Fri, 01 Jan 2100 00:00:00 UTC').replace(/stable/g, 'fresh'),
      },
    });
    try {
      await assert.rejects(fetchAptRelease({ base: mirror.url, suite: 'stable', repository: 'main' }), (e: unknown) => {
        assert.ok(e instanceof FalcoProbesError);
        assert.equal(e.location.url, `${mirror.url}/dists/stable/Release`);
        assert.match(e.format(), /expired: Valid-Until Sat, 08 Jan 2022 00:00:00 UTC has passed/);
        assert.match(e.format(), /checkValidUntil: false` on repository "main"/);
        return true;
      });
      assert.equal(
        (await fetchAptRelease({ base: mirror.url, suite: 'stable', checkValidUntil: false })).validUntil,
        'Sat, 08 Jan 2022 00:00:00 UTC',
      );
      assert.equal((await fetchAptRelease({ base: mirror.url, suite: 'fresh' })).files.size, 1);
    } finally {
      await mirror.close();
    }
    // The opt-out is a field of the repository in a source definition.
    await mkdir(join(dir, 'kernels'));
    const def = (await import('./helpers/graph-project.js'))
      .sourceDefinitionText('snap')
      .replace('    suite: bookworm\n', '    suite: bookworm\n    checkValidUntil: false\n');
    await writeFile(join(dir, 'kernels', 'snap.yaml'), def);
    const loaded = await loadSourceDefinition(join(dir, 'kernels', 'snap.yaml'), dir);
    assert.equal(loaded.definition.repositories[0]!.checkValidUntil, false);
  });
});

test('a YAML alias bomb in a source definition: file:line:col of its first alias, exit 2', async () => {
  await withProject(async (root) => {
    const bomb = [
      'a: &a ["x","x","x","x","x","x","x","x","x"]',
      'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]',
      'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]',
      'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]',
      'e: [*d,*d,*d,*d,*d,*d,*d,*d,*d]',
      '',
    ].join('\n');
    await writeFile(join(root, 'kernels', 'bomb.yaml'), `id: bomb\n${bomb}`);
    const r = await runCli(['resolve', 'bomb'], { cwd: root });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /kernels\/bomb\.yaml:3:8: invalid YAML: .*alias/i);
  });
});

test('build-probe --out naming a directory or / is a usage error (exit 2) before anything is built', async () => {
  await withProject(async (root) => {
    await mkdir(join(root, 'outdir'));
    for (const out of ['outdir', 'outdir/', '/', 'missing/']) {
      const r = await runCli(['build-probe', 'debian12', '6.1.0-50-amd64', '--out', out], { cwd: root });
      assert.equal(r.code, 2, `${out}: ${r.stderr}`);
      assert.match(r.stderr, /--out .* names a directory/);
    }
  });
});

test('ENOSPC: names the file it failed on, is an io error (exit 1), never internal', async () => {
  // /dev/full answers every write with ENOSPC, and Node's error then names no file.
  const raw = await writeFile('/dev/full', 'x').then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.equal((raw as NodeJS.ErrnoException).code, 'ENOSPC');
  assert.equal(errorKindOf(raw), 'io');
  assert.equal(exitCodeFor(raw), 1);
  assert.match(errorMessage(raw), /hint: free space/);
  const named = fileSystemError(raw, '/var/cache/x.deb');
  assert.ok(named instanceof FalcoProbesError && named.kind === 'io');
  assert.match(named.format(), /^\/var\/cache\/x\.deb: no space left on the device writing \/var\/cache\/x\.deb/);
  // Other failures of writeFileAtomic pass through unchanged.
  await withTempDir(async (dir) => {
    await writeFile(join(dir, 'file'), 'x');
    await assert.rejects(writeFileAtomic(join(dir, 'file', 'x'), 'x'), (e: unknown) => !(e instanceof FalcoProbesError));
  });
});
