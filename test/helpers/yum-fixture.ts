import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { sha256Hex } from '../../src/util/hash.js';

// A yum repository written by the tests, in the shape Amazon Linux 2 serves:
// `<repo>/<arch>/mirror.list` names a base URL `<repo>/<arch>/<hash>/`, the
// base holds `repodata/repomd.xml` and `repodata/<sha256>-primary.xml.<ext>`,
// and the packages live in a shared `/blobstore/<sha256>/` that the location
// hrefs reach by climbing out of the base (`../../../../../blobstore/...`).
// Compression is done by the real gzip, xz and zstd commands.

export type FixtureCompression = 'gz' | 'xz' | 'zst' | 'none';

export interface FixturePackage {
  name: string;
  arch: string;
  epoch?: string;
  version: string;
  release: string;
  /** `<location href>`; defaults to the blobstore path seen from a base `depth` folders deep. */
  href: string;
  sha256: string;
  size: number;
  checksumType?: string;
  /** Raw XML put inside `<format>` (provides, requires, files). */
  format?: string;
}

const xmlEscape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Bytes that stand in for an RPM file: their sha256 and size are what primary.xml records. */
export function fakeRpmBytes(name: string, version: string, release: string, arch: string): Buffer {
  return Buffer.from(`fake rpm ${name}-${version}-${release}.${arch}\n`);
}

export function rpmFileName(p: Pick<FixturePackage, 'name' | 'version' | 'release' | 'arch'>): string {
  return `${p.name}-${p.version}-${p.release}.${p.arch}.rpm`;
}

/** A package whose file sits in the blobstore, reached from a base URL `depth` folders below the host root. */
export function blobstorePackage(
  name: string,
  version: string,
  release: string,
  arch: string,
  depth: number,
  extra: Partial<FixturePackage> = {},
): FixturePackage {
  const bytes = fakeRpmBytes(name, version, release, arch);
  const sha256 = sha256Hex(bytes);
  return {
    name,
    arch,
    version,
    release,
    href: `${'../'.repeat(depth)}blobstore/${sha256}/${rpmFileName({ name, version, release, arch })}`,
    sha256,
    size: bytes.length,
    ...extra,
  };
}

/** The `kernel` and `kernel-devel` packages of one kernel build. */
export function kernelBuild(version: string, release: string, arch: string, depth: number): FixturePackage[] {
  return ['kernel', 'kernel-devel', 'kernel-headers', 'kernel-tools'].map((name) =>
    blobstorePackage(name, version, release, arch, depth, { format: kernelFormat(name, version, release) }),
  );
}

function kernelFormat(name: string, version: string, release: string): string {
  return (
    `      <rpm:license>GPLv2 and Redistributable, no modification permitted</rpm:license>\n` +
    `      <rpm:vendor>Amazon Linux</rpm:vendor>\n` +
    `      <rpm:group>System Environment/Kernel</rpm:group>\n` +
    `      <rpm:buildhost>build.amazon.com</rpm:buildhost>\n` +
    `      <rpm:sourcerpm>kernel-${version}-${release}.src.rpm</rpm:sourcerpm>\n` +
    `      <rpm:header-range start="4504" end="231504"/>\n` +
    `      <rpm:provides>\n` +
    `        <rpm:entry name="${name}" flags="EQ" epoch="0" ver="${version}" rel="${release}"/>\n` +
    `        <rpm:entry name="${name}-uname-r" flags="EQ" epoch="0" ver="${version}-${release}.x86_64"/>\n` +
    `      </rpm:provides>\n` +
    `      <rpm:requires>\n` +
    `        <rpm:entry name="/bin/sh" pre="1"/>\n` +
    `        <rpm:entry name="findutils"/>\n` +
    `        <rpm:entry name="perl"/>\n` +
    `      </rpm:requires>\n`
  );
}

