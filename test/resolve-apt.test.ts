import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareDebVersions, satisfiesRelation, upstreamVersion, type VersionRelation } from '../src/resolve/deb-version.js';
import { parseDepends } from '../src/resolve/apt-depends.js';
import { StanzaParser, type RawStanza } from '../src/resolve/apt-stanza.js';
import { clearsignedBody, parseReleaseText } from '../src/resolve/apt-release.js';
import { loadSourceDefinition } from '../src/config/source-definition.js';
import { resolveSource } from '../src/resolve/index.js';
import { serializeLockfile } from '../src/lockfile/lockfile.js';
import { createMemoryLogger } from '../src/util/log.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { sha256Hex } from '../src/util/hash.js';
import type { KernelDescriptor, Lockfile } from '../src/config/types.js';
import { debianLikeDefinition, debianLikeSuites, writeAptSuite, type BuiltSuite, type FixtureSuite } from './helpers/apt-fixture.js';
import { startMirror, type TestMirror } from './helpers/server.js';

describe('Debian version comparison', () => {
  // [a, b, sign of compare(a, b)]: dpkg's own test cases plus the kernel versions that matter here.
  const table: [string, string, -1 | 0 | 1][] = [
    ['1.0', '1.0', 0],
    ['1.0', '1.0-0', 0],
    ['0:1.0', '1.0', 0],
    ['1.0', '1.1', -1],
    ['1.9', '1.10', -1],
    ['1.10', '1.9', 1],
    ['1:0.1', '2.0', 1],
    ['2:1.0', '1:9.9', 1],
    ['1.0~rc1', '1.0', -1],
    ['1.0~~', '1.0~', -1],
    ['1.0~', '1.0', -1],
    ['1.0', '1.0+1', -1],
    ['1.0a', '1.0', 1],
    ['1.0a', '1.0+', -1], // letters sort before other characters
    ['1.0-1', '1.0-2', -1],
    ['1.0-1', '1.0-1.1', -1],
    ['1.0-1~bpo1', '1.0-1', -1],
    ['6.1.170-3', '6.1.176-1', -1],
    ['6.1.176-1', '6.1.192-3', -1],
    ['6.12.117-1~deb12u1', '6.12.117-1', -1],
    ['6.12.117-1~deb12u1', '6.12.115-2~deb12u1', 1],
    ['4.9.228-1', '4.14.9-1', -1],
    ['1.001', '1.1', 0],
    ['1.00000000000000000000001', '1.2', -1], // digit runs longer than a double
    ['a', 'b', -1],
    ['1.0-a', '1.0-1', 1],
    ['2.34', '2.34-0', 0],
  ];
  for (const [a, b, sign] of table) {
    test(`${a} vs ${b}`, () => {
      assert.equal(Math.sign(compareDebVersions(a, b)), sign);
      assert.equal(Math.sign(compareDebVersions(b, a)), -sign || 0);
    });
  }

  test('relations', () => {
    const cases: [string, VersionRelation, string, boolean][] = [
      ['6.1.192-3', '>=', '6.1.170-3', true],
      ['6.1.170-3', '>=', '6.1.170-3', true],
      ['6.1.170-2', '>=', '6.1.170-3', false],
      ['6.1.170-3', '=', '6.1.170-3', true],
      ['6.1.170-3', '=', '0:6.1.170-3', true],
      ['6.1.170-4', '=', '6.1.170-3', false],
      ['1.0', '<<', '1.0', false],
      ['1.0~', '<<', '1.0', true],
      ['1.0', '<=', '1.0', true],
      ['1.1', '>>', '1.0', true],
      ['1.0', '>>', '1.0', false],
    ];
    for (const [v, rel, wanted, ok] of cases) assert.equal(satisfiesRelation(v, rel, wanted), ok, `${v} ${rel} ${wanted}`);
  });

  test('upstream version', () => {
    assert.equal(upstreamVersion('1:6.12.117-1~deb12u1'), '6.12.117');
    assert.equal(upstreamVersion('6.1.176-1'), '6.1.176');
    assert.equal(upstreamVersion('2.0'), '2.0');
    assert.equal(upstreamVersion('1.2-3-4'), '1.2-3');
  });
});

