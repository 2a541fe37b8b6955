import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './helpers/cli.js';
import { closedPort, startMirror, type TestMirror } from './helpers/server.js';
import { debianLikeDefinition, debianLikeSuites, writeAptSuite, type BuiltSuite } from './helpers/apt-fixture.js';
import { aptFallbackMirrors } from '../src/fetch/apt-sources.js';
import { fetchPackage } from '../src/fetch/download.js';
import { FalcoProbesError } from '../src/util/errors.js';
import type { PackageRef } from '../src/config/types.js';
import type { Logger } from '../src/util/log.js';

// When a definition's mirrors do not answer, resolve and the package fetcher
// fall back to the mirrors this machine's apt names for the same archive (the
// same URI path), and check what they serve exactly as they would any
// mirror's. apt's configuration is a fixture folder ($FALCO_PROBES_APT_ETC)
// whose sources point at loopback mirrors.

let dir: string;
let apt: TestMirror; // what apt's sources name: /debian and /debian-security
let liar: TestMirror; // the same archive with one index changed after its Release was written
let dead: number;
let built: BuiltSuite[];
const etc = () => join(dir, 'apt-etc');
const badEtc = () => join(dir, 'apt-etc-bad');

async function writeArchive(root: string): Promise<BuiltSuite[]> {
  const [bookworm, security] = debianLikeSuites();
  return [await writeAptSuite(join(root, 'debian'), bookworm!), await writeAptSuite(join(root, 'debian-security'), security!)];
}

function sourcesFile(url: string): string {
  // deb822 for the main archive, the one-line format for security: both are read.
  return `Types: deb\nURIs: ${url}/debian\nSuites: trixie\nComponents: main\n`;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'falco-probes-apt-fallback-'));
  built = await writeArchive(join(dir, 'good'));
  await writeArchive(join(dir, 'bad'));
  // Same size, other bytes: the Release file's hash no longer matches.
  const index = join(dir, 'bad', 'debian', 'dists', 'bookworm', 'main', 'binary-amd64', 'Packages.xz');
  const bytes = await readFile(index);
  bytes.writeUInt8(bytes.readUInt8(bytes.length - 20) ^ 0xff, bytes.length - 20);
  await writeFile(index, bytes);
  for (const name of ['Packages.gz', 'Packages']) await rm(join(dir, 'bad', 'debian', 'dists', 'bookworm', 'main', 'binary-amd64', name));
  apt = await startMirror({ root: join(dir, 'good') });
  liar = await startMirror({ root: join(dir, 'bad') });
  dead = await closedPort();
  for (const [folder, mirror] of [
    [etc(), apt],
    [badEtc(), liar],
  ] as const) {
    await mkdir(join(folder, 'sources.list.d'), { recursive: true });
    await writeFile(join(folder, 'sources.list.d', 'debian.sources'), sourcesFile(mirror.url));
    await writeFile(join(folder, 'sources.list'), `deb [signed-by=/nowhere.gpg] ${mirror.url}/debian-security/ bookworm-security main\n`);
  }
  await mkdir(join(dir, 'project', 'kernels'), { recursive: true });
  await writeFile(
    join(dir, 'project', 'kernels', 'debian12.yaml'),
    debianLikeDefinition({ bookworm: `http://127.0.0.1:${dead}/debian`, 'bookworm-security': `http://127.0.0.1:${dead}/debian-security` }),
  );
});

after(async () => {
  await apt.close();
  await liar.close();
  await rm(dir, { recursive: true, force: true });
});

const cli = (args: string[], aptEtc = etc()) =>
  runCli(args, { cwd: join(dir, 'project'), env: { FALCO_PROBES_APT_ETC: aptEtc }, timeoutMs: 60_000 });
const lockPath = () => join(dir, 'project', 'kernels', 'debian12.lock.yaml');