/** One `<package>` element as createrepo writes it. */
export function renderPackage(p: FixturePackage): string {
  return (
    `<package type="rpm">\n` +
    `  <name>${xmlEscape(p.name)}</name>\n` +
    `  <arch>${xmlEscape(p.arch)}</arch>\n` +
    `  <version epoch="${xmlEscape(p.epoch ?? '0')}" ver="${xmlEscape(p.version)}" rel="${xmlEscape(p.release)}"/>\n` +
    `  <checksum type="${xmlEscape(p.checksumType ?? 'sha256')}" pkgid="YES">${xmlEscape(p.sha256)}</checksum>\n` +
    `  <summary>The ${xmlEscape(p.name)} package &amp; friends</summary>\n` +
    `  <description>Package ${xmlEscape(p.name)} for the tests.\nIt has a second line &lt;with markup-like text&gt;.</description>\n` +
    `  <packager>Amazon Linux</packager>\n` +
    `  <url>http://www.kernel.org/</url>\n` +
    `  <time file="1620160000" build="1620150000"/>\n` +
    `  <size package="${p.size}" installed="${p.size * 3}" archive="${p.size * 3 + 412}"/>\n` +
    `  <location href="${xmlEscape(p.href)}"/>\n` +
    `  <format>\n${p.format ?? ''}  </format>\n` +
    `</package>\n`
  );
}

export function primaryHeader(count: number): string {
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\n` +
    `<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="${count}">\n`
  );
}
export const PRIMARY_FOOTER = '</metadata>\n';

export function renderPrimary(packages: FixturePackage[]): string {
  return primaryHeader(packages.length) + packages.map(renderPackage).join('') + PRIMARY_FOOTER;
}

/** Compress with the real command (gzip, xz, zstd) and return the bytes. */
export function compress(data: Buffer, kind: FixtureCompression): Promise<Buffer> {
  if (kind === 'none') return Promise.resolve(data);
  const [cmd, args] = { gz: ['gzip', ['-n', '-c']], xz: ['xz', ['-c', '-T1']], zst: ['zstd', ['-q', '-c']] }[kind] as [string, string[]];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`${cmd} exited ${code}: ${err}`))));
    // A compressor that dies early closes its input: the exit status above reports it, not an EPIPE here.
    child.stdin.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE') reject(e);
    });
    child.stdin.end(data);
  });
}

export const EXTENSION: Record<FixtureCompression, string> = { gz: '.gz', xz: '.xz', zst: '.zst', none: '' };

export interface RepomdEntry {
  type: string;
  href: string;
  checksum: string;
  checksumType?: string;
  size?: number;
  openChecksum?: string;
  openSize?: number;
}

export function renderRepomd(entries: RepomdEntry[]): string {
  const data = entries.map(
    (e) =>
      `  <data type="${e.type}">\n` +
      `    <checksum type="${e.checksumType ?? 'sha256'}">${e.checksum}</checksum>\n` +
      (e.openChecksum ? `    <open-checksum type="sha256">${e.openChecksum}</open-checksum>\n` : '') +
      `    <location href="${xmlEscape(e.href)}"/>\n` +
      `    <timestamp>1620160000</timestamp>\n` +
      (e.size !== undefined ? `    <size>${e.size}</size>\n` : '') +
      (e.openSize !== undefined ? `    <open-size>${e.openSize}</open-size>\n` : '') +
      `  </data>\n`,
  );
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\n` +
    `<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">\n` +
    `  <revision>1620160000</revision>\n` +
    data.join('') +
    `</repomd>\n`
  );
}

export interface WrittenRepository {
  /** Folder of the repository (holding repodata/), relative to the served root, with a trailing slash. */
  base: string;
  primaryHref: string;
  /** The compressed primary file's bytes (what repomd's checksum covers). */
  primary: Buffer;
  primaryXml: Buffer;
  repomd: string;
}

/**
 * Write `repodata/repomd.xml` and the primary metadata under `root/base`, plus
 * the fake package files in `root/blobstore/` when `blobstore` is set.
 * `primaryXml` overrides the rendered document (for malformed input).
 */