describe('Depends parsing', () => {
  test('groups, alternatives, relations and qualifiers', () => {
    const r = parseDepends('linux-base (>= 4.12~), a (= 1.0) | b:any (<< 2), c [amd64], d (> 1), e (< 2) <!nocheck>');
    assert.ok('groups' in r);
    assert.deepEqual(r.groups, [
      [{ name: 'linux-base', relation: '>=', version: '4.12~' }],
      [
        { name: 'a', relation: '=', version: '1.0' },
        { name: 'b', relation: '<<', version: '2' },
      ],
      [{ name: 'c' }],
      [{ name: 'd', relation: '>=', version: '1' }],
      [{ name: 'e', relation: '<=', version: '2' }],
    ]);
  });
  test('refuses what it cannot read', () => {
    for (const bad of ['a (~~ 1)', 'a (>= 1', '$(reboot)', 'a b', 'a (>= `x` y)']) {
      const r = parseDepends(bad);
      assert.ok('error' in r, bad);
    }
  });
});

describe('stanza parser', () => {
  const text =
    'Package: a\nVersion: 1.0\nDescription: first\n line two\n .\n line: four\nDepends: x (>= 1),\n y\n\n' +
    'Package: b\r\nVersion: 2.0\r\n\r\n' +
    '\n\n' +
    'Package: c\nVersion: 3\n \t \nPackage: d\nVersion: 4';
  const parse = (chunks: string[]) => {
    const out: RawStanza[] = [];
    const p = new StanzaParser((s) => out.push(s), 'http://127.0.0.1/x');
    for (const c of chunks) p.push(c);
    p.end();
    return out;
  };
  test('fields, continuation lines, CRLF, blank separators, no final newline', () => {
    const out = parse([text]);
    assert.deepEqual(
      out.map((s) => [s.package, s.version, s.depends, s.line]),
      [
        ['a', '1.0', 'x (>= 1), y', 1],
        ['b', '2.0', undefined, 10],
        ['c', '3', undefined, 15],
        ['d', '4', undefined, 18],
      ],
    );
  });
  test('the same result for any chunking (one character at a time)', () => {
    assert.deepEqual(parse(text.split('')), parse([text]));
    assert.deepEqual(parse([text.slice(0, 17), text.slice(17, 18), text.slice(18)]), parse([text]));
  });
  for (const [label, bad, line] of [
    ['a line without a colon', 'Package: a\nVersion: 1\nthis is not a field\n', 3],
    ['a continuation outside a field', ' leading blank\nPackage: a\n', 1],
    ['a stanza without Package', 'Version: 1\nArchitecture: all\n', 1],
    ['a duplicated Package field', 'Package: a\nPackage: b\n', 2],
    ['a field name with blanks', 'Package: a\nBad Name: x\n', 2],
  ] as const) {
    test(`refuses ${label}`, () => {
      assert.throws(
        () => parse([bad]),
        (err: unknown) =>
          err instanceof FalcoProbesError &&
          err.message.includes(`line ${line}`) &&
          err.format().startsWith('http://127.0.0.1/x: malformed Packages index'),
      );
    });
  }
});

describe('Release parsing', () => {
  test('SHA256 list, suite, codename; clear-signed body', () => {
    const body =
      'Origin: X\nSuite: oldstable\nCodename: bookworm\nMD5Sum:\n 0123 12 main/binary-amd64/Packages\nSHA256:\n ' +
      'a'.repeat(64) +
      '     12 main/binary-amd64/Packages\n ' +
      'b'.repeat(64) +
      ' 5 main/binary-amd64/Packages.gz\n';
    // A line of the signed text is dash-escaped ("- ") by the signer.
    const signed = `-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n- ${body}-----BEGIN PGP SIGNATURE-----\n\nxxx\n-----END PGP SIGNATURE-----\n`;
    const text = clearsignedBody(signed, 'http://h/InRelease');
    assert.equal(text, body);
    const r = parseReleaseText(text, 'http://h/InRelease');
    assert.equal(r.suite, 'oldstable');
    assert.equal(r.codename, 'bookworm');
    assert.deepEqual(r.files.get('main/binary-amd64/Packages'), { sha256: 'a'.repeat(64), size: 12 });
    assert.deepEqual(r.files.get('main/binary-amd64/Packages.gz'), { sha256: 'b'.repeat(64), size: 5 });
  });
  test('refuses hostile or malformed entries', () => {
    for (const bad of [
      `SHA256:\n ${'a'.repeat(64)} 12 ../../etc/passwd\n`,
      `SHA256:\n ${'a'.repeat(64)} 12 main/$(reboot)\n`,
      `SHA256:\n ${'A'.repeat(64)} 12 main/Packages\n`,
      `SHA256:\n ${'a'.repeat(64)} twelve main/Packages\n`,
      `SHA256:\n ${'a'.repeat(64)} 12\n`,
      'Origin: X\n',
    ]) {
      assert.throws(
        () => parseReleaseText(bad, 'http://h/Release'),
        (e: unknown) => e instanceof FalcoProbesError && e.format().startsWith('http://h/Release: '),
        bad,
      );
    }
  });
});

