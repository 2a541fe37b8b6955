import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readFile, rm, writeFile, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMirror, type TestMirror } from './helpers/server.js';
import { PROJECT_ROOT, runCli } from './helpers/cli.js';
import {
  blobstorePackage,
  depthOf,
  fillerPackage,
  kernelBuild,
  renderPackage,
  renderPrimary,
  repoHash,
  rpmFileName,
  writeAmazonLinuxMirror,
  writeMirrorList,
  writeYumRepository,
  yumDefinitionYaml,
  type AmazonLinuxRepoSpec,
  type FixturePackage,
  type WrittenAmazonLinuxRepo,
} from './helpers/yum-fixture.js';
import { loadSourceDefinition, type LoadedSourceDefinition } from '../src/config/source-definition.js';
import { resolveSource } from '../src/resolve/index.js';
import { serializeLockfile, readLockfileText } from '../src/lockfile/lockfile.js';
import { releaseAtLeast } from '../src/util/natural-sort.js';
import { createMemoryLogger } from '../src/util/log.js';
import type { KernelDescriptor, Lockfile } from '../src/config/types.js';
import { PackageRecordFilter } from '../src/resolve/yum-primary-filter.js';
import { probeFileOf } from '../src/graph/targets.js';
import { falcoctlProbeFile, legacyLoaderProbeFile } from './helpers/os-fixtures.js';

// Resolve the shipped amazonlinux2 definition against a loopback mirror laid
// out as Amazon Linux 2 serves its repositories (mirror.list per arch,
// blobstore hrefs), with gzip, xz, zstd and plain primary metadata.

const ARCHES = ['x86_64', 'aarch64'];
const HTTP = { idleTimeoutMs: 2000, attempts: 2, backoffMs: 10 };
const UPSTREAM = 'http://amazonlinux.us-east-1.amazonaws.com';

const kernels = (versions: [string, string][]) => (arch: string, depth: number) =>
  versions.flatMap(([v, r]) => kernelBuild(v, r, arch, depth));
const withFillers = (inner: (arch: string, depth: number) => FixturePackage[], n: number) => (arch: string, depth: number) => [
  ...Array.from({ length: n }, (_, i) => fillerPackage(i, arch, depth)),
  ...inner(arch, depth),
];

const SPECS: AmazonLinuxRepoSpec[] = [
  {
    path: '2/core/2.0',
    compression: 'gz',
    packages: withFillers(
      (arch, depth) => [
        // Amazon Linux 2's first kernels were 4.9: older than the minimum, so dropped.
        ...kernels([
          ['4.9.77', '41.59.amzn2'],
          ['4.14.9', '1.55.amzn2'],
          ['4.14.10', '2.1.amzn2'],
          ['4.14.232', '176.381.amzn2'],
        ])(arch, depth),
        // A kernel-devel without its kernel package: a kernel without an image.
        blobstorePackage('kernel-devel', '4.14.355', '262.361.amzn2', arch, depth),
        // Another architecture in the same listing is not this architecture's kernel.
        blobstorePackage('kernel-devel', '4.14.232', '176.381.amzn2', 'i686', depth),
      ],
      40,
    ),
  },
  { path: '2/extras/kernel-5.4/latest', compression: 'xz', packages: withFillers(kernels([['5.4.268', '181.368.amzn2']]), 5) },
  { path: '2/extras/kernel-5.10/latest', compression: 'zst', packages: withFillers(kernels([['5.10.210', '201.852.amzn2']]), 5) },
  {
    path: '2/extras/kernel-5.15/latest',
    compression: 'none',
    // The same 4.14.232 build again: the first repository (core) keeps it.
    packages: withFillers(
      kernels([
        ['5.15.148', '97.158.amzn2'],
        ['4.14.232', '176.381.amzn2'],
      ]),
      5,
    ),
  },
];

