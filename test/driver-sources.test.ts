import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { access, cp, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PROJECT_ROOT, withTempDir } from './helpers/cli.js';
import { closedPort, startMirror } from './helpers/server.js';
import { buildDebWithDpkg } from './helpers/archive-fixtures.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { sha256Hex } from '../src/util/hash.js';
import { extractPackage } from '../src/fetch/extract.js';
import { APT_ETC_ENV } from '../src/fetch/apt-sources.js';
import { treeHash } from '../src/util/tree-hash.js';
import { debSourceIdentity, pinnedSourceIdentity } from '../src/graph/driver-identity.js';
import {
  createDriverSources,
  DriverSourceUnreachableError,
  driverPackageMirrors,
  driverSourceUrls,
  type DriverSourceOptions,
} from '../src/fetch/driver-source.js';
import { obtainDriverSources, unreachableDriverLine } from '../src/run/driver-source.js';
import type { DriverPackage, ResolvedDriver, Target } from '../src/graph/types.js';

// Driver sources in their three remote forms, over real HTTP on loopback
// with the real extractors: a tarball pinned by its unpacked tree, a
// Debian package fetched like a kernel package (listed mirrors, --mirror,
// then apt's own sources), URL rewrites (--driver-mirror), and what counts
// as "unreachable" (network failures only; wrong bytes are errors).

function driver(source: ResolvedDriver['source'], version = '10.2.0+driver'): ResolvedDriver {
  return {
    name: 'falco',
    version,
    source,
    recipe: 'kbuild',
    kinds: ['bpf'],
    bpfDir: '.',
    object: 'probe.o',
    sourceSha256: pinnedSourceIdentity(source) ?? '0'.repeat(64),
  };
}

const extract: DriverSourceOptions['extract'] = async (file, dest, o) => {
  await extractPackage(file, 'tgz', dest, { strip: o.strip });
};

/** A GitHub-style archive of examples/probe (one top folder), and the tree hash of its content. */
async function githubTarball(dir: string, name: string, edit?: (top: string) => Promise<void>): Promise<{ bytes: Buffer; tree: string }> {
  const top = join(dir, name, 'libs-10.2.0');
  await mkdir(join(dir, name), { recursive: true });
  await cp(join(PROJECT_ROOT, 'examples', 'probe'), top, { recursive: true });
  await edit?.(top);
  execFileSync('tar', ['-C', join(dir, name), '--sort=name', '-czf', join(dir, `${name}.tar.gz`), 'libs-10.2.0']);
  return { bytes: await readFile(join(dir, `${name}.tar.gz`)), tree: await treeHash(top) };
}

const quick = { attempts: 1, idleTimeoutMs: 5_000 };

test('a tree-pinned tarball: downloaded, unpacked with strip, verified by its tree hash, kept by that hash and reused with the server gone', async () => {
  await withTempDir(async (dir) => {
    const good = await githubTarball(dir, 'good');
    const mirror = await startMirror({ files: { 'archive/10.2.0+driver.tar.gz': good.bytes } });
    const cacheDir = join(dir, 'cache');
    const d = driver({ url: `${mirror.url}/archive/10.2.0%2Bdriver.tar.gz`, tree: good.tree, strip: 1 });
    // The key's identity is the pin itself: nothing is downloaded to know it.
    assert.equal(d.sourceSha256, good.tree);
    let first: string;
    try {
      const sources = createDriverSources({ projectRoot: dir, cacheDir, extract, http: quick });
      const [a, b] = await Promise.all([sources(d), sources(d)]);
      assert.equal(a, b);
      first = a;
      assert.equal(a, join(cacheDir, 'drivers', `tree-${good.tree}`));
      assert.equal(await treeHash(a), good.tree, 'the kept tree is exactly the pinned content (no marker inside)');
      assert.equal(await readFile(join(a, 'probe.c'), 'utf8'), await readFile(join(PROJECT_ROOT, 'examples', 'probe', 'probe.c'), 'utf8'));
      assert.deepEqual(mirror.requests, ['archive/10.2.0+driver.tar.gz'], 'one download for both callers');
      assert.deepEqual(await readdir(join(cacheDir, 'drivers')), [`tree-${good.tree}`], 'no tarball or temporary left beside it');
    } finally {
      await mirror.close();
    }
    // Another run with the server stopped: the verified tree is used, nothing is fetched or unpacked.
    const again = createDriverSources({ projectRoot: dir, cacheDir, extract: async () => assert.fail('unpacked again'), http: quick });
    assert.equal(await again(d), first);
  });
});

