import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { copyShippedDefinition, falcoctlProbeFile, legacyLoaderProbeFile, tempDir } from './helpers/os-fixtures.js';
import { COS_FIXTURE_BUILDS, cosFixtureObjects, cosHeadersTarball, startCosBucket, type CosBucket } from './helpers/cos-fixture.js';
import { runCli } from './helpers/cli.js';
import { loadSourceDefinition, type LoadedSourceDefinition } from '../src/config/source-definition.js';
import { resolveSource } from '../src/resolve/index.js';
import { readCosHeaders } from '../src/resolve/cos-headers.js';
import { readLockfileText, serializeLockfile } from '../src/lockfile/lockfile.js';
import { probeFileOf } from '../src/graph/targets.js';
import { createMemoryLogger } from '../src/util/log.js';
import { FalcoProbesError } from '../src/util/errors.js';
import type { Lockfile } from '../src/config/types.js';

// The shipped cos definition against a loopback stand-in for the cos-tools
// bucket: build ids from the paginated JSON listing, each build's headers
// tarball downloaded, checked against the listing's MD5 and read for its
// release and uname -v; builds sharing a kernel share one descriptor.

const HTTP = { idleTimeoutMs: 5000, attempts: 2, backoffMs: 10 };
let bucket: CosBucket;
let project: string;
let cache: string;
let source: LoadedSourceDefinition;
const overrides = () =>
  new Map([
    ['cos-tools', [bucket.headersBase]],
    ['cos-tools-listing', [bucket.listingBase]],
  ]);

before(async () => {
  // Five objects a page: the listing of milestone 117 takes several pages.
  bucket = await startCosBucket({ objects: await cosFixtureObjects(), pageSize: 5 });
  project = await tempDir('cos-project-');
  cache = await tempDir('cos-cache-');
  source = await loadSourceDefinition(await copyShippedDefinition('cos', project), project);
});

after(async () => {
  await bucket.close();
  await rm(project, { recursive: true, force: true });
  await rm(cache, { recursive: true, force: true });
});

