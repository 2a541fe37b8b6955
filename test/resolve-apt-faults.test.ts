import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './helpers/cli.js';
import { startMirror, type TestMirror } from './helpers/server.js';
import { debianLikeDefinition, debianLikeSuites, writeAptSuite, type FixtureSuite } from './helpers/apt-fixture.js';
import { loadSourceDefinition } from '../src/config/source-definition.js';
import { resolveSource } from '../src/resolve/index.js';
import { FalcoProbesError } from '../src/util/errors.js';

// Every fault of issue 2's list against the apt resolver: each must give a
// clear error naming the URL, a non-zero exit from the real CLI, and leave the
// lockfile byte for byte as it was (and no temporary file behind).

let dir: string;
let good: { bookworm: TestMirror; security: TestMirror };
/** Serves broken variants of the bookworm suite, each under its own folder. */
let variants: TestMirror;
let lockBefore: Buffer;
const lockPath = () => join(dir, 'kernels', 'debian12.lock.yaml');

function bookwormVariant(name: string, change: (s: FixtureSuite) => void): Promise<string> {
  const suite = debianLikeSuites()[0]!;
  change(suite);
  return writeAptSuite(join(dir, 'variants', name), suite).then(() => `${variants.url}/${name}`);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'falco-probes-apt-faults-'));
  const [bookworm, security] = debianLikeSuites();
  await writeAptSuite(join(dir, 'good', 'bookworm'), bookworm!);
  await writeAptSuite(join(dir, 'good', 'bookworm-security'), security!);
  good = {
    bookworm: await startMirror({ root: join(dir, 'good', 'bookworm') }),
    security: await startMirror({ root: join(dir, 'good', 'bookworm-security') }),
  };
  await mkdir(join(dir, 'variants'), { recursive: true });
  variants = await startMirror({ root: join(dir, 'variants') });
  await mkdir(join(dir, 'kernels'), { recursive: true });
  await writeFile(join(dir, 'kernels', 'debian12.yaml'), debianLikeDefinition());
  const first = await resolve();
  assert.equal(first.code, 0, first.stderr);
  lockBefore = await readFile(lockPath());
});