test('a tree-pinned tarball whose one file changed is a checksum error naming the URL and both hashes; nothing is left in the cache', async () => {
  await withTempDir(async (dir) => {
    const good = await githubTarball(dir, 'good');
    const changed = await githubTarball(dir, 'changed', async (top) =>
      writeFile(join(top, 'probe.c'), `${await readFile(join(top, 'probe.c'), 'utf8')}/* changed upstream */\n`),
    );
    assert.notEqual(changed.tree, good.tree);
    const mirror = await startMirror({ files: { 'libs.tar.gz': changed.bytes } });
    try {
      const cacheDir = join(dir, 'cache');
      const url = `${mirror.url}/libs.tar.gz`;
      const sources = createDriverSources({ projectRoot: dir, cacheDir, extract, http: quick });
      const d = driver({ url, tree: good.tree, strip: 1 });
      await assert.rejects(sources(d), (err: unknown) => {
        assert.ok(err instanceof FalcoProbesError);
        assert.ok(!(err instanceof DriverSourceUnreachableError));
        assert.equal(err.kind, 'checksum');
        assert.ok(err.message.includes(url), err.message);
        assert.ok(err.message.includes(`the pin says ${good.tree}`), err.message);
        assert.ok(err.message.includes(`is ${changed.tree}`), err.message);
        return true;
      });
      assert.deepEqual(await readdir(join(cacheDir, 'drivers')), [], 'no tree, tarball or temporary folder');
      // The same failure stops obtainDriverSources: wrong bytes are never "unreachable".
      await assert.rejects(obtainDriverSources([{ driver: d } as Target], sources), /tree hash mismatch/);
    } finally {
      await mirror.close();
    }
  });
});

