import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMirror, type TestMirror } from './helpers/server.js';
import {
  fillerPackage,
  kernelBuild,
  rpmFileName,
  writeMirrorList,
  writeYumRepository,
  yumDefinitionYaml,
  type FixtureCompression,
  type FixturePackage,
  type RepomdEntry,
  type WrittenRepository,
} from './helpers/yum-fixture.js';
import { loadSourceDefinition } from '../src/config/source-definition.js';
import { resolveSource } from '../src/resolve/index.js';
import { FalcoProbesError, type ErrorKind } from '../src/util/errors.js';
import { sha256Hex } from '../src/util/hash.js';
import type { HttpOptions } from '../src/util/http.js';
import type { Lockfile } from '../src/config/types.js';

// Every fault of issue 2 "Bad input and faults" against the yum resolver: each
// must fail with a clear error that names the URL (and the package, for bad
// values), never with a partial result.

const HTTP: HttpOptions = { idleTimeoutMs: 300, attempts: 2, backoffMs: 10 };

let mirror: TestMirror;
let root: string;
let defs: string;
let serial = 0;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'yum-faults-mirror-'));
  defs = await mkdtemp(join(tmpdir(), 'yum-faults-defs-'));
  mirror = await startMirror({ root });
});

after(async () => {
  await mirror.close();
  await rm(root, { recursive: true, force: true });
  await rm(defs, { recursive: true, force: true });
});

/** A Fedora-shaped kernel build: packages under Packages/k/ beside repodata/. */
function kernelPackages(version = '4.14.232', release = '176.381.amzn2'): FixturePackage[] {
  return kernelBuild(version, release, 'x86_64', 0).map((p) => ({ ...p, href: `Packages/k/${rpmFileName(p)}` }));
}

function develWith(change: Partial<FixturePackage>): FixturePackage[] {
  return kernelPackages().map((p) => (p.name === 'kernel-devel' ? { ...p, ...change } : p));
}

/** A fresh repository folder for one test. */
async function repo(
  packages: FixturePackage[],
  opts: { compression?: FixtureCompression; primaryXml?: string | Buffer; repomd?: (e: RepomdEntry) => RepomdEntry[] } = {},
): Promise<WrittenRepository & { url: string }> {
  const base = `t${++serial}/`;
  const written = await writeYumRepository(root, base, packages, { ...opts, blobstore: false });
  return { ...written, url: `${mirror.url}/${base}` };
}

async function resolveFrom(
  mirrors: string[],
  opts: { http?: HttpOptions; mirrorList?: boolean; packageRoot?: 'repository' | 'host' } = {},
): Promise<Lockfile> {
  const id = `faults${++serial}`;
  const file = join(defs, `${id}.yaml`);
  await writeFile(
    file,
    yumDefinitionYaml({
      id,
      kernel: ['kernel'],
      ...(opts.packageRoot ? { packageRoot: opts.packageRoot } : {}),
      repos: [{ name: 'core', mirrors, ...(opts.mirrorList ? { mirrorList: true } : {}) }],
    }),
  );
  return resolveSource(await loadSourceDefinition(file, defs), { http: opts.http ?? HTTP });
}

/** The resolve must reject with a FalcoProbesError whose message matches and whose text names `url`. */
async function assertFails(
  promise: Promise<unknown>,
  expected: { message: RegExp; url: string; kind?: ErrorKind },
): Promise<FalcoProbesError> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof FalcoProbesError, `expected a FalcoProbesError, got ${String(caught)}`);
  const text = caught.format();
  assert.match(text, expected.message);
  assert.ok(text.includes(expected.url), `the error names ${expected.url}:\n${text}`);
  if (expected.kind) assert.equal(caught.kind, expected.kind, text);
  return caught;
}

const primaryUrl = (r: { url: string; primaryHref: string }) => `${r.url}${r.primaryHref}`;

