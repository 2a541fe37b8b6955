import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

// Builds a small apt repository on disk, as a Debian mirror lays it out:
// `dists/<suite>/Release` (and an unsigned `InRelease` with the same text),
// `dists/<suite>/<component>/binary-<arch>/Packages{,.gz,.xz}` compressed with
// the real `gzip` and `xz` commands, and a pool of tiny fake .deb files whose
// sizes and SHA256s the stanzas carry. Serve the directory with
// test/helpers/server.ts (`startMirror({ root })`).

export interface FixturePackage {
  name: string;
  version: string;
  architecture?: string;
  depends?: string;
  /** Default: `pool/main/<first letter>/<name>/<name>_<version without epoch>_<arch>.deb`. */
  filename?: string;
  /** Contents of the pool file (default: a short text naming the package). */
  content?: string;
  /** Overrides of the computed fields (to make a stanza lie), or extra fields. */
  fields?: Record<string, string>;
}

/** A stanza written verbatim (for malformed input); the text should not end with an empty line. */
export interface RawStanzaText {
  raw: string;
}

export type Format = 'xz' | 'gz' | 'plain';

export interface FixtureSuite {
  suite: string;
  codename?: string;
  /** Packages per component (`main` by default) for `arch`. */
  components: Record<string, (FixturePackage | RawStanzaText)[]>;
  arch?: string;
  /** Index files written to disk (default: all three). */
  formats?: Format[];
  /** Index files the Release lists (default: the written ones; list more to make a mirror miss one). */
  listed?: Format[];
  /** Change an index file's bytes after it is built (the Release lists the changed bytes). */
  transform?: (path: string, data: Buffer) => Buffer;
  /** Write no InRelease (only Release). */
  noInRelease?: boolean;
}

export interface BuiltPackage extends FixturePackage {
  filename: string;
  sha256: string;
  size: number;
  repositoryPath: string;
}

export interface BuiltSuite {
  suite: string;
  /** The text of the Release file. */
  release: string;
  /** Index path (relative to the suite's root) -> bytes, as written. */
  indexes: Map<string, Buffer>;
  packages: BuiltPackage[];
}

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