test('--driver-mirror rewrites: the rewritten URLs (http or file) are where bytes come from, in order; the pin still decides', async () => {
  await withTempDir(async (dir) => {
    const good = await githubTarball(dir, 'good');
    const upstream = 'https://github.invalid/falcosecurity/libs/archive/refs/tags/10.2.0%2Bdriver.tar.gz';
    assert.deepEqual(driverSourceUrls(upstream, []), [upstream]);
    assert.deepEqual(
      driverSourceUrls(upstream, [{ prefix: 'https://other.invalid/', replacement: 'http://x/' }]),
      [upstream],
      'a prefix that does not match leaves the URL',
    );

    const mirror = await startMirror({ files: { 'mirror/10.2.0+driver.tar.gz': good.bytes } });
    try {
      const rewrites = [
        { prefix: 'https://github.invalid/falcosecurity/libs/archive/refs/tags/', replacement: `http://127.0.0.1:${await closedPort()}/` },
        { prefix: 'https://github.invalid/falcosecurity/libs/', replacement: `${mirror.url}/mirror/` },
      ];
      assert.deepEqual(driverSourceUrls(upstream, rewrites), [
        `${rewrites[0]!.replacement}10.2.0%2Bdriver.tar.gz`,
        `${mirror.url}/mirror/archive/refs/tags/10.2.0%2Bdriver.tar.gz`,
      ]);
      // Served under the rewritten path of the second rule: the first (a closed port) fails, the second answers.
      mirror.files.set('mirror/archive/refs/tags/10.2.0+driver.tar.gz', good.bytes);
      const d = driver({ url: upstream, tree: good.tree, strip: 1 });
      const sources = createDriverSources({ projectRoot: dir, cacheDir: join(dir, 'cache'), extract, urlRewrites: rewrites, http: quick });
      assert.equal(await sources(d), join(dir, 'cache', 'drivers', `tree-${good.tree}`));
      assert.deepEqual(mirror.requests, ['mirror/archive/refs/tags/10.2.0+driver.tar.gz']);

      // A file:// replacement, and a sha256 pin: the bytes are checked the same way.
      const file = pathToFileURL(join(dir, 'good.tar.gz')).href;
      const bySha = driver({ url: upstream, sha256: sha256Hex(good.bytes), strip: 1 }, '10.2.1+driver');
      const fromFile = createDriverSources({
        projectRoot: dir,
        cacheDir: join(dir, 'cache2'),
        extract,
        urlRewrites: [{ prefix: upstream, replacement: file }],
      });
      assert.equal(
        await readFile(join(await fromFile(bySha), 'probe.c'), 'utf8'),
        await readFile(join(PROJECT_ROOT, 'examples', 'probe', 'probe.c'), 'utf8'),
      );
      const wrongFile = createDriverSources({
        projectRoot: dir,
        cacheDir: join(dir, 'cache3'),
        extract,
        urlRewrites: [{ prefix: upstream, replacement: pathToFileURL(join(dir, 'changed.tar.gz')).href }],
      });
      await writeFile(join(dir, 'changed.tar.gz'), Buffer.concat([good.bytes, Buffer.from('x')]));
      await assert.rejects(
        wrongFile(bySha),
        (err: unknown) => err instanceof FalcoProbesError && err.kind === 'checksum' && /sha256 mismatch/.test(err.message),
      );
    } finally {
      await mirror.close();
    }
  });
});

test('an unreachable tarball: a network failure on every URL is "unreachable", with the option that serves it; obtainDriverSources collects it per driver', async () => {
  await withTempDir(async (dir) => {
    const port = await closedPort();
    const url = `http://127.0.0.1:${port}/falcosecurity/libs/archive/10.2.0%2Bdriver.tar.gz`;
    const d = driver({ url, tree: 'a'.repeat(64), strip: 1 });
    const local = driver({ path: 'drivers/here' }, '1.0.0');
    await mkdir(join(dir, 'drivers', 'here'), { recursive: true });
    const sources = createDriverSources({ projectRoot: dir, cacheDir: join(dir, 'cache'), extract, http: quick });
    await assert.rejects(sources(d), (err: unknown) => {
      assert.ok(err instanceof DriverSourceUnreachableError);
      assert.equal(err.kind, 'network');
      assert.match(
        err.message,
        new RegExp(`^driver falco 10\\.2\\.0\\+driver: source ${url.replace(/[.+%]/g, '\\$&')} is unreachable \\(.*ECONNREFUSED.*\\)$`),
      );
      assert.equal(err.serveWith, `--driver-mirror http://127.0.0.1:${port}/falcosecurity/libs/archive/=URL`);
      return true;
    });
    const targets = [
      { driver: d, label: 'a' },
      { driver: d, label: 'b' },
      { driver: local, label: 'c' },
    ] as unknown as Target[];
    const unreachable = await obtainDriverSources(targets, sources);
    assert.equal(unreachable.length, 1);
    assert.equal(unreachable[0]!.targets.length, 2);
    const line = unreachableDriverLine(unreachable[0]!, true);
    assert.doesNotMatch(line, /\n/);
    assert.match(
      line,
      /is unreachable \(.*\); its 2 targets were not built\. Serve it with --driver-mirror http:\/\/127\.0\.0\.1:\d+\/falcosecurity\/libs\/archive\/=URL/,
    );
    assert.match(unreachableDriverLine(unreachable[0]!, false), /its 2 targets cannot be built\. .* or pass --skip-unreachable-drivers/);
    // 404 on the only URL is unreachable too.
    const mirror = await startMirror({ files: {} });
    try {
      const missing = driver({ url: `${mirror.url}/gone.tar.gz`, tree: 'a'.repeat(64), strip: 1 }, '9.9.9+driver');
      await assert.rejects(sources(missing), (err: unknown) => err instanceof DriverSourceUnreachableError && /HTTP 404/.test(err.reason));
    } finally {
      await mirror.close();
    }
  });
});