test('a good repository resolves (the baseline the faults below break)', async () => {
  const r = await repo(kernelPackages());
  const lock = await resolveFrom([r.url]);
  assert.deepEqual(
    lock.kernels.map((k) => k.name),
    ['4.14.232-176.381.amzn2.x86_64'],
  );
  assert.equal(
    lock.kernels[0]!.packages.find((p) => p.role === 'devel')!.path,
    `Packages/k/kernel-devel-4.14.232-176.381.amzn2.x86_64.rpm`,
  );
});

test('HTTP 404 on repomd.xml', async () => {
  await assertFails(resolveFrom([`${mirror.url}/nowhere/`]), {
    message: /HTTP 404/,
    url: `${mirror.url}/nowhere/repodata/repomd.xml`,
    kind: 'network',
  });
});

test('HTTP 500 on the primary metadata, after bounded retries', async () => {
  const r = await repo(kernelPackages());
  mirror.faults.set(`${r.base}${r.primaryHref}`, { kind: 'status', status: 500 });
  await assertFails(resolveFrom([r.url]), { message: /HTTP 500.*after 2 attempts/, url: primaryUrl(r), kind: 'network' });
  assert.equal(mirror.requests.filter((p) => p === `${r.base}${r.primaryHref}`).length, 2);
});

test('a connection reset in the middle of the primary metadata', async () => {
  const r = await repo([...kernelPackages(), ...Array.from({ length: 50 }, (_, i) => fillerPackage(i, 'x86_64', 0))]);
  mirror.faults.set(`${r.base}${r.primaryHref}`, { kind: 'reset', afterBytes: 200 });
  await assertFails(resolveFrom([r.url]), { message: /connection (reset|closed|failed)/, url: primaryUrl(r), kind: 'network' });
});

test('a timeout (a server that never answers) with a short idle timeout', async () => {
  const r = await repo(kernelPackages());
  mirror.faults.set(`${r.base}repodata/repomd.xml`, { kind: 'stall' });
  const started = Date.now();
  await assertFails(resolveFrom([r.url]), { message: /timed out after 300 ms/, url: `${r.url}repodata/repomd.xml`, kind: 'network' });
  assert.ok(Date.now() - started < 5000, 'bounded in time');
});

test('a reset on the first attempt is retried and then succeeds', async () => {
  const r = await repo(kernelPackages());
  mirror.faults.set(`${r.base}${r.primaryHref}`, { kind: 'reset', afterBytes: 10, times: 1 });
  const lock = await resolveFrom([r.url]);
  assert.equal(lock.kernels.length, 1);
});

for (const compression of ['gz', 'xz', 'zst'] as const) {
  test(`truncated ${compression} primary metadata`, async () => {
    const r = await repo([...kernelPackages(), ...Array.from({ length: 30 }, (_, i) => fillerPackage(i, 'x86_64', 0))], { compression });
    // The server says the short length itself, so only the decompressor can tell.
    mirror.faults.set(`${r.base}${r.primaryHref}`, { kind: 'truncate', bytes: Math.floor(r.primary.length / 2) });
    await assertFails(resolveFrom([r.url]), {
      message: new RegExp(`corrupt or truncated ${compression} data`),
      url: primaryUrl(r),
      kind: 'input',
    });
  });
}