function compress(format: Format, data: Buffer): Buffer {
  if (format === 'plain') return data;
  const [cmd, args] = format === 'gz' ? ['gzip', ['-9', '-n', '-c']] : ['xz', ['-c', '-T1', '-6']];
  const r = spawnSync(cmd, args as string[], { input: data, maxBuffer: 1024 * 1024 * 1024, timeout: 120_000 });
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr?.toString() ?? r.error?.message}`);
  return r.stdout;
}

function defaultFilename(p: FixturePackage, arch: string): string {
  const letter = p.name.startsWith('lib') ? p.name.slice(0, 4) : p.name[0]!;
  return `pool/main/${letter}/${p.name}/${p.name}_${p.version.replace(/^\d+:/, '')}_${p.architecture ?? arch}.deb`;
}

/** The text of one stanza (no trailing empty line). */
export function stanzaText(p: FixturePackage & { filename: string; sha256: string; size: number }, arch: string): string {
  const fields: [string, string][] = [
    ['Package', p.name],
    ['Source', 'linux'],
    ['Version', p.version],
    ['Installed-Size', '1234'],
    ['Maintainer', 'Debian Kernel Team <debian-kernel@lists.debian.org>'],
    ['Architecture', p.architecture ?? arch],
  ];
  if (p.depends) fields.push(['Depends', p.depends]);
  fields.push(
    ['Description', `fake package ${p.name}\n This is a test fixture.\n .\n It has a multi-line description: with colons.`],
    ['Section', 'kernel'],
    ['Priority', 'optional'],
    ['Filename', p.filename],
    ['Size', String(p.size)],
    ['SHA256', p.sha256],
  );
  const map = new Map(fields);
  for (const [k, v] of Object.entries(p.fields ?? {})) map.set(k, v);
  return [...map].map(([k, v]) => `${k}: ${v}`).join('\n');
}

/** Write one suite under `root/dists/<suite>/` and its pool under `root/pool/`. */
export async function writeAptSuite(root: string, suite: FixtureSuite): Promise<BuiltSuite> {
  const arch = suite.arch ?? 'amd64';
  const formats = suite.formats ?? ['xz', 'gz', 'plain'];
  const listed = suite.listed ?? formats;
  const dist = join(root, 'dists', suite.suite);
  const releaseLines: string[] = [];
  const indexes = new Map<string, Buffer>();
  const built: BuiltPackage[] = [];
  for (const [component, entries] of Object.entries(suite.components)) {
    const stanzas: string[] = [];
    for (const e of entries) {
      if ('raw' in e) {
        stanzas.push(e.raw);
        continue;
      }
      const filename = e.filename ?? defaultFilename(e, arch);
      const content = Buffer.from(e.content ?? `fake deb ${e.name} ${e.version}\n`);
      const pkg: BuiltPackage = { ...e, filename, sha256: sha256(content), size: content.length, repositoryPath: filename };
      if (!filename.includes('..') && !filename.startsWith('/')) {
        await mkdir(dirname(join(root, filename)), { recursive: true });
        await writeFile(join(root, filename), content);
      }
      built.push(pkg);
      stanzas.push(stanzaText(pkg, arch));
    }
    const plain = Buffer.from(stanzas.length ? `${stanzas.join('\n\n')}\n` : '');
    for (const format of ['plain', 'gz', 'xz'] as Format[]) {
      const rel = `${component}/binary-${arch}/Packages${format === 'plain' ? '' : `.${format}`}`;
      let data = compress(format, plain);
      if (suite.transform) data = suite.transform(rel, data);
      if (formats.includes(format)) {
        await mkdir(join(dist, dirname(rel)), { recursive: true });
        await writeFile(join(dist, rel), data);
        indexes.set(rel, data);
      }
      if (listed.includes(format)) releaseLines.push(` ${sha256(data)} ${String(data.length).padStart(8)} ${rel}`);
    }
  }
  const release = `${[
    'Origin: Falco-Probes-Test',
    'Label: Falco-Probes-Test',
    `Suite: ${suite.suite}`,
    `Codename: ${suite.codename ?? suite.suite}`,
    'Date: Sat, 01 Jan 2000 00:00:00 UTC',
    `Architectures: ${arch}`,
    `Components: ${Object.keys(suite.components).join(' ')}`,
    'Description: a test repository',
    'MD5Sum:',
    ...releaseLines.map((l) => l.replace(/^ [0-9a-f]{64}/, ` ${'0'.repeat(32)}`)),
    'SHA256:',
    ...releaseLines,
  ].join('\n')}\n`;
  await mkdir(dist, { recursive: true });
  await writeFile(join(dist, 'Release'), release);
  if (!suite.noInRelease) await writeFile(join(dist, 'InRelease'), release);
  return { suite: suite.suite, release, indexes, packages: built };
}

// A Debian-like pair of suites: what the tests resolve with kernels/debian12.yaml's rules.

const KBUILD_DEPS = 'libc6 (>= 2.34), libelf1 (>= 0.142)';

function headersSet(
  abi: string,
  version: string,
  kbuild: string,
  opts: { rt?: boolean; imageUnsignedOnly?: boolean; noImage?: boolean } = {},
): FixturePackage[] {
  const out: FixturePackage[] = [
    { name: `linux-headers-${abi}-common`, version, architecture: 'all' },
    {
      name: `linux-headers-${abi}-amd64`,
      version,
      depends: `linux-headers-${abi}-common (= ${version}), ${kbuild}, linux-compiler-gcc-12-x86`,
    },
    {
      name: `linux-headers-${abi}-cloud-amd64`,
      version,
      depends: `linux-headers-${abi}-common (= ${version}), ${kbuild}, linux-compiler-gcc-12-x86`,
    },
  ];
  if (opts.rt !== false) {
    out.push(
      { name: `linux-headers-${abi}-common-rt`, version, architecture: 'all' },
      {
        name: `linux-headers-${abi}-rt-amd64`,
        version,
        depends: `linux-headers-${abi}-common-rt (= ${version}), ${kbuild}, linux-compiler-gcc-12-x86`,
      },
    );
  }
  if (!opts.noImage) {
    for (const f of ['amd64', 'cloud-amd64', ...(opts.rt !== false ? ['rt-amd64'] : [])]) {
      out.push({
        name: `linux-image-${abi}-${f}-unsigned`,
        version,
        depends: 'kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool',
      });
      if (!opts.imageUnsignedOnly) out.push({ name: `linux-image-${abi}-${f}`, version, depends: 'kmod, linux-base (>= 4.3~)' });
    }
  }
  return out;
}

export function fillerPackages(n: number): FixturePackage[] {
  const out: FixturePackage[] = [];
  for (let i = 0; i < n; i++) out.push({ name: `libfiller${i}`, version: `1.${i}-${(i % 3) + 1}`, depends: 'libc6 (>= 2.34)' });
  return out;
}

/** bookworm: ABI 6.1.0-10 (its kbuild is 6.1.38-1 here). bookworm-security: 6.1.0-11 and 6.1.0-12, a newer kbuild-6.1, and a 6.12 kernel whose kbuild lives in bookworm. */
export function debianLikeSuites(): FixtureSuite[] {
  return [
    {
      suite: 'bookworm',
      components: {
        main: [
          ...fillerPackages(5),
          ...headersSet('6.1.0-10', '6.1.38-1', 'linux-kbuild-6.1 (>= 6.1.38-1)'),
          { name: 'linux-kbuild-6.1', version: '6.1.38-1', depends: KBUILD_DEPS },
          // The 6.12 backport's kbuild lives here, its headers in bookworm-security.
          { name: 'linux-kbuild-6.12.30+deb12', version: '6.12.30-1~deb12u1', depends: KBUILD_DEPS },
          // Meta packages that the headers patterns must not take for kernels.
          { name: 'linux-headers-amd64', version: '6.1.38-1', depends: 'linux-headers-6.1.0-10-amd64 (= 6.1.38-1)' },
          // Too old for minimumKernel 4.14: resolved, then left out of the lockfile.
          ...headersSet('4.9.0-13', '4.9.228-1', 'linux-kbuild-4.9 (>= 4.9.228)', { rt: false, noImage: true }),
          { name: 'linux-kbuild-4.9', version: '4.9.228-1', depends: KBUILD_DEPS },
        ],
      },
    },
    {
      suite: 'bookworm-security',
      components: {
        main: [
          ...fillerPackages(3),
          ...headersSet('6.1.0-11', '6.1.40-1', 'linux-kbuild-6.1 (>= 6.1.40-1)', { imageUnsignedOnly: true }),
          // kbuild-6.1 moved on: no 6.1.44-1 headers ABI is listed, but 6.1.0-11 must take this one.
          { name: 'linux-kbuild-6.1', version: '6.1.44-1', depends: KBUILD_DEPS },
          ...headersSet('6.1.0-12', '6.1.44-1', 'linux-kbuild-6.1 (>= 6.1.44-1)', { noImage: true }),
          ...headersSet('6.12.30+deb12', '6.12.30-1~deb12u1', 'linux-kbuild-6.12.30+deb12'),
        ],
      },
    },
  ];
}

const DEBIAN_LIKE_HEADERS: Record<string, string> = {
  amd64: `    - flavour: amd64
      pattern: '^linux-headers-(?<release>[0-9]+\\.[0-9]+(?:\\.[0-9]+)?(?:-[0-9]+|\\+deb[0-9]+)-amd64)$'