/** A temporary project with a copy of the test definition, and two loopback mirrors (one per suite). */
async function withFixture<T>(
  suites: FixtureSuite[],
  fn: (ctx: { dir: string; file: string; mirrors: Record<string, TestMirror>; built: Record<string, BuiltSuite> }) => Promise<T>,
  definition: (urls: Record<string, string>) => string = debianLikeDefinition,
): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'falco-probes-apt-'));
  const mirrors: Record<string, TestMirror> = {};
  try {
    const built: Record<string, BuiltSuite> = {};
    for (const s of suites) {
      built[s.suite] = await writeAptSuite(join(dir, 'mirror', s.suite), s);
      mirrors[s.suite] = await startMirror({ root: join(dir, 'mirror', s.suite) });
    }
    await mkdir(join(dir, 'kernels'), { recursive: true });
    const file = join(dir, 'kernels', 'debian12.yaml');
    await writeFile(file, definition(Object.fromEntries(Object.entries(mirrors).map(([k, m]) => [k, m.url]))));
    return await fn({ dir, file, mirrors, built });
  } finally {
    for (const m of Object.values(mirrors)) await m.close();
    await rm(dir, { recursive: true, force: true });
  }
}

const fastHttp = { attempts: 2, backoffMs: 10, idleTimeoutMs: 5_000 };

async function resolveFile(file: string, root: string, logger = createMemoryLogger()): Promise<Lockfile> {
  const source = await loadSourceDefinition(file, root);
  return resolveSource(source, { http: fastHttp, logger });
}

const roles = (k: KernelDescriptor) => Object.fromEntries(k.packages.map((p) => [p.role, `${p.name} ${p.version} @${p.repository}`]));