const tarballRequests = () => bucket.requests.filter((r) => r.endsWith('/kernel-headers.tgz'));
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('cos resolver', () => {
  let lock: Lockfile;
  let lines: string[];

  test('one descriptor per kernel Falco can name, from the earliest build that ships it', async () => {
    const logger = createMemoryLogger();
    lock = await resolveSource(source, { mirrorOverrides: overrides(), http: HTTP, logger, cacheDir: cache });
    lines = logger.lines;
    assert.deepEqual(lock.kernels.map((k) => `${k.name} ${k.release}`).sort(), [
      'cos-117-18613-0-79 6.1.58+',
      'cos-117-18613-263-24 6.1.85+',
      'cos-117-18613-339-26 6.1.100+',
      'cos-121-18867-199-52 6.6.72+',
      'cos-121-18867-90-38 6.6.56+',
      'cos-125-19216-104-5 6.6.87+',
      'cos-129-19506-448-20 6.12.40+',
    ]);
    for (const k of lock.kernels) {
      const buildId = k.name
        .replace(/^cos-[0-9]+-/, '')
        .split('-')
        .join('.');
      const served = bucket.objects.get(`${buildId}/kernel-headers.tgz`)!;
      assert.deepEqual(k.packages, [
        {
          name: 'kernel-headers',
          version: buildId,
          role: 'headers',
          repository: 'cos-tools',
          path: `${buildId}/kernel-headers.tgz`,
          sha256: sha256(served),
          size: served.length,
        },
      ]);
      const spec = COS_FIXTURE_BUILDS.find((b) => b.buildId === buildId)!.headers!;
      assert.equal(k.version, spec.version, 'uname -v from the headers');
      assert.equal(k.kernelVersion, '1');
      assert.equal(k.machine, 'x86_64');
      assert.equal(k.targetId, 'cos');
      // `+` in the release, as uname -r prints it on COS.
      assert.equal(probeFileOf(k), `falco_cos_${spec.release}_1.o`);
      assert.equal(probeFileOf(k), falcoctlProbeFile(lock.osRelease, k.release, k.version));
      assert.equal(probeFileOf(k), legacyLoaderProbeFile(lock.osRelease, k.release, k.version));
    }
    const text = serializeLockfile(lock);
    assert.ok(!text.includes(bucket.url));
    assert.equal(readLockfileText(text, 'cos.lock.yaml').kernels.length, 7);
  });

  test('shared kernels are reported; a rebuilt kernel under one release is a warning; branch points and builds without headers are left out', () => {
    assert.ok(
      lines.some((l) => /6\.1\.85\+ \(x86_64\): 1 later build\(s\) share the kernel of cos-117-18613-263-24: 18613\.263\.75/.test(l)),
      lines.join('\n'),
    );
    assert.ok(
      lines.some((l) => /^warning: .*6\.1\.100\+: builds 18613\.339\.52 report another uname -v than 18613\.339\.26/.test(l)),
      lines.join('\n'),
    );
    assert.ok(!lock.kernels.some((k) => k.release === '6.1.55+'), '18613.0.0 is a branch point');
    assert.ok(
      lines.some((l) => /milestone 117: 5 build\(s\) with kernel headers/.test(l)),
      lines.join('\n'),
    );
    assert.ok(
      bucket.requests.filter((r) => r.startsWith('/storage/v1/b/cos-tools/o?prefix=18613.')).length > 3,
      'the listing was read page by page',
    );
  });

  test('a second resolve reads no tarball again (the memo, keyed by content) and gives the same lockfile', async () => {
    const before = tarballRequests().length;
    assert.equal(before, 9, 'each build with headers downloaded once, the branch point not at all');
    const again = await resolveSource(source, { mirrorOverrides: overrides(), http: HTTP, cacheDir: cache });
    assert.equal(tarballRequests().length, before);
    assert.equal(serializeLockfile(again), serializeLockfile(lock));
    assert.equal((await readdir(join(cache, 'cos-headers'))).length, 9);
  });

  test('through the CLI: --mirror for both repositories, the memo from the environment', async () => {
    const r = await runCli(
      ['resolve', 'cos', '--mirror', `cos-tools=${bucket.headersBase}`, '--mirror', `cos-tools-listing=${bucket.listingBase}`],
      {
        cwd: project,
        env: { FALCO_PROBES_RESOLVE_CACHE: cache },
        timeoutMs: 60_000,
      },
    );
    assert.equal(r.code, 0, r.stderr);
    const text = await readFile(join(project, 'kernels', 'cos.lock.yaml'), 'utf8');
    assert.equal(text, serializeLockfile(lock));
    assert.match(text, /name: cos-117-18613-339-26\n {4}release: 6\.1\.100\+\n/);
  });
});