let mirror: TestMirror;
let root: string;
let project: string;
let repos: WrittenAmazonLinuxRepo[];
let source: LoadedSourceDefinition;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'yum-mirror-'));
  project = await mkdtemp(join(tmpdir(), 'yum-project-'));
  mirror = await startMirror({ root });
  repos = await writeAmazonLinuxMirror(root, mirror.url, SPECS, ARCHES);
  // The shipped definition, pointed at the loopback host instead of Amazon's.
  const text = (await readFile(join(PROJECT_ROOT, 'kernels', 'amazonlinux2.yaml'), 'utf8')).split(UPSTREAM).join(mirror.url);
  await mkdir(join(project, 'kernels'), { recursive: true });
  await writeFile(join(project, 'kernels', 'amazonlinux2.yaml'), text);
  source = await loadSourceDefinition(join(project, 'kernels', 'amazonlinux2.yaml'), project);
});

after(async () => {
  await mirror.close();
  await rm(root, { recursive: true, force: true });
  await rm(project, { recursive: true, force: true });
});

/** What the fixture says the lockfile must hold: every kernel-devel of a kept arch, at least 4.14, first repository wins. */
function expectedKernels(): Map<string, { devel: FixturePackage; image?: FixturePackage; repo: string }> {
  const names = ['amzn2-core', 'amzn2extra-kernel-5.4', 'amzn2extra-kernel-5.10', 'amzn2extra-kernel-5.15'];
  const out = new Map<string, { devel: FixturePackage; image?: FixturePackage; repo: string }>();
  SPECS.forEach((spec, i) => {
    for (const arch of ARCHES) {
      const repo = repos.find((r) => r.path === spec.path && r.arch === arch)!;
      for (const p of repo.packages) {
        if (p.name !== 'kernel-devel' || p.arch !== arch || !releaseAtLeast(p.version, '4.14')) continue;
        const release = `${p.version}-${p.release}.${p.arch}`;
        if (out.has(release)) continue;
        const image = repo.packages.find(
          (k) => k.name === 'kernel' && k.arch === arch && k.version === p.version && k.release === p.release,
        );
        out.set(release, { devel: p, ...(image ? { image } : {}), repo: names[i]! });
      }
    }
  });
  return out;
}

function pathOf(p: FixturePackage): string {
  return `blobstore/${p.sha256}/${rpmFileName(p)}`;
}

test('resolves the amazonlinux2 definition through mirror.list with gz, xz, zst and plain primary metadata', async () => {
  const logger = createMemoryLogger();
  const lock = await resolveSource(source, { http: HTTP, logger });
  const expected = expectedKernels();
  assert.ok(expected.size >= 10, 'the fixture has kernels in every repository and architecture');
  assert.deepEqual(lock.kernels.map((k) => k.name).sort(), [...expected.keys()].sort());
  for (const k of lock.kernels) {
    const want = expected.get(k.name)!;
    assert.equal(k.release, `${want.devel.version}-${want.devel.release}.${want.devel.arch}`);
    assert.equal(k.machine, want.devel.arch);
    assert.equal(k.version, '#1 SMP');
    assert.equal(k.kernelVersion, '1');
    assert.equal(k.targetId, 'amazonlinux2');
    const devel = k.packages.find((p) => p.role === 'devel')!;
    assert.deepEqual(devel, {
      name: 'kernel-devel',
      version: `${want.devel.version}-${want.devel.release}`,
      repository: want.repo,
      path: pathOf(want.devel),
      sha256: want.devel.sha256,
      size: want.devel.size,
      role: 'devel',
    });
    const image = k.packages.find((p) => p.role === 'image');
    if (want.image) {
      assert.equal(image?.name, 'kernel');
      assert.equal(image?.path, pathOf(want.image));
      assert.equal(image?.sha256, want.image.sha256);
      assert.equal(image?.size, want.image.size);
    } else assert.equal(image, undefined, `${k.name} has no kernel package in the fixture`);
    assert.equal(k.packages.length, want.image ? 2 : 1);
  }
  // Older than the minimum, and the i686 build, are not kernels of this definition.
  assert.ok(!lock.kernels.some((k) => k.release.startsWith('4.9.')));
  assert.ok(!lock.kernels.some((k) => k.release.endsWith('.i686')));
  // Every primary was found through its mirror.list, with $basearch substituted in the list's URL and in its line.
  for (const r of repos) {
    assert.ok(mirror.requests.includes(`${r.path}/${r.arch}/mirror.list`), `${r.path} ${r.arch} mirror.list fetched`);
    assert.ok(mirror.requests.includes(`${r.base}${r.primaryHref}`), `${r.base}${r.primaryHref} fetched`);
  }
  assert.ok(logger.lines.some((l) => l.includes('amzn2-core x86_64')));
});