export async function writeYumRepository(
  root: string,
  base: string,
  packages: FixturePackage[],
  opts: {
    compression?: FixtureCompression;
    primaryXml?: string | Buffer;
    repomd?: (e: RepomdEntry) => RepomdEntry[];
    blobstore?: boolean;
  } = {},
): Promise<WrittenRepository> {
  const kind = opts.compression ?? 'gz';
  const primaryXml = Buffer.from(opts.primaryXml ?? renderPrimary(packages));
  const primary = await compress(primaryXml, kind);
  const sha = sha256Hex(primary);
  const primaryHref = `repodata/${sha}-primary.xml${EXTENSION[kind]}`;
  const entry: RepomdEntry = {
    type: 'primary',
    href: primaryHref,
    checksum: sha,
    size: primary.length,
    openChecksum: sha256Hex(primaryXml),
    openSize: primaryXml.length,
  };
  // Real repositories list more than primary; the resolver must pick the right entry.
  const others: RepomdEntry[] = [
    { type: 'filelists', href: `repodata/${'1'.repeat(64)}-filelists.xml.gz`, checksum: '1'.repeat(64), size: 10 },
    { type: 'primary_db', href: `repodata/${'2'.repeat(64)}-primary.sqlite.bz2`, checksum: '2'.repeat(64), size: 10 },
  ];
  const entries = opts.repomd ? opts.repomd(entry) : [others[0]!, entry, others[1]!];
  const repomd = renderRepomd(entries);
  const dir = join(root, base);
  await mkdir(join(dir, 'repodata'), { recursive: true });
  await writeFile(join(dir, primaryHref), primary);
  await writeFile(join(dir, 'repodata', 'repomd.xml'), repomd);
  if (opts.blobstore !== false) {
    for (const p of packages) {
      const m = /blobstore\/([0-9a-f]{64})\/([^/]+)$/.exec(p.href);
      if (!m) continue;
      const file = join(root, 'blobstore', m[1]!, m[2]!);
      await mkdir(dirname(file), { recursive: true });
      await writeFile(file, fakeRpmBytes(p.name, p.version, p.release, p.arch));
    }
  }
  return { base: base.endsWith('/') ? base : `${base}/`, primaryHref, primary, primaryXml, repomd };
}

export async function writeMirrorList(root: string, path: string, lines: string[]): Promise<void> {
  await mkdir(dirname(join(root, path)), { recursive: true });
  await writeFile(join(root, path), `${lines.join('\n')}\n`);
}

/** Folders from the host root to a base such as `2/core/2.0/x86_64/<hash>/`. */
export function depthOf(base: string): number {
  return base.split('/').filter(Boolean).length;
}

/** The hash folder Amazon Linux puts under each repository and arch (fixed per name, so runs are reproducible). */
export function repoHash(repo: string, arch: string): string {
  return sha256Hex(`${repo}/${arch}`);
}

/**
 * An ordinary (non-kernel) package of realistic size: about twenty provides
 * and requires entries and a few primary files, as in a distribution's primary.xml.
 */
export function fillerPackage(i: number, arch: string, depth: number): FixturePackage {
  const name = `lib${['ssl', 'xml', 'curl', 'perl', 'py', 'gtk', 'ruby'][i % 7]}-module${i}`;
  const version = `${1 + (i % 9)}.${i % 31}.${i % 7}`;
  const release = `${1 + (i % 5)}.amzn2.0.${i % 3}`;
  const entries = (tag: string, n: number) =>
    Array.from(
      { length: n },
      (_, j) => `        <rpm:entry name="${tag}${j}(${name})(64bit)" flags="GE" epoch="0" ver="${version}" rel="${release}"/>\n`,
    ).join('');
  const files = Array.from({ length: 1 + (i % 4) }, (_, j) => `      <file>/usr/bin/${name}-tool${j}</file>\n`).join('');
  return blobstorePackage(name, version, release, i % 11 === 0 ? 'noarch' : arch, depth, {
    format:
      `      <rpm:license>MIT and BSD</rpm:license>\n` +
      `      <rpm:vendor>Amazon Linux</rpm:vendor>\n` +
      `      <rpm:group>System Environment/Libraries</rpm:group>\n` +
      `      <rpm:buildhost>build.amazon.com</rpm:buildhost>\n` +
      `      <rpm:sourcerpm>${name}-${version}-${release}.src.rpm</rpm:sourcerpm>\n` +
      `      <rpm:header-range start="4504" end="${20000 + i}"/>\n` +
      `      <rpm:provides>\n${entries('lib', 8 + (i % 8))}      </rpm:provides>\n` +
      `      <rpm:requires>\n${entries('req', 6 + (i % 10))}      </rpm:requires>\n` +
      files,
  });
}