`,
  'cloud-amd64': `    - flavour: cloud-amd64
      pattern: '^linux-headers-(?<release>[0-9]+\\.[0-9]+(?:\\.[0-9]+)?(?:-[0-9]+|\\+deb[0-9]+)-cloud-amd64)$'
`,
  'rt-amd64': `    - flavour: rt-amd64
      pattern: '^linux-headers-(?<release>[0-9]+\\.[0-9]+(?:\\.[0-9]+)?(?:-[0-9]+|\\+deb[0-9]+)-rt-amd64)$'
      unameVersion: '#1 SMP PREEMPT_RT Debian {version}'
`,
};

/**
 * kernels/debian12.yaml's rules with the fixture's repositories (no keyring: the fixture is unsigned).
 * `flavours` keeps only those header rules (default: all three), for an index that holds fewer flavours:
 * a rule that matches nothing is an error.
 */
export function debianLikeDefinition(mirrors: Record<string, string> = {}, opts: { flavours?: readonly string[] } = {}): string {
  const mirror = (name: string) => mirrors[name] ?? `http://127.0.0.1:9/${name}`;
  const flavours = opts.flavours ?? Object.keys(DEBIAN_LIKE_HEADERS);
  const headers = flavours.map((f) => {
    const rule = DEBIAN_LIKE_HEADERS[f];
    if (!rule) throw new Error(`debianLikeDefinition: no header rule for flavour ${f}`);
    return rule;
  });
  return `# A test copy of kernels/debian12.yaml's rules.
id: debian12
type: apt
targetId: debian
architectures: [x86_64]
minimumKernel: "4.14"
osRelease:
  ID: debian
  VERSION_ID: "12"
repositories:
  - name: bookworm
    mirrors: [${mirror('bookworm')}]
    suite: bookworm
    components: [main]
  - name: bookworm-security
    mirrors: [${mirror('bookworm-security')}]
    suite: bookworm-security
    components: [main]
apt:
  headers:
${headers.join('')}  follow:
    - '^linux-headers-.*-common(?:-rt)?$'
    - '^linux-kbuild-.*$'
  followRoles: [common, kbuild]
  unameVersion: '#1 SMP PREEMPT_DYNAMIC Debian {version}'
  kernelVersion: '1'
  image:
    - 'linux-image-{release} | linux-image-{release}-unsigned'
`;
}