describe('cos faults', () => {
  const resolveWith = (b: CosBucket, cacheDir: string) =>
    resolveSource(source, {
      mirrorOverrides: new Map([
        ['cos-tools', [b.headersBase]],
        ['cos-tools-listing', [b.listingBase]],
      ]),
      http: HTTP,
      cacheDir,
    });

  test('bytes that do not match the listed MD5 are refused, naming the URL', async () => {
    const b = await startCosBucket({ objects: await cosFixtureObjects() });
    const dir = await tempDir('cos-cache-');
    try {
      b.wrongMd5.add('18867.90.38/kernel-headers.tgz');
      await assert.rejects(resolveWith(b, dir), (err: unknown) => {
        assert.ok(err instanceof FalcoProbesError);
        assert.equal(err.kind, 'checksum');
        assert.match(err.format(), /18867\.90\.38\/kernel-headers\.tgz: MD5 mismatch against the bucket listing/);
        return true;
      });
    } finally {
      await b.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a listing that answers HTML is refused with a hint', async () => {
    const b = await startCosBucket({ objects: await cosFixtureObjects() });
    const dir = await tempDir('cos-cache-');
    try {
      b.listingOverride = { status: 200, type: 'text/html', body: '<!DOCTYPE html><html><body>Sign in to continue</body></html>' };
      await assert.rejects(resolveWith(b, dir), (err: unknown) => {
        assert.ok(err instanceof FalcoProbesError);
        assert.match(err.format(), /\/storage\/v1\/b\/cos-tools\/o\?prefix=18613\.: not a JSON object listing/);
        assert.match(err.format(), /error page instead of a GCS JSON object listing/);
        return true;
      });
      b.listingOverride = { status: 200, type: 'application/json', body: '{"error": {"code": 401}}' };
      await assert.rejects(resolveWith(b, dir), /"kind" is null, expected "storage#objects"/);
    } finally {
      await b.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a milestone with no headers in the listing names the milestone in the definition', async () => {
    const objects = await cosFixtureObjects(COS_FIXTURE_BUILDS.filter((x) => !x.buildId.startsWith('19216.')));
    const b = await startCosBucket({ objects });
    const dir = await tempDir('cos-cache-');
    try {
      await assert.rejects(resolveWith(b, dir), (err: unknown) => {
        assert.ok(err instanceof FalcoProbesError);
        assert.equal(err.kind, 'config');
        assert.match(
          err.format(),
          /cos\.yaml:\d+:\d+: milestone 125: the listing has no <build id>\/kernel-headers\.tgz under prefix "19216\."/,
        );
        return true;
      });
    } finally {
      await b.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('reading a headers tarball', () => {
  test('before Linux 6.0, uname -v is in compile.h; names may start with ./', async () => {
    const tgz = await cosHeadersTarball({
      release: '5.15.107+',
      version: '#1 SMP Sat Mar  4 13:23:54 UTC 2023',
      versionIn: 'compile',
      dotSlash: true,
    });
    const b = await startCosBucket({ objects: new Map([['17412.101.17/kernel-headers.tgz', tgz]]) });
    try {
      const info = await readCosHeaders(`${b.headersBase}/17412.101.17/kernel-headers.tgz`, { size: tgz.length }, HTTP, 1 << 30);
      assert.equal(info.release, '5.15.107+');
      assert.equal(info.version, '#1 SMP Sat Mar  4 13:23:54 UTC 2023');
      assert.equal(info.machine, 'x86_64');
      assert.equal(info.sha256, sha256(tgz));
    } finally {
      await b.close();
    }
  });

  test('refused: no uname -v, disagreeing release, a truncated tarball, a size over the cap', async () => {
    const cases: [string, Buffer, RegExp, number?][] = [];
    const noVersion = await cosHeadersTarball({ release: '6.1.1+', version: '#1 SMP', versionIn: 'compile' });
    // A compile.h without UTS_VERSION: rebuild the tar with the define removed.
    cases.push(['no-version', await stripDefine(noVersion), /defines UTS_VERSION/]);
    const good = await cosHeadersTarball({ release: '6.1.2+', version: '#1 SMP x' });
    cases.push(['truncated', good.subarray(0, good.length - 100), /cannot read the headers tarball|bytes, the bucket listing gives/]);
    cases.push(['over-cap', good, /more than the limit of 1024/, 1024]);
    const b = await startCosBucket({ objects: new Map(cases.map(([n, d]) => [`${n}/kernel-headers.tgz`, d])) });
    try {
      for (const [name, data, re, cap] of cases) {
        const expectedSize = name === 'truncated' ? good.length : data.length;
        await assert.rejects(
          readCosHeaders(`${b.headersBase}/${name}/kernel-headers.tgz`, { size: expectedSize }, { ...HTTP, attempts: 1 }, cap ?? 1 << 30),
          re,
          name,
        );
      }
    } finally {
      await b.close();
    }
  });
});

/** The same tarball with every `#define UTS_VERSION` line dropped (gunzip, edit the tar in place, gzip). */
async function stripDefine(tgz: Buffer): Promise<Buffer> {
  const { gunzipSync, gzipSync } = await import('node:zlib');
  const tarBytes = gunzipSync(tgz);
  const text = tarBytes.toString('latin1');
  const at = text.indexOf('#define UTS_VERSION');
  // Overwrite the define's name in place (same length): the header no longer defines it.
  const patched = Buffer.from(`${text.slice(0, at)}#define UTS_VERSIOX${text.slice(at + '#define UTS_VERSION'.length)}`, 'latin1');
  return gzipSync(patched);
}