describe("resolve falls back to apt's mirrors of the same archive", () => {
  test('the fallback mirrors: same URI path, any suite, without the mirrors already tried', async () => {
    const found = await aptFallbackMirrors(
      [`http://127.0.0.1:${dead}/debian/`, `http://127.0.0.1:${dead}/debian-security`, 'http://127.0.0.1:9/'],
      { etcDir: etc() },
    );
    assert.deepEqual(
      found.map((f) => [f.url, f.path, f.file]),
      [
        [`${apt.url}/debian`, '/debian', join(etc(), 'sources.list.d', 'debian.sources')],
        [`${apt.url}/debian-security`, '/debian-security', join(etc(), 'sources.list')],
      ],
    );
    assert.deepEqual(await aptFallbackMirrors([`${apt.url}/debian`], { etcDir: etc() }), [], 'a mirror is not its own fallback');
    assert.deepEqual(await aptFallbackMirrors(['http://127.0.0.1:9/ubuntu'], { etcDir: etc() }), [], 'another archive has none');
  });

  test("a definition whose mirrors do not answer resolves through apt's mirrors and says so; the lockfile is the one a direct resolve writes", async () => {
    const r = await cli(['resolve', 'debian12']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `bookworm: no mirror of kernels/debian12\\.yaml answered; trying ${apt.url}/debian, apt's mirror of /debian \\(.*debian\\.sources\\)`,
      ),
    );
    assert.match(
      r.stderr,
      new RegExp(
        `bookworm-security: no mirror of kernels/debian12\\.yaml answered; trying ${apt.url}/debian-security, apt's mirror of /debian-security \\(.*sources\\.list\\)`,
      ),
    );
    const viaFallback = await readFile(lockPath(), 'utf8');
    assert.ok(!viaFallback.includes(apt.url), 'no mirror in the lockfile');
    const direct = await cli([
      'resolve',
      '--check',
      'debian12',
      '--mirror',
      `bookworm=${apt.url}/debian`,
      '--mirror',
      `bookworm-security=${apt.url}/debian-security`,
    ]);
    assert.equal(direct.code, 0, `a direct resolve finds the same lockfile up to date\n${direct.stdout}${direct.stderr}`);
    assert.match(viaFallback, /6\.1\.0-10-amd64/);
  });

  test("what apt's mirror serves is checked as any mirror's: an index whose hash differs from the Release file is refused, the lockfile kept", async () => {
    const before = await readFile(lockPath());
    const r = await cli(['resolve', 'debian12'], badEtc());
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /trying .*apt's mirror of \/debian/);
    assert.match(r.stderr, /sha256|SHA256|hash/i);
    assert.ok((await readFile(lockPath())).equals(before));
  });

  test('--mirror is an explicit choice: when it does not answer there is no fallback', async () => {
    const r = await cli(['resolve', '--check', 'debian12', '--mirror', `bookworm=http://127.0.0.1:${dead}/debian`]);
    assert.notEqual(r.code, 0);
    assert.doesNotMatch(r.stderr, /apt's mirror/);
    assert.match(r.stderr, new RegExp(`127\\.0\\.0\\.1:${dead}`));
  });

  test("no apt mirror for the archive: the error is the definition mirror's own", async () => {
    const r = await cli(['resolve', '--check', 'debian12'], join(dir, 'no-apt-here'));
    assert.notEqual(r.code, 0);
    assert.doesNotMatch(r.stderr, /apt's mirror/);
    assert.match(r.stderr, new RegExp(`127\\.0\\.0\\.1:${dead}`));
  });
});

describe("packages come from apt's mirror by pool path when their own mirrors fail", () => {
  const ref = (): PackageRef => {
    const p = built[0]!.packages.find((x) => x.name === 'linux-headers-6.1.0-10-common')!;
    return { name: p.name, version: p.version, role: 'common', repository: 'bookworm', path: p.filename, sha256: p.sha256, size: p.size };
  };

  test("auto: the dead mirror, then apt's mirror of /debian, which delivers the verified bytes", async () => {
    const cacheDir = join(dir, 'cache-good');
    const lines: string[] = [];
    const logger: Logger = {
      debug() {},
      info: (m) => lines.push(m),
      warn: (m) => lines.push(m),
      error: (m) => lines.push(m),
      status() {},
      done() {},
      interactive: false,
    };
    const path = await fetchPackage(ref(), [`http://127.0.0.1:${dead}/debian`], {
      cacheDir,
      via: 'auto',
      http: { attempts: 1, idleTimeoutMs: 5_000 },
      aptSources: { etcDir: etc() },
      logger,
    });
    const bytes = await readFile(path);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), ref().sha256);
    assert.ok(apt.requests.includes(`debian/${ref().path}`), `asked apt's mirror for the pool path: ${apt.requests.join(', ')}`);
    assert.ok(
      lines.some(
        (l) =>
          l.includes(`repository bookworm: its mirrors did not deliver ${ref().name}`) &&
          l.includes(`trying apt's mirror of the same archive: ${apt.url}/debian`),
      ),
      lines.join('\n'),
    );
  });

  test("other bytes at apt's mirror are refused (checksum), not accepted nor passed on to apt-get", async () => {
    const cacheDir = join(dir, 'cache-bad');
    const wrong = { ...ref(), sha256: 'f'.repeat(64) };
    const err = await fetchPackage(wrong, [`http://127.0.0.1:${dead}/debian`], {
      cacheDir,
      via: 'auto',
      http: { attempts: 1, idleTimeoutMs: 5_000 },
      aptSources: { etcDir: etc() },
    }).catch((e: unknown) => e);
    assert.ok(err instanceof FalcoProbesError, String(err));
    assert.notEqual(err.kind, 'network');
    assert.match(err.format(), /sha256/i);
  });

  test("http: the lockfile's mirrors only, apt's are not asked", async () => {
    const before = apt.requests.length;
    const err = await fetchPackage(ref(), [`http://127.0.0.1:${dead}/debian`], {
      cacheDir: join(dir, 'cache-http'),
      via: 'http',
      http: { attempts: 1, idleTimeoutMs: 5_000 },
      aptSources: { etcDir: etc() },
    }).catch((e: unknown) => e);
    assert.ok(err instanceof FalcoProbesError && err.kind === 'network', String(err));
    assert.equal(apt.requests.length, before);
  });
});