test("probe file names are the ones Falco's loaders ask for on an Amazon Linux 2 node", async () => {
  const lock = await resolveSource(source, { http: HTTP });
  // Falco's loader rule (docs/OS.md, amazonlinux2): os-release ID=amzn with VERSION_ID=2 gives
  // the target amazonlinux2; the release is `uname -r`, the kernel-devel package's
  // <version>-<release>.<arch>; the kernelversion is the number after `#` in `uname -v`
  // (`#1 SMP ...`), 1. Written out here from the fixture's packages, not from the lockfile.
  const byRelease = new Map(lock.kernels.map((k) => [k.release, k]));
  const few: [release: string, file: string][] = [
    ['4.14.9-1.55.amzn2.x86_64', 'falco_amazonlinux2_4.14.9-1.55.amzn2.x86_64_1.o'],
    ['4.14.232-176.381.amzn2.aarch64', 'falco_amazonlinux2_4.14.232-176.381.amzn2.aarch64_1.o'],
    // kernel-devel without a kernel package: the name does not depend on the image.
    ['4.14.355-262.361.amzn2.x86_64', 'falco_amazonlinux2_4.14.355-262.361.amzn2.x86_64_1.o'],
    ['5.4.268-181.368.amzn2.aarch64', 'falco_amazonlinux2_5.4.268-181.368.amzn2.aarch64_1.o'],
    ['5.10.210-201.852.amzn2.x86_64', 'falco_amazonlinux2_5.10.210-201.852.amzn2.x86_64_1.o'],
    ['5.15.148-97.158.amzn2.aarch64', 'falco_amazonlinux2_5.15.148-97.158.amzn2.aarch64_1.o'],
  ];
  for (const [release, file] of few) {
    const k = byRelease.get(release);
    assert.ok(k, `${release} is in the lockfile`);
    assert.equal(probeFileOf(k), file, release);
  }
  // Every kernel: the name from the fixture's kernel-devel package by the same rule, and what
  // falcoctl and the legacy falco-driver-loader compute from the node's os-release, uname -r and uname -v.
  const expected = expectedKernels();
  for (const k of lock.kernels) {
    const { devel } = expected.get(k.name)!;
    const file = `falco_amazonlinux2_${devel.version}-${devel.release}.${devel.arch}_1.o`;
    assert.equal(probeFileOf(k), file, k.name);
    assert.equal(falcoctlProbeFile(lock.osRelease, k.release, k.version), file, `falcoctl, ${k.name}`);
    assert.equal(legacyLoaderProbeFile(lock.osRelease, k.release, k.version), file, `legacy loader, ${k.name}`);
  }
});

test('the lockfile is deterministic, sorted naturally, and valid', async () => {
  const a = serializeLockfile(await resolveSource(source, { http: HTTP }));
  const b = serializeLockfile(await resolveSource(source, { http: HTTP }));
  assert.equal(a, b);
  const parsed: Lockfile = readLockfileText(a, 'amazonlinux2.lock.yaml');
  const x86 = parsed.kernels.filter((k) => k.machine === 'x86_64').map((k) => k.name);
  assert.ok(x86.indexOf('4.14.9-1.55.amzn2.x86_64') < x86.indexOf('4.14.10-2.1.amzn2.x86_64'), '4.14.9 sorts before 4.14.10');
});