export interface AmazonLinuxRepoSpec {
  /** Repository folder under the host root, as Amazon Linux names it: `2/core/2.0`, `2/extras/kernel-5.10/latest`. */
  path: string;
  compression: FixtureCompression;
  /** The packages of one architecture; `depth` is how far the base is below the host root (for blobstore hrefs). */
  packages(arch: string, depth: number): FixturePackage[];
}

export interface WrittenAmazonLinuxRepo extends WrittenRepository {
  path: string;
  arch: string;
  packages: FixturePackage[];
}

/**
 * Lay out repositories as Amazon Linux 2 serves them under `root`, for a
 * server reachable at `mirrorUrl`: `<path>/<arch>/mirror.list` holding
 * `<mirrorUrl>/<path>/$basearch/<hash>` (yum substitutes the arch), the
 * repository in that folder, and the packages in `/blobstore/`.
 */
export async function writeAmazonLinuxMirror(
  root: string,
  mirrorUrl: string,
  specs: AmazonLinuxRepoSpec[],
  arches: string[],
): Promise<WrittenAmazonLinuxRepo[]> {
  const out: WrittenAmazonLinuxRepo[] = [];
  for (const spec of specs) {
    const hash = repoHash(spec.path, 'all');
    for (const arch of arches) {
      const base = `${spec.path}/${arch}/${hash}/`;
      const packages = spec.packages(arch, depthOf(base));
      const written = await writeYumRepository(root, base, packages, { compression: spec.compression });
      await writeMirrorList(root, `${spec.path}/${arch}/mirror.list`, [`${mirrorUrl}/${spec.path}/$basearch/${hash}`]);
      out.push({ ...written, path: spec.path, arch, packages });
    }
  }
  return out;
}

/** A yum source definition's YAML for tests: one repository per entry of `repos`. */
export function yumDefinitionYaml(opts: {
  id: string;
  repos: { name: string; mirrors: string[]; mirrorList?: boolean }[];
  architectures?: string[];
  packageRoot?: 'repository' | 'host';
  kernel?: string[];
  minimumKernel?: string;
}): string {
  const repos = opts.repos
    .map(
      (r) =>
        `  - name: ${r.name}\n` +
        (r.mirrorList ? '    mirrorList: true\n' : '') +
        `    mirrors:\n${r.mirrors.map((m) => `      - ${m}\n`).join('')}`,
    )
    .join('');
  return (
    `id: ${opts.id}\n` +
    `type: yum\n` +
    `targetId: ${opts.id}\n` +
    `architectures: [${(opts.architectures ?? ['x86_64']).join(', ')}]\n` +
    `minimumKernel: "${opts.minimumKernel ?? '4.14'}"\n` +
    `osRelease:\n  ID: amzn\n  VERSION_ID: "2"\n` +
    `repositories:\n${repos}` +
    `yum:\n` +
    `  devel: [kernel-devel]\n` +
    (opts.kernel ? `  kernel: [${opts.kernel.join(', ')}]\n` : '') +
    `  unameVersion: '#1 SMP {version}-{rpmRelease}'\n` +
    `  kernelVersion: '1'\n` +
    (opts.packageRoot ? `  packageRoot: ${opts.packageRoot}\n` : '')
  );
}
