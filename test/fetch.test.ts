import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readdir, readFile, rm, stat, utimes, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import type { PackageRef } from '../src/config/types.js';
import { cachePath, defaultCacheDir } from '../src/fetch/cache.js';
import { createFetcher, fetchPackage } from '../src/fetch/download.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { sha256Hex } from '../src/util/hash.js';
import { createMemoryLogger } from '../src/util/log.js';
import { PROJECT_ROOT } from './helpers/cli.js';
import { startMirror, type TestMirror } from './helpers/server.js';
import { pseudoRandom } from './helpers/archive-fixtures.js';

// Fetching over HTTP on loopback: mirror order and fallback, retries of cut
// transfers, checksum and size checks that leave nothing in the cache, one
// request for many concurrent callers, a second run served from the cache,
// interrupted downloads (abort, and a real SIGKILL of another process), and
// two processes filling one cache at once.

const HTTP = { attempts: 3, backoffMs: 10, idleTimeoutMs: 3000 };

let work: string;
let mirror: TestMirror;
const body = pseudoRandom(256 * 1024, 3);
const PATH = 'pool/main/l/linux/linux-headers-6.1.0-50-common_6.1.176-1_all.deb';

function pkgFor(data: Buffer, path = PATH, name = 'linux-headers-6.1.0-50-common'): PackageRef {
  return { name, version: '6.1.176-1', repository: 'bookworm', path, sha256: sha256Hex(data), size: data.length };
}

let n = 0;
async function freshCache(): Promise<string> {
  const dir = join(work, `cache-${++n}`);
  await mkdir(dir);
  return dir;
}

/** Every file under the cache folder (temporary ones included). */
async function cacheFiles(cacheDir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    let names: string[];
    try {
      names = await readdir(d);
    } catch {
      return;
    }
    for (const name of names) {
      const p = join(d, name);
      // A download's clean-up may remove a temporary file between readdir and stat.
      const st = await stat(p).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') return undefined;
        throw e;
      });
      if (st === undefined) continue;
      if (st.isDirectory()) await walk(p);
      else out.push(p.slice(cacheDir.length + 1));
    }
  };
  await walk(cacheDir);
  return out.sort();
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'fp-fetch-'));
  mirror = await startMirror({ files: { [PATH]: body } });
});

after(async () => {
  await mirror.close();
  await rm(work, { recursive: true, force: true });
});

/** A closed port: connections are refused. */
async function deadUrl(): Promise<string> {
  const server = http.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return `http://127.0.0.1:${port}`;
}

/**
 * A server that sends `data` slowly (chunks with pauses), stalls after
 * `stallAfter` bytes if set, and counts requests and concurrency. With
 * `barrier`, no body starts before that many requests arrived (or 20 s
 * passed), so concurrent clients surely overlap.
 */
