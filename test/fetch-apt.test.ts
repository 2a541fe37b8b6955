import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { PackageRef } from '../src/config/types.js';
import { aptGetAvailable, aptRequest } from '../src/fetch/apt.js';
import { cachePath } from '../src/fetch/cache.js';
import { createFetcher, fetchPackage } from '../src/fetch/download.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { sha256File } from '../src/util/hash.js';
import { createMemoryLogger } from '../src/util/log.js';
import { aptShow, isRoot, pseudoRandom, type AptRecord } from './helpers/archive-fixtures.js';
import { startMirror } from './helpers/server.js';
import { skipOrFail } from './helpers/require.js';

// `--fetch-via apt` for real: packages from this machine's apt index, fetched
// with `apt-get download` and verified against their index entries (the same
// sha256 and size a lockfile would hold). Runs as root (CI does); skipped
// otherwise.

const HTTP = { attempts: 2, backoffMs: 10, idleTimeoutMs: 3000 };
const skip = !isRoot ? 'needs root (apt-get download as in CI)' : undefined;

let work: string;
let hello: AptRecord | undefined;
let busybox: AptRecord | undefined;

function refOf(r: AptRecord): PackageRef {
  return { name: r.Package, version: r.Version, repository: 'bookworm', path: r.Filename, sha256: r.SHA256, size: r.Size };
}

let n = 0;
async function freshCache(): Promise<string> {
  const dir = join(work, `cache-${++n}`);
  await mkdir(dir);
  return dir;
}

async function filesUnder(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((d) => d.isFile()).map((d) => d.name);
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'fp-fetch-apt-'));
  if (skip || !(await aptGetAvailable())) return;
  hello = await aptShow('hello');
  busybox = await aptShow('busybox-static');
});

after(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('fetch via apt', { skip }, () => {
  test('a package with an epoch (busybox-static): apt-get download name:arch=version, verified, cached', {
    timeout: 180_000,
  }, async (t) => {
    if (!busybox) return skipOrFail(t, 'busybox-static is not in this apt index');
    const pkg = refOf(busybox);
    assert.match(pkg.version, /^\d+:/, 'the test wants an epoch, which apt writes as %3a in the file name');
    assert.equal(aptRequest(pkg), `busybox-static:${busybox.Architecture}=${busybox.Version}`);
    const cacheDir = await freshCache();
    const started = Date.now();
    const path = await fetchPackage(pkg, [], { cacheDir, via: 'apt' });
    t.diagnostic(`apt-get download of ${pkg.size} bytes took ${Date.now() - started} ms`);
    assert.equal(path, cachePath(cacheDir, pkg.sha256));
    assert.deepEqual(await sha256File(path), { sha256: pkg.sha256, size: pkg.size });
    assert.deepEqual(await filesUnder(cacheDir), [pkg.sha256]);
  });

  test('a wrong sha256 in the lockfile is a checksum error and nothing is cached', { timeout: 180_000 }, async (t) => {
    if (!hello) return skipOrFail(t, 'hello is not in this apt index');
    const pkg = { ...refOf(hello), sha256: 'f'.repeat(64) };
    const cacheDir = await freshCache();
    const err = await fetchPackage(pkg, [], { cacheDir, via: 'apt' }).catch((e: unknown) => e);
    assert.ok(err instanceof FalcoProbesError && err.kind === 'checksum', String(err));
    const text = err.format();
    assert.ok(text.includes(`expected ${'f'.repeat(64)}, got ${hello.SHA256}`), text);
    assert.ok(text.includes(`apt-get download hello:${hello.Architecture}=${hello.Version}`), text);
    assert.deepEqual(await filesUnder(cacheDir), []);
  });

  test('auto: no mirror answers, so apt is asked', { timeout: 180_000 }, async (t) => {
    if (!hello) return skipOrFail(t, 'hello is not in this apt index');
    const empty = await startMirror();
    try {
      const cacheDir = await freshCache();
      const logger = createMemoryLogger();
      const fetcher = createFetcher({ cacheDir, via: 'auto', http: HTTP, logger, mirrorsFor: () => [empty.url] });
      const path = await fetcher.fetch(refOf(hello));
      assert.equal((await sha256File(path)).sha256, hello.SHA256);
      assert.equal(empty.requests.length, 1, 'the mirror was asked first (and answered 404)');
      assert.ok(
        logger.lines.some((l) => /no mirror delivered hello .*; asking apt/.test(l)),
        logger.lines.join('\n'),
      );
    } finally {
      await empty.close();
    }
  });

  test('auto: a checksum mismatch from a mirror does not fall back to apt', { timeout: 60_000 }, async (t) => {
    if (!hello) return skipOrFail(t, 'hello is not in this apt index');
    const pkg = refOf(hello);
    const liar = await startMirror({ files: { [pkg.path]: pseudoRandom(pkg.size, 9) } });
    try {
      const cacheDir = await freshCache();
      const logger = createMemoryLogger();
      const err = await fetchPackage(pkg, [liar.url], { cacheDir, via: 'auto', http: HTTP, logger }).catch((e: unknown) => e);
      assert.ok(err instanceof FalcoProbesError && err.kind === 'checksum', String(err));
      assert.ok(!logger.lines.some((l) => /asking apt/.test(l)), logger.lines.join('\n'));
      assert.deepEqual(await filesUnder(cacheDir), []);
    } finally {
      await liar.close();
    }
  });

  test("a version apt does not know: apt's own message, as a network error", { timeout: 120_000 }, async (t) => {
    if (!hello) return skipOrFail(t, 'hello is not in this apt index');
    const cacheDir = await freshCache();
    const err = await fetchPackage({ ...refOf(hello), version: '0.0.0-falco-probes-test' }, [], { cacheDir, via: 'apt' }).catch(
      (e: unknown) => e,
    );
    assert.ok(err instanceof FalcoProbesError && err.kind === 'network', String(err));
    assert.match(
      err.format(),
      /apt-get download hello:\w+=0\.0\.0-falco-probes-test failed: exit code 100[\s\S]*0\.0\.0-falco-probes-test/,
    );
  });

  test('a hostile name or version never reaches apt-get', async () => {
    const cacheDir = await freshCache();
    const base = {
      name: 'hello',
      version: '1',
      repository: 'bookworm',
      path: 'pool/main/h/hello/hello_1_amd64.deb',
      sha256: 'a'.repeat(64),
      size: 1,
    };
    await assert.rejects(fetchPackage({ ...base, name: 'hello;touch /tmp/x' }, [], { cacheDir, via: 'apt' }), /refusing package name/);
    await assert.rejects(fetchPackage({ ...base, version: '1 -o APT::Foo=1' }, [], { cacheDir, via: 'apt' }), /refusing version/);
    await assert.rejects(fetchPackage({ ...base, name: '-s' }, [], { cacheDir, via: 'apt' }), /refusing package name/);
  });
});