after(async () => {
  await good.bookworm.close();
  await good.security.close();
  await variants.close();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => {
  for (const m of [good.bookworm, good.security, variants]) {
    m.faults.clear();
    m.files.clear();
    m.requests.length = 0;
  }
});

function resolve(bookwormUrl = good.bookworm.url, extra: string[] = []) {
  return runCli(
    ['resolve', 'debian12', '--mirror', `bookworm=${bookwormUrl}`, '--mirror', `bookworm-security=${good.security.url}`, ...extra],
    {
      cwd: dir,
      timeoutMs: 60_000,
    },
  );
}

/** Run the CLI, expect failure with every pattern in stderr, and an untouched lockfile. */
async function expectFailure(patterns: RegExp[], bookwormUrl?: string, extra?: string[]): Promise<string> {
  const r = await resolve(bookwormUrl, extra);
  assert.notEqual(r.code, 0, `expected a failure; stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  for (const p of patterns) assert.match(r.stderr, p);
  assert.ok((await readFile(lockPath())).equals(lockBefore), 'the lockfile changed');
  assert.deepEqual(
    (await readdir(join(dir, 'kernels'))).sort(),
    ['debian12.lock.yaml', 'debian12.yaml'],
    'a temporary file was left behind',
  );
  return r.stderr;
}

const url = (m: TestMirror, path: string) => new RegExp(`${m.url.replace(/[.]/g, '\\.')}/${path.replace(/[.]/g, '\\.')}: `);
const XZ = 'dists/bookworm/main/binary-amd64/Packages.xz';

describe('apt resolver faults, through the CLI', () => {
  test('the good mirror resolves, and again with identical bytes', async () => {
    const r = await resolve();
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await readFile(lockPath())).equals(lockBefore));
    assert.match(lockBefore.toString(), /name: 6\.1\.0-11-rt-amd64/);
  });

  test('HTTP 404 for InRelease and Release', async () => {
    good.bookworm.faults.set('dists/bookworm/InRelease', { kind: 'status', status: 404 });
    good.bookworm.faults.set('dists/bookworm/Release', { kind: 'status', status: 404 });
    await expectFailure([url(good.bookworm, 'dists/bookworm'), /neither InRelease nor Release found \(HTTP 404\)/]);
  });

  test('HTTP 404 for every Packages index the Release lists', async () => {
    for (const ext of ['.xz', '.gz', ''])
      good.bookworm.faults.set(`dists/bookworm/main/binary-amd64/Packages${ext}`, { kind: 'status', status: 404 });
    await expectFailure([
      /every main\/binary-amd64\/Packages index the Release file lists is missing/,
      new RegExp(`${good.bookworm.url}/dists/bookworm/main/binary-amd64/Packages\\.gz`),
    ]);
  });

  test('HTTP 500, retried, then an error', async () => {
    good.bookworm.faults.set(XZ, { kind: 'status', status: 500 });
    await expectFailure([url(good.bookworm, XZ), /HTTP 500 \(after 3 attempts\)/]);
    assert.equal(good.bookworm.requests.filter((r) => r === XZ).length >= 3, true);
  });

  test('a 500 that goes away after one retry is no error', async () => {
    good.bookworm.faults.set('dists/bookworm/InRelease', { kind: 'status', status: 500, times: 1 });
    const r = await resolve();
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await readFile(lockPath())).equals(lockBefore));
  });

  test('a connection reset in the middle of the index', async () => {
    good.bookworm.faults.set(XZ, { kind: 'reset', afterBytes: 100 });
    await expectFailure([url(good.bookworm, XZ), /connection (reset|closed|failed)/]);
  });

  test('a stalled server times out (short idle timeout), with bounded retries', async () => {
    good.bookworm.faults.set('dists/bookworm/InRelease', { kind: 'stall' });
    const started = Date.now();
    await expectFailure([url(good.bookworm, 'dists/bookworm/InRelease'), /timed out after 1000 ms without data/], undefined, [
      '--timeout',
      '1',
    ]);
    assert.ok(Date.now() - started < 20_000);
    assert.equal(good.bookworm.requests.filter((r) => r === 'dists/bookworm/InRelease').length, 3, 'three attempts, then the error');
  });

  test('a truncated compressed index', async () => {
    const full = await readFile(join(dir, 'good', 'bookworm', XZ));
    good.bookworm.faults.set(XZ, { kind: 'truncate', bytes: Math.floor(full.length / 2) });
    await expectFailure([
      url(good.bookworm, XZ),
      new RegExp(`the index is ${Math.floor(full.length / 2)} bytes, the Release file lists ${full.length}`),
    ]);
  });

  test('a corrupt gzip index (its checksum matches the Release)', async () => {
    const base = await bookwormVariant('corrupt-gz', (s) => {
      s.formats = ['gz'];
      s.transform = (path, data) => {
        if (!path.endsWith('.gz')) return data;
        const out = Buffer.from(data);
        for (let i = 20; i < 60 && i < out.length; i++) out[i] = out[i]! ^ 0x5a;
        return out;
      };
    });
    await expectFailure([new RegExp(`${base}/dists/bookworm/main/binary-amd64/Packages\\.gz: corrupt gz data`)], base);
  });

  test('a corrupt xz index (its checksum matches the Release)', async () => {
    const base = await bookwormVariant('corrupt-xz', (s) => {
      s.formats = ['xz'];
      s.transform = (path, data) => {
        if (!path.endsWith('.xz')) return data;
        const out = Buffer.from(data);
        for (let i = 40; i < 80 && i < out.length; i++) out[i] = out[i]! ^ 0x5a;
        return out;
      };
    });
    await expectFailure([new RegExp(`${base}/${XZ.replace(/\./g, '\\.')}: corrupt xz data`)], base);
  });

  test('a checksum mismatch against the Release file', async () => {
    const data = Buffer.from(await readFile(join(dir, 'good', 'bookworm', XZ)));
    data[data.length >> 1] = data[data.length >> 1]! ^ 1;
    good.bookworm.files.set(XZ, data);
    const stderr = await expectFailure([url(good.bookworm, XZ), /checksum mismatch against the Release file/]);
    assert.match(stderr, /expected sha256 [0-9a-f]{64}/);
  });

  test('more bytes than the Release file lists', async () => {
    const data = await readFile(join(dir, 'good', 'bookworm', XZ));
    good.bookworm.files.set(XZ, Buffer.concat([data, Buffer.alloc(4096)]));
    await expectFailure([url(good.bookworm, XZ), /the mirror sent more than the \d+ bytes the Release file lists/]);
  });

  test('an oversized response (InRelease over the size cap)', async () => {
    good.bookworm.faults.set('dists/bookworm/InRelease', { kind: 'body', body: Buffer.alloc(17 * 1024 * 1024, 0x41) });
    await expectFailure([url(good.bookworm, 'dists/bookworm/InRelease'), /larger than the limit of 16777216/]);
  });

  test('an index that decompresses to more than the Release lists for the plain index', async () => {
    const base = await bookwormVariant('bomb', (s) => {
      s.formats = ['gz'];
      s.listed = ['gz', 'plain'];
      s.transform = (path, data) => (path.endsWith('/Packages') ? data.subarray(0, 100) : data);
    });
    await expectFailure(
      [new RegExp(`${base}/dists/bookworm/main/binary-amd64/Packages\\.gz: the index decompresses to more than 100 bytes`)],
      base,
    );
  });

  for (const [label, raw, message] of [
    [
      'a line without a colon',
      'Package: junk\nVersion: 1\nthis line is not a field',
      /malformed Packages index at line \d+: expected "Field: value"/,
    ],
    [
      'a stanza without Package',
      'Version: 1\nArchitecture: all',
      /malformed Packages index at line \d+: a stanza without a "Package" field/,
    ],
    ['a stanza without Version', 'Package: junk', /package "junk" \(stanza at line \d+\): no "Version" field/],
    [
      'a kept stanza without SHA256',
      'Package: linux-headers-6.1.0-99-amd64\nVersion: 1\nFilename: pool/x.deb\nSize: 1',
      /no "SHA256" field/,
    ],
    [
      'a malformed Depends',
      'Package: linux-headers-6.1.0-99-amd64\nVersion: 6.1.1-1\nDepends: linux-kbuild-6.1 (>= 6.1\nFilename: pool/x.deb\nSize: 1\nSHA256: ' +
        'a'.repeat(64),
      /malformed Depends entry/,
    ],
  ] as const) {
    test(`malformed stanza: ${label}`, async () => {
      const base = await bookwormVariant(`malformed-${label.replace(/\W+/g, '-')}`, (s) => {
        s.components['main']!.splice(3, 0, { raw });
      });
      await expectFailure([new RegExp(`${base}/${XZ.replace(/\./g, '\\.')}: `), message], base);
    });
  }

  // Hostile values: each must be refused before it reaches a path, a BUILD file or a shell.
  const headers = {
    name: 'linux-headers-6.1.0-13-amd64',
    version: '6.1.50-1',
    depends: 'linux-headers-6.1.0-10-common (= 6.1.38-1), linux-kbuild-6.1 (>= 6.1.38-1)',
  };
  for (const [label, pkg, message] of [
    [
      '$(...) in a package name',
      { ...headers, name: 'linux-headers-$(reboot)-amd64' },
      /refusing package name "linux-headers-\$\(reboot\)-amd64"/,
    ],
    [
      'backticks in a version',
      { ...headers, version: '6.1.50-1`id`' },
      /package "linux-headers-6\.1\.0-13-amd64" \(stanza at line \d+\): refusing version "6\.1\.50-1`id`"/,
    ],
    [
      'a quote in a package name',
      { ...headers, name: 'linux-headers-6.1.0-13-amd64"' },
      /refusing package name "linux-headers-6\.1\.0-13-amd64\\""/,
    ],
    [
      'a newline in a package name',
      { ...headers, fields: { Package: 'linux-headers-6.1.0-13-amd64\n ; rm -rf /' } },
      /refusing package name "linux-headers-6\.1\.0-13-amd64 ; rm -rf \/"/,
    ],
    ['a space in a version', { ...headers, version: '6.1.50 -1' }, /refusing version "6\.1\.50 -1"/],
    ['a slash in a package name', { ...headers, name: 'linux/headers' }, /refusing package name "linux\/headers"/],
    [
      '.. in a Filename',
      { ...headers, filename: 'pool/../../../etc/passwd' },
      /package "linux-headers-6\.1\.0-13-amd64" \(stanza at line \d+\): refusing repository path "pool\/\.\.\/\.\.\/\.\.\/etc\/passwd"/,
    ],
    ['an absolute Filename', { ...headers, filename: '/etc/passwd' }, /refusing repository path "\/etc\/passwd"/],
    [
      'a hostile followed dependency',
      { ...headers, depends: 'linux-kbuild-6.1;reboot' },
      /Depends: refusing package name "linux-kbuild-6\.1;reboot"/,
    ],
    [
      '$(...) in a dependency version',
      { ...headers, depends: 'linux-kbuild-6.1 (>= $(id))' },
      /malformed Depends entry "linux-kbuild-6\.1 \(>= \$\(id\)\)"/,
    ],
    ['a ; in a dependency version', { ...headers, depends: 'linux-kbuild-6.1 (>= 6.1;reboot)' }, /Depends: refusing version "6\.1;reboot"/],
    ['a sha256 that is not hex', { ...headers, fields: { SHA256: '../../x' } }, /refusing sha256 "\.\.\/\.\.\/x"/],
  ] as const) {
    test(`hostile value: ${label}`, async () => {
      const base = await bookwormVariant(`hostile-${label.replace(/\W+/g, '-')}`, (s) => {
        s.components['main']!.push(pkg);
      });
      await expectFailure([new RegExp(`${base}/${XZ.replace(/\./g, '\\.')}: `), message], base);
    });
  }
});

describe('apt resolver faults, in process', () => {
  test('a size cap on every download', async () => {
    const source = await loadSourceDefinition(join(dir, 'kernels', 'debian12.yaml'), dir);
    await assert.rejects(
      resolveSource(source, {
        http: { maxBytes: 1000, attempts: 1 },
        mirrorOverrides: new Map([
          ['bookworm', [good.bookworm.url]],
          ['bookworm-security', [good.security.url]],
        ]),
      }),
      (err: unknown) => {
        assert.ok(err instanceof FalcoProbesError);
        assert.match(err.format(), /^http:\/\/127\.0\.0\.1:\d+\/dists\/bookworm\/.*(larger than|more than the limit)/);
        return true;
      },
    );
  });

  test('a stall in the middle of the body times out', async () => {
    // The server sends half the index and then nothing: the idle timeout must fire.
    const data = await readFile(join(dir, 'good', 'bookworm', XZ));
    const { createServer } = await import('node:http');
    const sockets = new Set<import('node:net').Socket>();
    const server = createServer((req, res) => {
      const path = (req.url ?? '').replace(/^\/+/, '');
      if (path === XZ) {
        res.writeHead(200, { 'content-length': data.length });
        res.write(data.subarray(0, data.length >> 1));
        return; // and never end
      }
      readFile(join(dir, 'good', 'bookworm', path)).then(
        (b) => res.end(b),
        () => {
          res.writeHead(404);
          res.end();
        },
      );
    });
    server.on('connection', (s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as import('node:net').AddressInfo).port;
    try {
      const source = await loadSourceDefinition(join(dir, 'kernels', 'debian12.yaml'), dir);
      const started = Date.now();
      await assert.rejects(
        resolveSource(source, {
          http: { idleTimeoutMs: 300, attempts: 2, backoffMs: 10 },
          mirrorOverrides: new Map([
            ['bookworm', [`http://127.0.0.1:${port}`]],
            ['bookworm-security', [good.security.url]],
          ]),
        }),
        (err: unknown) => {
          assert.ok(err instanceof FalcoProbesError && err.kind === 'network', String(err));
          assert.match(err.format(), new RegExp(`^http://127\\.0\\.0\\.1:${port}/${XZ.replace(/\./g, '\\.')}: `));
          return true;
        },
      );
      assert.ok(Date.now() - started < 10_000);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    }
  });
});