for (const [compression, damage] of [
  ['gz', 'its CRC'],
  ['xz', 'its stream footer'],
  ['zst', 'its frame header'],
] as const) {
  test(`corrupt ${compression} primary metadata (${damage} damaged), even when repomd.xml matches the damaged file`, async () => {
    const r = await repo(kernelPackages(), { compression });
    const bytes = Buffer.from(r.primary);
    if (compression === 'gz') bytes[bytes.length - 8]! ^= 0xff;
    if (compression === 'xz') bytes[bytes.length - 3]! ^= 0xff;
    if (compression === 'zst') bytes[4]! ^= 0xff;
    const damaged = await repo([], {
      compression: 'none',
      primaryXml: bytes,
      repomd: (e) => [
        {
          ...e,
          href: r.primaryHref.replace(/^repodata\//, 'repodata/x-'),
          checksum: sha256Hex(bytes),
          size: bytes.length,
          openSize: undefined,
        },
      ],
    });
    // Serve the damaged bytes under a name with the right extension.
    await writeFile(join(root, damaged.base, r.primaryHref.replace(/^repodata\//, 'repodata/x-')), bytes);
    await assertFails(resolveFrom([damaged.url]), {
      message: new RegExp(`corrupt or truncated ${compression} data`),
      url: `${damaged.url}${r.primaryHref.replace(/^repodata\//, 'repodata/x-')}`,
      kind: 'input',
    });
  });
}

test('a checksum mismatch between the primary metadata and repomd.xml', async () => {
  const r = await repo(kernelPackages(), { repomd: (e) => [{ ...e, checksum: sha256Hex('something else') }] });
  await assertFails(resolveFrom([r.url]), { message: /does not match .* given by repomd\.xml/, url: primaryUrl(r), kind: 'checksum' });
});

test('an open-size smaller than the data stops decompression early', async () => {
  const r = await repo(kernelPackages(), { repomd: (e) => [{ ...e, openSize: 100 }] });
  await assertFails(resolveFrom([r.url]), { message: /decompresses to more than 100 bytes/, url: primaryUrl(r) });
});

test('repomd.xml whose checksum type is not sha256 is refused', async () => {
  const r = await repo(kernelPackages(), { repomd: (e) => [{ ...e, checksumType: 'sha1', checksum: 'a'.repeat(40) }] });
  await assertFails(resolveFrom([r.url]), {
    message: /checksum type is "sha1"; only sha256 is accepted/,
    url: `${r.url}repodata/repomd.xml`,
  });
});

test('repomd.xml without primary metadata', async () => {
  const r = await repo(kernelPackages(), { repomd: () => [] });
  await assertFails(resolveFrom([r.url]), { message: /lists no primary metadata/, url: `${r.url}repodata/repomd.xml` });
});

test('an HTML error page instead of repomd.xml', async () => {
  const r = await repo(kernelPackages());
  mirror.faults.set(`${r.base}repodata/repomd.xml`, { kind: 'body', body: '<html><body><h1>Service Unavailable</h1></body></html>\n' });
  await assertFails(resolveFrom([r.url]), {
    message: /not a repomd\.xml: its root element is <html>/,
    url: `${r.url}repodata/repomd.xml`,
    kind: 'input',
  });
});

test('malformed XML in repomd.xml', async () => {
  const r = await repo(kernelPackages());
  await writeFile(join(root, r.base, 'repodata/repomd.xml'), r.repomd.replace('</repomd>', '</repo>'));
  await assertFails(resolveFrom([r.url]), { message: /malformed XML/, url: `${r.url}repodata/repomd.xml`, kind: 'input' });
});

test('malformed XML in the primary metadata names the line', async () => {
  const good = (await repo(kernelPackages())).primaryXml.toString();
  const lines = good.split('\n');
  const at = lines.findIndex((l) => l.includes('<summary>')) + 1;
  const broken = good.replace('</summary>', '</sumary>');
  const r = await repo([], { primaryXml: broken });
  await assertFails(resolveFrom([r.url]), { message: new RegExp(`malformed XML at line ${at}:.*`), url: primaryUrl(r), kind: 'input' });
});

test('a primary metadata document cut short (well-formed prefix, then the end)', async () => {
  const good = (await repo(kernelPackages())).primaryXml.toString();
  const r = await repo([], { primaryXml: good.slice(0, good.lastIndexOf('<package')) });
  await assertFails(resolveFrom([r.url]), { message: /malformed XML/, url: primaryUrl(r), kind: 'input' });
});

test('a package count that disagrees with <metadata packages>', async () => {
  const good = (await repo(kernelPackages())).primaryXml.toString();
  const r = await repo([], { primaryXml: good.replace(/packages="\d+"/, 'packages="9"') });
  await assertFails(resolveFrom([r.url]), { message: /<metadata packages="9"> but 4 <package> elements/, url: primaryUrl(r) });
});

test('primary metadata that is not UTF-8', async () => {
  const good = (await repo(kernelPackages())).primaryXml;
  const bad = Buffer.concat([good.subarray(0, 300), Buffer.from([0xff, 0xfe]), good.subarray(300)]);
  const r = await repo([], { primaryXml: bad });
  await assertFails(resolveFrom([r.url]), { message: /not UTF-8/, url: primaryUrl(r) });
});

test('an oversized response is refused at the size cap', async () => {
  const r = await repo([...kernelPackages(), ...Array.from({ length: 200 }, (_, i) => fillerPackage(i, 'x86_64', 0))], {
    compression: 'none',
  });
  await assertFails(resolveFrom([r.url], { http: { ...HTTP, maxBytes: 64 * 1024 } }), {
    message: /larger than the limit of 65536/,
    url: primaryUrl(r),
    kind: 'input',
  });
});

const HOSTILE_NAMES = [
  'kernel-devel$(touch /tmp/pwned)',
  'kernel-devel`id`',
  "kernel-devel'x",
  'kernel-devel"x',
  'kernel devel',
  'kernel-devel\nrm -rf /',
  'kernel/devel',
  '../kernel-devel',
  '',
];
for (const name of HOSTILE_NAMES) {
  test(`a package named ${JSON.stringify(name)} is refused, wanted or not`, async () => {
    const hostile = { ...kernelPackages()[0]!, name, href: 'Packages/x/x.rpm' };
    const r = await repo([...kernelPackages(), hostile]);
    await assertFails(resolveFrom([r.url]), { message: /refusing package name|without <name>/, url: primaryUrl(r), kind: 'input' });
  });
}

const HOSTILE_VALUES: [string, Partial<FixturePackage>, RegExp][] = [
  ['a version with $(...)', { version: '4.14.232$(id)' }, /package kernel-devel \(line \d+\): refusing version "4\.14\.232\$\(id\)"/],
  ['a version with backticks', { version: '4.14.`id`' }, /refusing version/],
  ['a version with a space', { version: '4.14 232' }, /refusing version/],
  ['a release with a quote', { release: "176'.amzn2" }, /refusing version/],
  ['a release with /', { release: '176/../amzn2' }, /refusing version/],
  ['a version with ..', { version: '4.14..232' }, /refusing kernel release "4\.14\.\.232-176\.381\.amzn2\.x86_64"/],
  ['an epoch that is not a number', { epoch: '1;reboot' }, /refusing epoch/],
  ['an arch with a shell metacharacter', { arch: 'x86_64;id' }, /refusing arch "x86_64;id"/],
  [
    'a non-sha256 package checksum',
    { checksumType: 'sha1', sha256: 'a'.repeat(40) },
    /package kernel-devel \(line \d+\): its checksum type is "sha1"; only sha256 is accepted/,
  ],
  ['a malformed sha256', { sha256: 'z'.repeat(64) }, /refusing sha256/],
  ['a size that is not a number', { size: -5 }, /<size package> "-5" is not a whole number/],
  ['an href that climbs out of the repository', { href: '../../../etc/passwd' }, /refusing repository path/],
  ['an absolute href', { href: '/etc/passwd' }, /refusing repository path/],
  ['an href with a URL', { href: 'http://evil.example/kernel-devel.rpm' }, /refusing repository path/],
  ['an href with a space', { href: 'Packages/k/kernel devel.rpm' }, /refusing repository path/],
  ['an href with $(...)', { href: 'Packages/k/$(reboot).rpm' }, /refusing repository path/],
];
for (const [what, change, message] of HOSTILE_VALUES) {
  test(`kernel-devel with ${what} fails naming the URL and the package`, async () => {
    const r = await repo(develWith(change));
    await assertFails(resolveFrom([r.url]), { message, url: primaryUrl(r), kind: 'input' });
  });
}

test('xml:base on a kernel package is refused', async () => {
  const good = (await repo(kernelPackages())).primaryXml.toString();
  const r = await repo([], {
    primaryXml: good.replace(
      '<location href="Packages/k/kernel-devel',
      '<location xml:base="http://elsewhere.example/" href="Packages/k/kernel-devel',
    ),
  });
  await assertFails(resolveFrom([r.url]), { message: /xml:base/, url: primaryUrl(r) });
});

test('with packageRoot host, an href may climb to the host root but not above it', async () => {
  // Base t<N>/ is one folder deep: one ../ reaches the host root, two climb above it.
  const ok = await repo(develWith({ href: '../blobstore/abc/kernel-devel.rpm' }));
  const lock = await resolveFrom([ok.url], { packageRoot: 'host' });
  assert.equal(lock.kernels[0]!.packages.find((p) => p.role === 'devel')!.path, 'blobstore/abc/kernel-devel.rpm');
  const above = await repo(develWith({ href: '../../blobstore/abc/kernel-devel.rpm' }));
  await assertFails(resolveFrom([above.url], { packageRoot: 'host' }), {
    message: /climbs 2 folders above a base only 1 deep/,
    url: primaryUrl(above),
  });
  const inner = await repo(develWith({ href: '../blobstore/../../x/kernel-devel.rpm' }));
  await assertFails(resolveFrom([inner.url], { packageRoot: 'host' }), { message: /refusing repository path/, url: primaryUrl(inner) });
});

test('a mirror.list line that is not a URL', async () => {
  await writeMirrorList(root, 'lists/bad/x86_64/mirror.list', ['<html>oops</html>']);
  await assertFails(resolveFrom([`${mirror.url}/lists/bad/$basearch/mirror.list`], { mirrorList: true }), {
    message: /line 1 is not an http\(s\) URL/,
    url: `${mirror.url}/lists/bad/x86_64/mirror.list`,
    kind: 'input',
  });
});

test('a mirror.list with a yum variable we cannot know', async () => {
  await writeMirrorList(root, 'lists/var/x86_64/mirror.list', [`${mirror.url}/2/$releasever/$basearch/`]);
  await assertFails(resolveFrom([`${mirror.url}/lists/var/$basearch/mirror.list`], { mirrorList: true }), {
    message: /uses a \$variable other than \$basearch/,
    url: `${mirror.url}/lists/var/x86_64/mirror.list`,
  });
});

test('an empty mirror.list', async () => {
  await writeMirrorList(root, 'lists/empty/x86_64/mirror.list', ['# nothing']);
  await assertFails(resolveFrom([`${mirror.url}/lists/empty/$basearch/mirror.list`], { mirrorList: true }), {
    message: /names no repository URL/,
    url: `${mirror.url}/lists/empty/x86_64/mirror.list`,
  });
});

test('every mirror down: the error lists each one', async () => {
  const err = await assertFails(resolveFrom([`${mirror.url}/down1/`, `${mirror.url}/down2/`]), {
    message: /all 2 mirrors failed/,
    url: `${mirror.url}/down2/repodata/repomd.xml`,
    kind: 'network',
  });
  assert.ok(err.format().includes(`${mirror.url}/down1/repodata/repomd.xml`));
});

test('the definition template errors name the definition file', async () => {
  const r = await repo(kernelPackages());
  const file = join(defs, 'badtemplate.yaml');
  const text = yumDefinitionYaml({ id: 'badtemplate', repos: [{ name: 'core', mirrors: [r.url] }] }).replace(
    "unameVersion: '#1 SMP {version}-{rpmRelease}'",
    "unameVersion: '#1 SMP {nope}'",
  );
  await writeFile(file, text);
  await assert.rejects(resolveSource(await loadSourceDefinition(file, defs), { http: HTTP }), (err: unknown) => {
    assert.ok(err instanceof FalcoProbesError);
    assert.equal(err.kind, 'config');
    assert.match(err.format(), /badtemplate\.yaml: yum\.unameVersion: .*\{nope\}/);
    return true;
  });
  assert.ok((await readFile(file, 'utf8')).includes('{nope}'));
});