test('falls back to the second mirror.list and to the second line of a mirror.list', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'yum-fallback-'));
  try {
    const core = repos.find((r) => r.path === '2/core/2.0' && r.arch === 'x86_64')!;
    // A list whose first line is a dead base URL (404), second the real one.
    await writeMirrorList(root, 'fallback/x86_64/mirror.list', [`${mirror.url}/nothing-here/$basearch/`, `${mirror.url}/${core.base}`]);
    const file = join(dir, 'fallback.yaml');
    await writeFile(
      file,
      yumDefinitionYaml({
        id: 'fallback',
        packageRoot: 'host',
        kernel: ['kernel'],
        // The first mirror refuses connections: the port of a server that was closed.
        repos: [
          {
            name: 'core',
            mirrorList: true,
            mirrors: [`${await closedPortUrl()}/2/core/2.0/$basearch/mirror.list`, `${mirror.url}/fallback/$basearch/mirror.list`],
          },
        ],
      }),
    );
    const lock = await resolveSource(await loadSourceDefinition(file, dir), { http: HTTP });
    const expected = core.packages.filter((p) => p.name === 'kernel-devel' && p.arch === 'x86_64' && releaseAtLeast(p.version, '4.14'));
    assert.deepEqual(lock.kernels.map((k) => k.release).sort(), expected.map((p) => `${p.version}-${p.release}.x86_64`).sort());
    assert.ok(mirror.requests.includes('nothing-here/x86_64/repodata/repomd.xml'), 'the dead line was tried first');
    // The test definition's template fills {version} and {rpmRelease}.
    assert.equal(lock.kernels.find((k) => k.release === '4.14.232-176.381.amzn2.x86_64')?.version, '#1 SMP 4.14.232-176.381.amzn2');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a base URL in the definition (no mirror.list) works, with $basearch and a repository-relative package path', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'yum-plain-'));
  try {
    for (const arch of ARCHES) {
      // A Fedora-shaped repository: Packages/k/... beside repodata/, one folder per arch.
      const pkgs = [
        ...kernelBuild('6.5.6', '300.fc39', arch, 0).map((p) => ({ ...p, href: `Packages/k/${rpmFileName(p)}` })),
        {
          ...blobstorePackage('kernel-devel', '6.6.2', '201.fc39', arch, 0),
          epoch: '1',
          href: `Packages/k/kernel-devel-6.6.2-201.fc39.${arch}.rpm`,
        },
      ];
      await writeYumRepository(root, `fedora/39/${arch}/os/`, pkgs, { compression: 'zst', blobstore: false });
    }
    const file = join(dir, 'fedora.yaml');
    await writeFile(
      file,
      yumDefinitionYaml({
        id: 'fedora',
        architectures: ARCHES,
        repos: [{ name: 'updates', mirrors: [`${mirror.url}/fedora/39/$basearch/os`] }],
      }),
    );
    const lock = await resolveSource(await loadSourceDefinition(file, dir), { http: HTTP });
    assert.deepEqual(lock.kernels.map((k) => `${k.release}/${k.machine}`).sort(), [
      '6.5.6-300.fc39.aarch64/aarch64',
      '6.5.6-300.fc39.x86_64/x86_64',
      '6.6.2-201.fc39.aarch64/aarch64',
      '6.6.2-201.fc39.x86_64/x86_64',
    ]);
    const k = lock.kernels.find((x) => x.release === '6.6.2-201.fc39.x86_64')!;
    // The epoch is in the package version, not in uname -r.
    assert.equal(k.packages[0]!.version, '1:6.6.2-201.fc39');
    assert.equal(k.packages[0]!.path, 'Packages/k/kernel-devel-6.6.2-201.fc39.x86_64.rpm');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('--mirror overrides are base URLs, even for a mirror.list repository', async () => {
  const overrides = new Map<string, string[]>();
  for (const spec of SPECS) {
    const name = spec.path === '2/core/2.0' ? 'amzn2-core' : `amzn2extra-${spec.path.split('/')[2]}`;
    overrides.set(name, [`${mirror.url}/${spec.path}/$basearch/${repoHash(spec.path, 'all')}`]);
  }
  const before = mirror.requests.length;
  const lock = await resolveSource(source, { http: HTTP, mirrorOverrides: overrides });
  assert.deepEqual(lock.kernels.map((k) => k.name).sort(), [...expectedKernels().keys()].sort());
  assert.ok(!mirror.requests.slice(before).some((r) => r.endsWith('mirror.list')), 'no mirror.list fetched with overrides');
});

test('the real binary resolves with --mirror, and a failed resolve exits non-zero leaving the lockfile unchanged', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'yum-cli-'));
  try {
    await mkdir(join(dir, 'kernels'));
    await copyFile(join(PROJECT_ROOT, 'kernels', 'amazonlinux2.yaml'), join(dir, 'kernels', 'amazonlinux2.yaml'));
    const args = ['resolve', 'amazonlinux2'];
    for (const spec of SPECS) {
      const name = spec.path === '2/core/2.0' ? 'amzn2-core' : `amzn2extra-${spec.path.split('/')[2]}`;
      args.push('--mirror', `${name}=${mirror.url}/${spec.path}/$basearch/${repoHash(spec.path, 'all')}`);
    }
    const ok = await runCli(args, { cwd: dir, timeoutMs: 60_000 });
    assert.equal(ok.code, 0, ok.stderr);
    const lockPath = join(dir, 'kernels', 'amazonlinux2.lock.yaml');
    const written = await readFile(lockPath, 'utf8');
    const lock = readLockfileText(written, lockPath);
    assert.deepEqual(lock.kernels.map((k: KernelDescriptor) => k.name).sort(), [...expectedKernels().keys()].sort());

    // The core primary now fails on the server: the resolve must fail and keep the old lockfile.
    const core = repos.find((r) => r.path === '2/core/2.0' && r.arch === 'x86_64')!;
    mirror.faults.set(`${core.base}${core.primaryHref}`, { kind: 'status', status: 404 });
    try {
      const failed = await runCli(args, { cwd: dir, timeoutMs: 60_000 });
      assert.notEqual(failed.code, 0);
      assert.match(failed.stderr, /HTTP 404/);
      assert.ok(failed.stderr.includes(`${mirror.url}/${core.base}${core.primaryHref}`), failed.stderr);
      assert.equal(await readFile(lockPath, 'utf8'), written);
    } finally {
      mirror.faults.delete(`${core.base}${core.primaryHref}`);
    }

    const help = await runCli(['resolve', '--help'], { cwd: dir, timeoutMs: 60_000 });
    assert.match(help.stdout, /base URL/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the base depth of the fixture matches Amazon Linux (hrefs climb five folders from core)', () => {
  const core = repos.find((r) => r.path === '2/core/2.0')!;
  assert.equal(depthOf(core.base), 5);
  assert.ok(core.packages[0]!.href.startsWith('../../../../../blobstore/'));
});

test('the record filter hands saxes the same bytes and lines whatever the chunk sizes', () => {
  const depth = 5;
  const packages = [
    ...Array.from({ length: 200 }, (_, i) => fillerPackage(i, 'x86_64', depth)),
    ...kernelBuild('4.14.232', '176.381.amzn2', 'x86_64', depth),
    ...Array.from({ length: 200 }, (_, i) => fillerPackage(1000 + i, 'x86_64', depth)),
    ...kernelBuild('4.14.233', '176.382.amzn2', 'x86_64', depth),
    ...Array.from({ length: 100 }, (_, i) => fillerPackage(2000 + i, 'x86_64', depth)),
  ];
  const doc = Buffer.from(renderPrimary(packages));
  assert.ok(doc.length > 4 * 131_072, `a document of several large pieces (${doc.length} bytes)`);
  const docText = doc.toString();
  const wanted = new Set(['kernel', 'kernel-devel']);
  let reference: string | undefined;
  // Under 64 KiB, pieces are gathered to 64 KiB first; above it, each piece meets the undecided tail of the one before.
  for (const size of [1, 3, 9, 10, 100, 4096, 65_537, 70_000, 90_001, 131_072, doc.length]) {
    const pieces: string[] = [];
    let cursor = 0;
    const filter = new PackageRecordFilter(
      (n) => wanted.has(n),
      (bytes, line) => {
        const text = bytes.toString();
        pieces.push(text);
        // Pieces come in document order; each whole record starts on the line the filter says
        // (short pieces, such as the newline between records, cannot be placed by searching).
        if (!text.startsWith('<package')) return;
        const at = docText.indexOf(text, cursor);
        assert.ok(at >= 0, `chunk size ${size}: a piece that is not in the document`);
        cursor = at + text.length;
        assert.equal(line, docText.slice(0, at).split('\n').length, `chunk size ${size}: line of the piece at offset ${at}`);
      },
    );
    for (let o = 0; o < doc.length; o += size) filter.write(doc.subarray(o, o + size));
    filter.end();
    const seen = pieces.join('');
    assert.equal(filter.skipped, packages.filter((p) => !wanted.has(p.name)).length, `chunk size ${size}`);
    for (const p of packages.filter((x) => wanted.has(x.name)))
      assert.ok(seen.includes(renderPackage(p)), `chunk size ${size}: ${p.name} reaches saxes whole`);
    assert.ok(seen.startsWith('<?xml') && seen.trimEnd().endsWith('</metadata>'));
    reference ??= seen;
    assert.equal(seen, reference, `chunk size ${size} gives the same view`);
  }
});

/** Resolve a one-repository definition whose primary.xml is `xml`. */
async function resolvePrimaryXml(xml: string): Promise<string[]> {
  const dir = await mkdtemp(join(tmpdir(), 'yum-xml-'));
  try {
    const base = `xml/${Math.random().toString(36).slice(2)}/`;
    await writeYumRepository(root, base, [], { primaryXml: xml, blobstore: false });
    const file = join(dir, 'xml.yaml');
    await writeFile(
      file,
      yumDefinitionYaml({ id: 'xml', packageRoot: 'host', repos: [{ name: 'core', mirrors: [`${mirror.url}/${base}`] }] }),
    );
    const lock = await resolveSource(await loadSourceDefinition(file, dir), { http: HTTP });
    return lock.kernels.map((k) => k.release).sort();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('XML the record filter cannot skip safely is parsed whole by saxes, with the same answer a full parse gives', async () => {
  const depth = 2;
  const filler = (i: number) => renderPackage(fillerPackage(i, 'x86_64', depth));
  const kernel = (v: string) => renderPackage(blobstorePackage('kernel-devel', v, '1.amzn2', 'x86_64', depth));
  const doc = (body: string, count: number) =>
    `<?xml version="1.0" encoding="UTF-8"?>\n<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="${count}">\n${body}</metadata>\n`;

  // A comment between records, and one inside a record that hides a fake kernel.
  assert.deepEqual(
    await resolvePrimaryXml(
      doc(
        filler(1) +
          '<!-- generated -->\n' +
          kernel('5.10.1') +
          filler(2).replace('<url>', '<!-- </package><package><name>kernel-devel</name> --><url>') +
          kernel('5.10.2'),
        4,
      ),
    ),
    ['5.10.1-1.amzn2.x86_64', '5.10.2-1.amzn2.x86_64'],
  );
  // CDATA in an unwanted record's description that looks like a kernel record: text, not a package.
  const fake = kernel('6.6.6').trimEnd();
  assert.deepEqual(
    await resolvePrimaryXml(
      doc(filler(1).replace('<description>', `<description><![CDATA[</package>${fake}<package>]]>`) + kernel('5.10.3'), 2),
    ),
    ['5.10.3-1.amzn2.x86_64'],
  );
  // An end tag with a space before '>' ends an unwanted record; the kernel after it is still found.
  assert.deepEqual(await resolvePrimaryXml(doc(filler(1).replace('</package>', '</package >') + kernel('5.10.4'), 2)), [
    '5.10.4-1.amzn2.x86_64',
  ]);
  // A name written with a character reference is decoded as XML says before it is matched.
  assert.deepEqual(
    await resolvePrimaryXml(doc(filler(1) + kernel('5.10.5').replace('<name>kernel-devel</name>', '<name>kernel&#45;devel</name>'), 2)),
    ['5.10.5-1.amzn2.x86_64'],
  );
});

/** A URL on 127.0.0.1 where nothing listens (a server started and closed). */
async function closedPortUrl(): Promise<string> {
  const m = await startMirror();
  const url = m.url;
  await m.close();
  return url;
}
