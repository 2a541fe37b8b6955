import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cp, mkdir, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { PROJECT_ROOT, withTempDir } from './helpers/cli.js';
import { startMirror } from './helpers/server.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { sha256Hex } from '../src/util/hash.js';
import { extractPackage } from '../src/fetch/extract.js';
import { createDriverSources } from '../src/fetch/driver-source.js';
import type { ResolvedDriver } from '../src/graph/types.js';

// Driver sources: a local directory is used in place; a remote tarball is
// fetched once by its pinned sha256 (over real HTTP on loopback), unpacked
// with the real extractor and shared; an unpinned or wrong one is refused.

function driver(source: ResolvedDriver['source']): ResolvedDriver {
  return {
    name: 'falco',
    version: '9.1.0+driver',
    source,
    recipe: 'kbuild',
    bpfDir: '.',
    kinds: ['bpf'],
    object: 'probe.o',
    sourceSha256: '0'.repeat(64),
  };
}

test('a pinned tarball is downloaded once, verified, unpacked with strip, and shared', async () => {
  await withTempDir(async (dir) => {
    // A GitHub-style archive: one top folder holding the tree.
    await mkdir(join(dir, 'src'));
    await cp(join(PROJECT_ROOT, 'examples', 'probe'), join(dir, 'src', 'libs-9.1.0'), { recursive: true });
    execFileSync('tar', ['-C', join(dir, 'src'), '--sort=name', '-czf', join(dir, 'libs.tar.gz'), 'libs-9.1.0']);
    const bytes = await readFile(join(dir, 'libs.tar.gz'));
    const mirror = await startMirror({ files: { 'archive/libs.tar.gz': bytes } });
    try {
      const sources = createDriverSources({
        projectRoot: dir,
        cacheDir: join(dir, 'cache'),
        extract: async (file, dest, o) => {
          await extractPackage(file, 'tgz', dest, { strip: o.strip });
        },
      });
      const d = driver({ url: `${mirror.url}/archive/libs.tar.gz`, sha256: sha256Hex(bytes), strip: 1 });
      const [a, b] = await Promise.all([sources(d), sources(d)]);
      assert.equal(a, b);
      assert.equal(await readFile(join(a, 'probe.c'), 'utf8'), await readFile(join(PROJECT_ROOT, 'examples', 'probe', 'probe.c'), 'utf8'));
      assert.deepEqual(mirror.requests, ['archive/libs.tar.gz']);
      // Another run (a new source table) finds the unpacked tree in the cache: no request.
      const again = createDriverSources({
        projectRoot: dir,
        cacheDir: join(dir, 'cache'),
        extract: async () => assert.fail('extracted again'),
      });
      assert.equal(await again(d), a);
      assert.equal(mirror.requests.length, 1);
      assert.deepEqual(
        (await readdir(join(dir, 'cache', 'drivers'))).filter((n) => n.endsWith('.tmp') || n.endsWith('.part')),
        [],
      );

      // A pin that the bytes do not match: refused, nothing unpacked.
      const wrong = driver({ url: `${mirror.url}/archive/libs.tar.gz`, sha256: 'a'.repeat(64), strip: 1 });
      await assert.rejects(sources(wrong), (err: unknown) => {
        assert.ok(err instanceof FalcoProbesError);
        assert.equal(err.kind, 'checksum');
        assert.match(err.message, /sha256 mismatch: the pin says a{64}, the download is [0-9a-f]{64}/);
        return true;
      });
      assert.deepEqual((await readdir(join(dir, 'cache', 'drivers'))).sort(), [sha256Hex(bytes), `${sha256Hex(bytes)}.tar`].sort());
    } finally {
      await mirror.close();
    }
  });
});

test('an unpinned remote driver is refused with the way to pin it; a missing local directory is named', async () => {
  await withTempDir(async (dir) => {
    const sources = createDriverSources({
      projectRoot: dir,
      cacheDir: join(dir, 'cache'),
      extract: async () => assert.fail('nothing to extract'),
    });
    await assert.rejects(sources(driver({ url: 'http://127.0.0.1:9/libs.tar.gz' })), (err: unknown) => {
      assert.ok(err instanceof FalcoProbesError);
      assert.equal(err.kind, 'config');
      assert.match(err.message, /without a sha256 pin \(nor a tree pin\); refusing to build/);
      assert.match(err.hint ?? '', /falco-probes pin falco/);
      return true;
    });
    await assert.rejects(
      sources(driver({ path: 'drivers/nowhere' })),
      new RegExp(`source directory ${join(dir, 'drivers/nowhere')} does not exist`),
    );
    await mkdir(join(dir, 'drivers', 'here'), { recursive: true });
    assert.equal(await sources(driver({ path: 'drivers/here' })), join(dir, 'drivers', 'here'));
  });
});