/** A real .deb holding a DKMS-like tree under usr/src/fake-1.0/. */
async function fakeDkmsDeb(dir: string): Promise<{ bytes: Buffer; deb: DriverPackage }> {
  const tree = join(dir, 'pkgtree');
  await mkdir(join(tree, 'usr', 'src'), { recursive: true });
  await cp(join(PROJECT_ROOT, 'examples', 'probe'), join(tree, 'usr', 'src', 'fake-1.0'), { recursive: true });
  const file = await buildDebWithDpkg(tree, join(dir, 'debwork'), 'xz', 'fake-dkms');
  const bytes = await readFile(file);
  return {
    bytes,
    deb: {
      archive: 'debian',
      aptPath: '/debian',
      name: 'fake-dkms',
      version: '1.0-1',
      path: 'pool/main/f/fake/fake-dkms_1.0-1_all.deb',
      sha256: sha256Hex(bytes),
      size: bytes.length,
    },
  };
}

test('a Debian package source: fetched by sha256 and size like a kernel package, unpacked once, the driver folder inside; wrong bytes and a missing folder are errors', async () => {
  await withTempDir(async (dir) => {
    const { bytes, deb } = await fakeDkmsDeb(dir);
    const mirror = await startMirror({ files: { [`debian/${deb.path}`]: bytes } });
    const noApt = { etcDir: join(dir, 'no-apt') };
    try {
      const cacheDir = join(dir, 'cache');
      const d = driver({ deb, dir: 'usr/src/fake-1.0' }, '1.0');
      assert.equal(d.sourceSha256, debSourceIdentity(deb, 'usr/src/fake-1.0'));
      assert.equal(d.sourceSha256, sha256Hex(`deb:${deb.sha256}:usr/src/fake-1.0`));
      // --mirror debian=URL (archiveMirrors) comes before the pin's own mirrors.
      const sources = createDriverSources({
        projectRoot: dir,
        cacheDir,
        extract,
        apt: noApt,
        archiveMirrors: new Map([['debian', [`${mirror.url}/debian`]]]),
        http: quick,
      });
      const folder = await sources({
        ...d,
        source: { deb: { ...deb, mirrors: [`http://127.0.0.1:${await closedPort()}/debian`] }, dir: 'usr/src/fake-1.0' },
      });
      assert.equal(folder, join(cacheDir, 'drivers', `deb-${deb.sha256}`, 'usr', 'src', 'fake-1.0'));
      assert.equal(await treeHash(folder), await treeHash(join(PROJECT_ROOT, 'examples', 'probe')));
      // The .deb sits in the package cache's content-addressed store, as kernel packages do.
      await access(join(cacheDir, 'sha256', deb.sha256.slice(0, 2), deb.sha256));
      assert.deepEqual(mirror.requests, [`debian/${deb.path}`]);

      // The same package, another folder of it: no new download; a folder it lacks is named.
      const other = createDriverSources({ projectRoot: dir, cacheDir, extract, apt: noApt });
      assert.equal(await other(d), folder);
      await assert.rejects(other(driver({ deb, dir: 'usr/src/nothing' }, '1.1')), (err: unknown) => {
        assert.ok(err instanceof FalcoProbesError);
        assert.equal(err.kind, 'config');
        assert.match(err.message, /the package fake-dkms 1\.0-1 has no folder usr\/src\/nothing/);
        return true;
      });
      assert.equal(mirror.requests.length, 1);

      // A pin the served bytes do not match: a checksum error, never "unreachable", nothing cached.
      const wrong = { ...deb, sha256: sha256Hex('other bytes') };
      const fresh = createDriverSources({ projectRoot: dir, cacheDir: join(dir, 'cache-wrong'), extract, apt: noApt, http: quick });
      await assert.rejects(
        fresh(driver({ deb: { ...wrong, mirrors: [`${mirror.url}/debian`] }, dir: 'usr/src/fake-1.0' }, '2.0')),
        (err: unknown) => {
          assert.ok(err instanceof FalcoProbesError && !(err instanceof DriverSourceUnreachableError));
          assert.equal(err.kind, 'checksum');
          assert.match(err.message, /sha256 mismatch/);
          return true;
        },
      );
      assert.deepEqual(await readdir(join(dir, 'cache-wrong', 'drivers')).catch(() => []), []);
    } finally {
      await mirror.close();
    }
  });
});