describe('apt resolver on a loopback mirror', () => {
  test('resolves every headers flavour with its common, kbuild and image packages', async () => {
    await withFixture(debianLikeSuites(), async ({ dir, file, mirrors, built }) => {
      const logger = createMemoryLogger();
      const lock = await resolveFile(file, dir, logger);
      const byName = new Map(lock.kernels.map((k) => [k.name, k]));
      assert.deepEqual(
        [...byName.keys()].sort(),
        [
          '6.1.0-10-amd64',
          '6.1.0-10-cloud-amd64',
          '6.1.0-10-rt-amd64',
          '6.1.0-11-amd64',
          '6.1.0-11-cloud-amd64',
          '6.1.0-11-rt-amd64',
          '6.1.0-12-amd64',
          '6.1.0-12-cloud-amd64',
          '6.1.0-12-rt-amd64',
          '6.12.30+deb12-amd64',
          '6.12.30+deb12-cloud-amd64',
          '6.12.30+deb12-rt-amd64',
        ],
        'meta packages are not kernels, and 4.9 is below minimumKernel',
      );
      // The exact kbuild version when listed; the image signed when present.
      assert.deepEqual(roles(byName.get('6.1.0-10-amd64')!), {
        headers: 'linux-headers-6.1.0-10-amd64 6.1.38-1 @bookworm',
        common: 'linux-headers-6.1.0-10-common 6.1.38-1 @bookworm',
        kbuild: 'linux-kbuild-6.1 6.1.38-1 @bookworm',
        image: 'linux-image-6.1.0-10-amd64 6.1.38-1 @bookworm',
      });
      // kbuild moved on: the newest that satisfies (>= 6.1.40-1), from the other suite; only the unsigned image exists.
      assert.deepEqual(roles(byName.get('6.1.0-11-rt-amd64')!), {
        headers: 'linux-headers-6.1.0-11-rt-amd64 6.1.40-1 @bookworm-security',
        common: 'linux-headers-6.1.0-11-common-rt 6.1.40-1 @bookworm-security',
        kbuild: 'linux-kbuild-6.1 6.1.44-1 @bookworm-security',
        image: 'linux-image-6.1.0-11-rt-amd64-unsigned 6.1.40-1 @bookworm-security',
      });
      // No image package at all: the kernel is kept without one.
      assert.deepEqual(Object.keys(roles(byName.get('6.1.0-12-cloud-amd64')!)).sort(), ['common', 'headers', 'kbuild']);
      // The 6.12 backport's kbuild lives in the other suite.
      assert.equal(roles(byName.get('6.12.30+deb12-amd64')!)['kbuild'], 'linux-kbuild-6.12.30+deb12 6.12.30-1~deb12u1 @bookworm');

      const rt = byName.get('6.1.0-10-rt-amd64')!;
      assert.equal(rt.version, '#1 SMP PREEMPT_RT Debian 6.1.38-1');
      assert.equal(byName.get('6.1.0-10-amd64')!.version, '#1 SMP PREEMPT_DYNAMIC Debian 6.1.38-1');
      assert.equal(rt.kernelVersion, '1');
      assert.equal(rt.machine, 'x86_64');
      assert.equal(rt.targetId, 'debian');
      assert.equal(rt.flavour, 'rt-amd64');
      assert.equal(rt.release, '6.1.0-10-rt-amd64');

      // Paths, sizes and checksums are the index's.
      const all = Object.values(built).flatMap((b) => b.packages);
      for (const k of lock.kernels)
        for (const p of k.packages) {
          const src = all.find((b) => b.name === p.name && b.version === p.version && b.filename === p.path);
          assert.ok(src, `${p.name} ${p.version} not in the fixture`);
          assert.equal(p.sha256, src.sha256);
          assert.equal(p.size, src.size);
        }
      // .xz is preferred when the Release lists it; the mirror URL is never in the lockfile.
      assert.ok(mirrors['bookworm']!.requests.includes('dists/bookworm/main/binary-amd64/Packages.xz'));
      assert.ok(!mirrors['bookworm']!.requests.includes('dists/bookworm/main/binary-amd64/Packages.gz'));
      assert.ok(!serializeLockfile(lock).includes('127.0.0.1'));
      assert.ok(
        logger.lines.some((l) => /InRelease: signature not checked/.test(l)),
        logger.lines.join('\n'),
      );
    });
  });

  test('resolving twice gives identical bytes', async () => {
    await withFixture(debianLikeSuites(), async ({ dir, file }) => {
      const a = serializeLockfile(await resolveFile(file, dir));
      const b = serializeLockfile(await resolveFile(file, dir));
      assert.equal(a, b);
      // The header names the source definition and its sha256 (the one a stale lockfile is detected by).
      const definitionSha256 = sha256Hex(await readFile(file));
      assert.equal(
        a.split('\n')[0],
        `# Generated by \`falco-probes resolve debian12\` from kernels/debian12.yaml (sha256 ${definitionSha256}). Do not edit by hand.`,
      );
    });
  });

  test('falls back from .xz to .gz on 404, and to the plain index when .gz is not listed', async () => {
    const suites = debianLikeSuites();
    suites[0]!.formats = ['gz', 'plain'];
    suites[0]!.listed = ['xz', 'gz', 'plain'];
    suites[1]!.formats = ['plain'];
    suites[1]!.listed = ['xz', 'plain'];
    await withFixture(suites, async ({ dir, file, mirrors }) => {
      const lock = await resolveFile(file, dir);
      assert.equal(lock.kernels.length, 12);
      assert.deepEqual(
        mirrors['bookworm']!.requests.filter((r) => r.includes('Packages')),
        ['dists/bookworm/main/binary-amd64/Packages.xz', 'dists/bookworm/main/binary-amd64/Packages.gz'],
      );
      assert.deepEqual(
        mirrors['bookworm-security']!.requests.filter((r) => r.includes('Packages')),
        ['dists/bookworm-security/main/binary-amd64/Packages.xz', 'dists/bookworm-security/main/binary-amd64/Packages'],
      );
    });
  });

  test('reads Release when there is no InRelease', async () => {
    const suites = debianLikeSuites().map((s) => ({ ...s, noInRelease: true }));
    await withFixture(suites, async ({ dir, file, mirrors }) => {
      const lock = await resolveFile(file, dir);
      assert.equal(lock.kernels.length, 12);
      assert.ok(mirrors['bookworm']!.requests.includes('dists/bookworm/Release'));
    });
  });

  test('the first working mirror is used; a --mirror override replaces the list', async () => {
    await withFixture(debianLikeSuites(), async ({ dir, file, mirrors }) => {
      const dead = await startMirror();
      dead.faults.set('dists/bookworm/InRelease', { kind: 'status', status: 503 });
      try {
        const source = await loadSourceDefinition(file, dir);
        const lock = await resolveSource(source, {
          http: fastHttp,
          mirrorOverrides: new Map([['bookworm', [dead.url, mirrors['bookworm']!.url]]]),
        });
        assert.equal(lock.kernels.length, 12);
        assert.ok(dead.requests.includes('dists/bookworm/InRelease'));
      } finally {
        await dead.close();
      }
    });
  });

  test('the same headers package in two repositories: the newer version wins; identical duplicates are fine', async () => {
    const suites = debianLikeSuites();
    // bookworm-security lists a rebuilt 6.1.0-10 (same ABI, newer version) with its own common package.
    suites[1]!.components['main']!.push(
      {
        name: 'linux-headers-6.1.0-10-amd64',
        version: '6.1.38-2',
        depends: 'linux-headers-6.1.0-10-common (= 6.1.38-2), linux-kbuild-6.1 (>= 6.1.38-2)',
      },
      { name: 'linux-headers-6.1.0-10-common', version: '6.1.38-2', architecture: 'all' },
      // And an identical duplicate of bookworm's cloud headers.
      {
        name: 'linux-headers-6.1.0-10-cloud-amd64',
        version: '6.1.38-1',
        depends: 'linux-headers-6.1.0-10-common (= 6.1.38-1), linux-kbuild-6.1 (>= 6.1.38-1)',
        filename: 'pool/main/l/linux-headers-6.1.0-10-cloud-amd64/linux-headers-6.1.0-10-cloud-amd64_6.1.38-1_amd64.deb',
      },
    );
    await withFixture(suites, async ({ dir, file }) => {
      const lock = await resolveFile(file, dir);
      const k = lock.kernels.find((x) => x.name === '6.1.0-10-amd64')!;
      assert.deepEqual(roles(k), {
        headers: 'linux-headers-6.1.0-10-amd64 6.1.38-2 @bookworm-security',
        common: 'linux-headers-6.1.0-10-common 6.1.38-2 @bookworm-security',
        kbuild: 'linux-kbuild-6.1 6.1.44-1 @bookworm-security',
      });
      const cloud = lock.kernels.find((x) => x.name === '6.1.0-10-cloud-amd64')!;
      assert.equal(roles(cloud)['headers'], 'linux-headers-6.1.0-10-cloud-amd64 6.1.38-1 @bookworm', 'a tie goes to the first repository');
    });
  });

  test('alternatives: the first that matches a follow pattern and exists', async () => {
    const suites = debianLikeSuites();
    suites[0]!.components['main']!.push(
      {
        name: 'linux-headers-6.1.0-20-amd64',
        version: '6.1.90-1',
        depends:
          'linux-headers-6.1.0-20-common-gone (= 6.1.90-1) | linux-headers-6.1.0-20-common (= 6.1.90-1), gcc-12 | linux-kbuild-6.1 (>= 6.1.38-1)',
      },
      { name: 'linux-headers-6.1.0-20-common', version: '6.1.90-1', architecture: 'all' },
    );
    await withFixture(suites, async ({ dir, file }) => {
      const lock = await resolveFile(file, dir);
      assert.deepEqual(roles(lock.kernels.find((x) => x.name === '6.1.0-20-amd64')!), {
        headers: 'linux-headers-6.1.0-20-amd64 6.1.90-1 @bookworm',
        common: 'linux-headers-6.1.0-20-common 6.1.90-1 @bookworm',
        kbuild: 'linux-kbuild-6.1 6.1.44-1 @bookworm-security',
      });
    });
  });

  test('a followed dependency that cannot be found fails the resolve and names what is missing', async () => {
    const suites = debianLikeSuites();
    suites[1]!.components['main'] = suites[1]!.components['main']!.filter((p) => !('name' in p) || p.name !== 'linux-kbuild-6.1');
    suites[0]!.components['main']!.push({
      name: 'linux-headers-6.1.0-30-amd64',
      version: '6.1.99-1',
      depends: 'linux-headers-6.1.0-30-common (= 6.1.99-1)',
    });
    await withFixture(suites, async ({ dir, file }) => {
      await assert.rejects(resolveFile(file, dir), (err: unknown) => {
        assert.ok(err instanceof FalcoProbesError);
        const text = err.format();
        assert.match(text, /lack dependencies/);
        assert.match(text, /6\.1\.0-11-amd64 .*missing linux-kbuild-6\.1 \(>= 6\.1\.40-1\) \(found only linux-kbuild-6\.1 6\.1\.38-1\)/);
        assert.match(text, /6\.1\.0-30-amd64 .*missing linux-headers-6\.1\.0-30-common \(= 6\.1\.99-1\) \(in no repository\)/);
        assert.match(text, /http:\/\/127\.0\.0\.1:\d+\/dists\/bookworm\/main\/binary-amd64\/Packages\.xz/);
        return true;
      });
    });
  });

  test('versionPattern groups and {upstream} feed the templates; a flavour may set its own targetId', async () => {
    const def = (urls: Record<string, string>) =>
      debianLikeDefinition(urls)
        .replace(
          "  unameVersion: '#1 SMP PREEMPT_DYNAMIC Debian {version}'\n  kernelVersion: '1'",
          "  unameVersion: '#{debrev} SMP Debian {upstream} {flavour}'\n  kernelVersion: '{debrev}'\n  versionPattern: '-(?<debrev>[0-9]+)'",
        )
        .replace('    - flavour: cloud-amd64\n', () => '    - flavour: cloud-amd64\n      targetId: debian-cloud\n');
    await withFixture(
      debianLikeSuites(),
      async ({ dir, file }) => {
        const lock = await resolveFile(file, dir);
        const k = lock.kernels.find((x) => x.name === '6.12.30+deb12-amd64')!;
        assert.equal(k.version, '#1 SMP Debian 6.12.30 amd64');
        assert.equal(k.kernelVersion, '1');
        assert.equal(lock.kernels.find((x) => x.name === '6.1.0-11-cloud-amd64')!.targetId, 'debian-cloud');
        assert.equal(lock.kernels.find((x) => x.name === '6.1.0-11-amd64')!.targetId, 'debian');
      },
      def,
    );
  });

  test('a keyring makes an unsigned InRelease a refusal', async () => {
    const def = (urls: Record<string, string>) =>
      debianLikeDefinition(urls).replace(
        '    suite: bookworm\n',
        '    suite: bookworm\n    keyring: /usr/share/keyrings/debian-archive-keyring.gpg\n',
      );
    await withFixture(
      debianLikeSuites(),
      async ({ dir, file }) => {
        await assert.rejects(resolveFile(file, dir), (err: unknown) => {
          assert.ok(err instanceof FalcoProbesError);
          assert.match(err.format(), /^http:\/\/127\.0\.0\.1:\d+\/dists\/bookworm\/InRelease: OpenPGP signature check failed/);
          return true;
        });
      },
      def,
    );
  });

  test('a relative keyring is taken relative to the definition; a missing one is a config error', async () => {
    const def = (urls: Record<string, string>) =>
      debianLikeDefinition(urls).replace('    suite: bookworm\n', '    suite: bookworm\n    keyring: ../keys/archive.gpg\n');
    await withFixture(
      debianLikeSuites(),
      async ({ dir, file }) => {
        await assert.rejects(resolveFile(file, dir), (err: unknown) => {
          assert.ok(err instanceof FalcoProbesError && err.kind === 'config');
          assert.equal(err.location.file, file);
          assert.match(err.message, new RegExp(`keyring ${join(dir, 'keys', 'archive.gpg').replace(/[.]/g, '\\.')} does not exist`));
          return true;
        });
      },
      def,
    );
  });

  test('a mirror serving another suite is refused', async () => {
    const suites = debianLikeSuites();
    suites[0]!.codename = 'trixie';
    await withFixture(suites, async ({ dir, file }) => {
      // Suite: bookworm, Codename: trixie: accepted, one of them matches.
      assert.equal((await resolveFile(file, dir)).kernels.length, 12);
    });
    const other = debianLikeSuites();
    other[0]!.suite = 'trixie';
    await withFixture(other, async ({ dir, file, mirrors }) => {
      // trixie's Release served under dists/bookworm/.
      const m = mirrors['trixie']!;
      m.files.set('dists/bookworm/InRelease', await readFile(join(dir, 'mirror', 'trixie', 'dists', 'trixie', 'InRelease')));
      const source = await loadSourceDefinition(file, dir);
      await assert.rejects(resolveSource(source, { http: fastHttp, mirrorOverrides: new Map([['bookworm', [m.url]]]) }), (err: unknown) => {
        assert.ok(err instanceof FalcoProbesError);
        assert.match(
          err.format(),
          /^http:\/\/127\.0\.0\.1:\d+\/dists\/bookworm\/InRelease: the Release file is for suite "trixie", not "bookworm"/,
        );
        return true;
      });
    });
  });
});