async function startSlowServer(data: Buffer, opts: { chunk?: number; delayMs?: number; stallAfter?: number; barrier?: number } = {}) {
  let requests = 0;
  let active = 0;
  let maxActive = 0;
  const waiting: (() => void)[] = [];
  const sockets = new Set<import('node:net').Socket>();
  const server = http.createServer((_req, res) => {
    requests++;
    active++;
    maxActive = Math.max(maxActive, active);
    res.on('close', () => active--);
    res.writeHead(200, { 'content-length': data.length });
    let at = 0;
    const step = () => {
      if (res.destroyed) return;
      if (opts.stallAfter !== undefined && at >= opts.stallAfter) return; // stall forever
      const next = Math.min(data.length, at + (opts.chunk ?? 16 * 1024));
      res.write(data.subarray(at, next));
      at = next;
      if (at >= data.length) res.end();
      else setTimeout(step, opts.delayMs ?? 5);
    };
    if (opts.barrier === undefined) {
      step();
      return;
    }
    waiting.push(step);
    const release = () => {
      for (const go of waiting.splice(0)) go();
    };
    if (waiting.length >= opts.barrier) release();
    else setTimeout(release, 20_000).unref();
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    stats: () => ({ requests, maxActive }),
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

describe('cache location', () => {
  test('FALCO_PROBES_CACHE, then XDG_CACHE_HOME, then ~/.cache', () => {
    assert.equal(defaultCacheDir({ FALCO_PROBES_CACHE: '/x/cache' }), '/x/cache');
    assert.equal(defaultCacheDir({ XDG_CACHE_HOME: '/xdg' }), '/xdg/falco-probes/packages');
    assert.match(defaultCacheDir({}), /\/\.cache\/falco-probes\/packages$/);
    assert.equal(cachePath('/c', 'ab'.repeat(32)), `/c/sha256/ab/${'ab'.repeat(32)}`);
    assert.throws(() => cachePath('/c', '../../etc/passwd'), /refusing sha256/);
  });
});

describe('fetchPackage over HTTP', () => {
  test('stores the verified file at its content address', async () => {
    const cacheDir = await freshCache();
    const pkg = pkgFor(body);
    const path = await fetchPackage(pkg, [mirror.url], { cacheDir, via: 'http', http: HTTP });
    assert.equal(path, cachePath(cacheDir, pkg.sha256));
    assert.deepEqual(await readFile(path), body);
    assert.deepEqual(await cacheFiles(cacheDir), [`sha256/${pkg.sha256.slice(0, 2)}/${pkg.sha256}`]);
  });

  test('mirrors in order: a mirror that is down, then one that answers 500, then a good one', async () => {
    const cacheDir = await freshCache();
    const failing = await startMirror({ files: { [PATH]: body } });
    failing.faults.set(PATH, { kind: 'status', status: 500 });
    try {
      const logger = createMemoryLogger();
      const path = await fetchPackage(pkgFor(body), [await deadUrl(), failing.url, mirror.url], {
        cacheDir,
        via: 'http',
        http: HTTP,
        logger,
      });
      assert.deepEqual(await readFile(path), body);
      assert.equal(failing.requests.length, HTTP.attempts, 'a 5xx is retried, then the next mirror is tried');
      assert.ok(
        logger.lines.some((l) => /attempt 1\/3 .* failed: HTTP 500/.test(l)),
        logger.lines.join('\n'),
      );
    } finally {
      await failing.close();
    }
  });

  test('a 404 moves to the next mirror without retrying', async () => {
    const cacheDir = await freshCache();
    const empty = await startMirror();
    try {
      await fetchPackage(pkgFor(body), [empty.url, mirror.url], { cacheDir, via: 'http', http: HTTP });
      assert.equal(empty.requests.length, 1);
    } finally {
      await empty.close();
    }
  });

  test('all mirrors failing is a network error listing each', async () => {
    const cacheDir = await freshCache();
    const err = await fetchPackage(pkgFor(body), [await deadUrl(), await deadUrl()], { cacheDir, via: 'http', http: HTTP }).catch(
      (e: unknown) => e,
    );
    assert.ok(err instanceof FalcoProbesError && err.kind === 'network', String(err));
    assert.match(err.format(), /all 2 mirrors failed[\s\S]*127\.0\.0\.1[\s\S]*127\.0\.0\.1/);
    assert.deepEqual(await cacheFiles(cacheDir), []);
  });

  test('a checksum mismatch names the URL, expected and got, and leaves nothing in the cache', async () => {
    const cacheDir = await freshCache();
    const other = Buffer.from(body);
    other[1000]! ^= 1;
    const bad = await startMirror({ files: { [PATH]: other } });
    try {
      const pkg = pkgFor(body);
      const goodRequestsBefore = mirror.requests.length;
      const err = await fetchPackage(pkg, [bad.url, mirror.url], { cacheDir, via: 'http', http: HTTP }).catch((e: unknown) => e);
      assert.ok(err instanceof FalcoProbesError && err.kind === 'checksum', String(err));
      const text = err.format();
      assert.ok(text.includes(`${bad.url}/${PATH}`), text);
      assert.ok(text.includes(`expected ${pkg.sha256}, got ${sha256Hex(other)}`), text);
      assert.equal(mirror.requests.length, goodRequestsBefore, 'a mismatch stops: the next mirror is not asked');
      assert.deepEqual(await cacheFiles(cacheDir), [], 'no file at the address and no temporary file');
      assert.equal(bad.requests.length, 1, 'a mismatch is not retried');
    } finally {
      await bad.close();
    }
  });

  test('size mismatches: a longer file, and a server that announces another size', async () => {
    const cacheDir = await freshCache();
    const longer = await startMirror({ files: { [PATH]: Buffer.concat([body, Buffer.from('extra')]) } });
    try {
      const err = await fetchPackage(pkgFor(body), [longer.url], { cacheDir, via: 'http', http: HTTP }).catch((e: unknown) => e);
      assert.ok(err instanceof FalcoProbesError && err.kind === 'checksum', String(err));
      assert.match(err.message, new RegExp(`size mismatch: expected ${body.length} bytes, the server announces ${body.length + 5}`));
      // A truncated copy served with a consistent Content-Length is another file, not a transfer error: no retry.
      longer.files.set(PATH, body);
      longer.faults.set(PATH, { kind: 'truncate', bytes: 1000 });
      const err2 = await fetchPackage(pkgFor(body), [longer.url], { cacheDir, via: 'http', http: HTTP }).catch((e: unknown) => e);
      assert.ok(err2 instanceof FalcoProbesError && err2.kind === 'checksum', String(err2));
      assert.match(err2.message, /the server announces 1000/);
      assert.deepEqual(await cacheFiles(cacheDir), []);
    } finally {
      await longer.close();
    }
  });

  test('a transfer cut short is retried and then succeeds', async () => {
    const cacheDir = await freshCache();
    const flaky = await startMirror({ files: { [PATH]: body } });
    flaky.faults.set(PATH, { kind: 'reset', afterBytes: 100_000, times: 2 });
    try {
      const path = await fetchPackage(pkgFor(body), [flaky.url], { cacheDir, via: 'http', http: HTTP });
      assert.deepEqual(await readFile(path), body);
      assert.equal(flaky.requests.length, 3, 'two cut transfers, then a whole one');
      assert.equal((await cacheFiles(cacheDir)).length, 1, 'the cut attempts left no temporary files');
    } finally {
      await flaky.close();
    }
  });

  test('a mirror on disk (file: URL)', async () => {
    const cacheDir = await freshCache();
    const root = join(work, 'disk-mirror');
    await mkdir(join(root, dirname(PATH)), { recursive: true });
    await writeFile(join(root, PATH), body);
    const path = await fetchPackage(pkgFor(body), [pathToFileURL(join(work, 'nowhere')).href, pathToFileURL(root).href], {
      cacheDir,
      via: 'http',
    });
    assert.deepEqual(await readFile(path), body);
  });

  test('a hostile path or sha256 in a lockfile never reaches the file system', async () => {
    const cacheDir = await freshCache();
    await assert.rejects(
      fetchPackage({ ...pkgFor(body), path: '../../etc/passwd' }, [mirror.url], { cacheDir, via: 'http' }),
      /refusing repository path/,
    );
    await assert.rejects(fetchPackage({ ...pkgFor(body), sha256: '../x' }, [mirror.url], { cacheDir, via: 'http' }), /refusing sha256/);
  });

  test('apt is only for .deb packages; auto with no mirror and no .deb is a clear error', async () => {
    const cacheDir = await freshCache();
    const rpm = pkgFor(body, 'Packages/kernel-devel-5.10.1-1.amzn2.x86_64.rpm', 'kernel-devel');
    await assert.rejects(fetchPackage(rpm, [], { cacheDir, via: 'apt' }), /--fetch-via apt can fetch only \.deb packages/);
    await assert.rejects(fetchPackage(rpm, [], { cacheDir, via: 'auto' }), /no mirror is configured for repository "bookworm"/);
  });
});

describe('the fetcher', () => {
  test('20 concurrent fetches of one package make exactly one request; a second run makes none', async () => {
    const cacheDir = await freshCache();
    const slow = await startSlowServer(body, { chunk: 32 * 1024, delayMs: 10 });
    try {
      const fetcher = createFetcher({ cacheDir, via: 'http', downloads: 4, http: HTTP, mirrorsFor: () => [slow.url] });
      const paths = await Promise.all(Array.from({ length: 20 }, () => fetcher.fetch(pkgFor(body))));
      assert.equal(new Set(paths).size, 1);
      assert.equal(slow.stats().requests, 1);
      assert.deepEqual(fetcher.stats(), { cacheHits: 0, downloads: 1, bytes: body.length });

      const second = createFetcher({ cacheDir, via: 'http', http: HTTP, mirrorsFor: () => [slow.url] });
      assert.equal(await second.fetch(pkgFor(body)), paths[0]);
      assert.equal(slow.stats().requests, 1, 'served from the cache');
      assert.equal(second.stats().cacheHits, 1);
    } finally {
      await slow.close();
    }
  });

  test('downloads are limited separately: at most N at once', async () => {
    const cacheDir = await freshCache();
    const files: Record<string, Buffer> = {};
    const pkgs: PackageRef[] = [];
    for (let i = 0; i < 6; i++) {
      const data = pseudoRandom(64 * 1024, 100 + i);
      const path = `pool/p${i}_1_all.deb`;
      files[path] = data;
      pkgs.push(pkgFor(data, path, `p${i}`));
    }
    // One slow server per path would be simpler to count, but one server counting concurrency is the real measure.
    let active = 0;
    let maxActive = 0;
    const server = http.createServer((req, res) => {
      const data = files[decodeURIComponent(req.url!.slice(1))];
      if (!data) {
        res.writeHead(404).end();
        return;
      }
      active++;
      maxActive = Math.max(maxActive, active);
      res.writeHead(200, { 'content-length': data.length });
      setTimeout(() => {
        res.end(data);
        active--;
      }, 100);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const fetcher = createFetcher({ cacheDir, via: 'http', downloads: 2, http: HTTP, mirrorsFor: () => [url] });
      await Promise.all(pkgs.map((p) => fetcher.fetch(p)));
      assert.equal(maxActive, 2);
      assert.equal(fetcher.stats().downloads, 6);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  test('a cached file of the wrong size is fetched again; verify re-hashes', async () => {
    const cacheDir = await freshCache();
    const pkg = pkgFor(body);
    const counting = await startMirror({ files: { [PATH]: body } });
    try {
      const fetcher = createFetcher({ cacheDir, via: 'http', http: HTTP, mirrorsFor: () => [counting.url], logger: createMemoryLogger() });
      const path = await fetcher.fetch(pkg);
      await writeFile(path, body.subarray(0, 1000));
      await fetcher.fetch(pkg);
      assert.equal(counting.requests.length, 2, 'the short file was replaced');

      const flipped = Buffer.from(body);
      flipped[5]! ^= 0xff;
      await writeFile(path, flipped);
      await fetcher.fetch(pkg);
      assert.equal(counting.requests.length, 2, 'without verify, a file of the right size is trusted by its address');
      const logger = createMemoryLogger();
      const verifying = createFetcher({ cacheDir, via: 'http', http: HTTP, verify: true, mirrorsFor: () => [counting.url], logger });
      await verifying.fetch(pkg);
      assert.equal(counting.requests.length, 3);
      assert.deepEqual(await readFile(path), body);
      assert.ok(
        logger.lines.some((l) => /is corrupt \(sha256 [0-9a-f]{64}\)/.test(l)),
        logger.lines.join('\n'),
      );
    } finally {
      await counting.close();
    }
  });

  test('an aborted download (a stalled transfer) leaves nothing at the content address', async () => {
    const cacheDir = await freshCache();
    const stalling = await startSlowServer(body, { stallAfter: 100_000 });
    try {
      const controller = new AbortController();
      const fetcher = createFetcher({ cacheDir, via: 'auto', http: { ...HTTP, idleTimeoutMs: 60_000 }, mirrorsFor: () => [stalling.url] });
      const pending = fetcher.fetch(pkgFor(body), { signal: controller.signal });
      // Wait until part of the body is in a temporary file, then abort.
      const shard = dirname(cachePath(cacheDir, pkgFor(body).sha256));
      for (let i = 0; i < 1000 && (await readdir(shard).catch(() => [])).length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal((await readdir(shard)).length, 1, 'a temporary file while downloading');
      controller.abort();
      await assert.rejects(pending, (e: unknown) => (e as Error).name === 'AbortError');
      // The download's own clean-up finishes just after the waiter is released.
      for (let i = 0; i < 100 && (await cacheFiles(cacheDir)).length > 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(await cacheFiles(cacheDir), []);
    } finally {
      await stalling.close();
    }
  });

  test('one waiter giving up does not stop the download others wait for', async () => {
    const cacheDir = await freshCache();
    const slow = await startSlowServer(body, { chunk: 4 * 1024, delayMs: 10 });
    try {
      const fetcher = createFetcher({ cacheDir, via: 'http', http: HTTP, mirrorsFor: () => [slow.url] });
      const controller = new AbortController();
      const quitter = fetcher.fetch(pkgFor(body), { signal: controller.signal });
      const stayer = fetcher.fetch(pkgFor(body));
      setTimeout(() => controller.abort(), 30);
      await assert.rejects(quitter, (e: unknown) => (e as Error).name === 'AbortError');
      assert.deepEqual(await readFile(await stayer), body);
      assert.equal(slow.stats().requests, 1);
    } finally {
      await slow.close();
    }
  });
});

describe('several processes', () => {
  const script = (cacheDir: string, url: string, pkg: PackageRef) => `
import { fetchPackage } from ${JSON.stringify(join(PROJECT_ROOT, 'src/fetch/download.ts'))};
const path = await fetchPackage(${JSON.stringify(pkg)}, [${JSON.stringify(url)}], { cacheDir: ${JSON.stringify(cacheDir)}, via: 'http' });
process.stdout.write(path);
`;

  function runChild(file: string, timeoutMs = 30_000) {
    const child = spawn(process.execPath, ['--import', 'tsx', file], { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout, stderr });
      }),
    );
    return { child, done };
  }

  test('two processes downloading one package at once both end with one good file', { timeout: 60_000 }, async () => {
    const cacheDir = await freshCache();
    const slow = await startSlowServer(body, { chunk: 16 * 1024, delayMs: 5, barrier: 2 });
    try {
      const file = join(work, 'two-procs.mts');
      await writeFile(file, script(cacheDir, slow.url, pkgFor(body)));
      const [a, b] = await Promise.all([runChild(file).done, runChild(file).done]);
      assert.equal(a.code, 0, a.stderr);
      assert.equal(b.code, 0, b.stderr);
      assert.equal(a.stdout, cachePath(cacheDir, pkgFor(body).sha256));
      assert.equal(b.stdout, a.stdout);
      assert.equal(slow.stats().requests, 2, 'both really downloaded');
      assert.equal(slow.stats().maxActive, 2, 'at the same time');
      assert.deepEqual(await cacheFiles(cacheDir), [`sha256/${pkgFor(body).sha256.slice(0, 2)}/${pkgFor(body).sha256}`]);
      assert.deepEqual(await readFile(a.stdout), body);
    } finally {
      await slow.close();
    }
  });

  test('kill -9 in the middle of a download leaves no file at the content address; the next run recovers and sweeps', {
    timeout: 60_000,
  }, async () => {
    const cacheDir = await freshCache();
    const pkg = pkgFor(body);
    const stalling = await startSlowServer(body, { stallAfter: 128 * 1024 });
    try {
      const file = join(work, 'killed.mts');
      await writeFile(file, script(cacheDir, stalling.url, pkg));
      const { child, done } = runChild(file);
      const shard = dirname(cachePath(cacheDir, pkg.sha256));
      let temps: string[] = [];
      for (let i = 0; i < 1000 && temps.length === 0; i++) {
        await new Promise((r) => setTimeout(r, 20));
        temps = (await readdir(shard).catch(() => [])).filter((t) => t.endsWith('.part'));
      }
      assert.equal(temps.length, 1, 'the child is writing a temporary file');
      // Wait until it holds part of the body, then kill it without warning.
      for (let i = 0; i < 200 && (await stat(join(shard, temps[0]!))).size === 0; i++) await new Promise((r) => setTimeout(r, 10));
      child.kill('SIGKILL');
      const result = await done;
      assert.equal(result.signal, 'SIGKILL');
      await assert.rejects(stat(cachePath(cacheDir, pkg.sha256)), 'nothing at the content address');
      assert.deepEqual(await readdir(shard), temps, "only the dead process's temporary file");

      // The next run downloads again; an old enough temporary file of a dead process is swept.
      const old = new Date(Date.now() - 3600_000);
      await utimes(join(shard, temps[0]!), old, old);
      const path = await fetchPackage(pkg, [mirror.url], { cacheDir, via: 'http', http: HTTP });
      assert.deepEqual(await readFile(path), body);
      assert.deepEqual(await readdir(shard), [pkg.sha256]);
    } finally {
      await stalling.close();
    }
  });
});