test("a Debian package source falls back to the mirrors apt's sources name for its URI path ($FALCO_PROBES_APT_ETC), also after its listed mirrors fail", async () => {
  await withTempDir(async (dir) => {
    const { bytes, deb } = await fakeDkmsDeb(dir);
    const mirror = await startMirror({ files: { [`debian/${deb.path}`]: bytes } });
    const saved = process.env[APT_ETC_ENV];
    try {
      const etc = join(dir, 'etc', 'apt');
      await mkdir(join(etc, 'sources.list.d'), { recursive: true });
      await writeFile(
        join(etc, 'sources.list.d', 'debian.sources'),
        `Types: deb\nURIs: ${mirror.url}/debian-security\nSuites: bookworm-security\nComponents: main\n\nTypes: deb\nURIs: ${mirror.url}/debian/\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n`,
      );
      process.env[APT_ETC_ENV] = etc;
      const dead = `http://127.0.0.1:${await closedPort()}/debian`;
      assert.deepEqual(await driverPackageMirrors({ ...deb, mirrors: [dead] }), [dead, `${mirror.url}/debian`]);
      assert.deepEqual(
        await driverPackageMirrors(
          { ...deb, mirrors: [dead] },
          { archiveMirrors: new Map([['debian', ['http://override.invalid/debian']]]) },
        ),
        ['http://override.invalid/debian', `${mirror.url}/debian`],
      );

      const sources = createDriverSources({ projectRoot: dir, cacheDir: join(dir, 'cache'), extract, http: quick });
      const folder = await sources(driver({ deb: { ...deb, mirrors: [dead] }, dir: 'usr/src/fake-1.0' }, '1.0'));
      assert.equal(await treeHash(folder), await treeHash(join(PROJECT_ROOT, 'examples', 'probe')));
      assert.deepEqual(mirror.requests, [`debian/${deb.path}`]);

      // No listed mirror and apt names none for the path: unreachable, with --mirror as the way out.
      process.env[APT_ETC_ENV] = join(dir, 'empty');
      const none = createDriverSources({ projectRoot: dir, cacheDir: join(dir, 'cache2'), extract, http: quick });
      await assert.rejects(none(driver({ deb, dir: 'usr/src/fake-1.0' }, '1.0')), (err: unknown) => {
        assert.ok(err instanceof DriverSourceUnreachableError);
        assert.equal(err.serveWith, '--mirror debian=URL');
        assert.match(
          err.message,
          /source debian package fake-dkms 1\.0-1 \(pool\/main\/f\/fake\/fake-dkms_1\.0-1_all\.deb\) is unreachable \(no mirror: .*apt's sources name none for \/debian\)/,
        );
        return true;
      });
    } finally {
      if (saved === undefined) delete process.env[APT_ETC_ENV];
      else process.env[APT_ETC_ENV] = saved;
      await mirror.close();
    }
  });
});
