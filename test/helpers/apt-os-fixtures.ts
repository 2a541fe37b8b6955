import { join } from 'node:path';
import { fillerPackages, type FixturePackage } from './apt-fixture.js';
import { writeAptRepository, type TestSigner } from './os-fixtures.js';

// Fixture archives in the shape of Ubuntu's and Debian 13's, for the shipped
// definitions (kernels/ubuntu-*.yaml, kernels/debian13.yaml). Names, pool
// folders, Depends and versions follow the real archives:
//
// Ubuntu: a kernel of flavour F and ABI A from source package S (linux,
// linux-hwe-6.2, linux-aws, linux-aws-6.2, ...) is
//   linux-headers-A-F       pool/main/l/S/         Depends: <S>-headers-A (or linux-headers-A for S = linux), libc6, ...
//   <S>-headers-A           pool/main/l/S/         Architecture: all
//   linux-image-A-F         pool/main/l/linux-signed[-...]/  (signed; amd64)
//   linux-image-unsigned-A-F, linux-modules-A-F, linux-tools-A-F, linux-buildinfo-A-F
// and metapackages (linux-headers-generic, linux-headers-aws, ...) that are no kernels.

export interface UbuntuKernel {
  /** `5.15.0-76` */
  abi: string;
  flavour: string;
  /** Package version: `5.15.0-76.83`, HWE `6.2.0-26.26~22.04.1`. */
  version: string;
  /** Source package = pool folder: `linux`, `linux-hwe-6.2`, `linux-aws`, `linux-aws-6.2`. */
  source: string;
  arches: string[];
  /** Signed image on amd64 (Ubuntu signs amd64 and arm64 generic images; leave out to have only the unsigned one). */
  signed?: boolean;
}

const HEADERS_DEPENDS = 'libc6 (>= 2.34), libelf1 (>= 0.142), libssl3 (>= 3.0.0~~alpha1), zlib1g (>= 1:1.2.3.3)';

function pool(source: string, name: string, version: string, arch: string): string {
  return `pool/main/l/${source}/${name}_${version}_${arch}.deb`;
}

/** The shared headers package of a source package: linux-headers-A for `linux`, else `<source>-headers-A`. */
export function ubuntuCommonName(k: Pick<UbuntuKernel, 'abi' | 'source'>): string {
  return k.source === 'linux' ? `linux-headers-${k.abi}` : `${k.source}-headers-${k.abi}`;
}

/** The stanzas of one kernel for one architecture (the arch-all package included, as Ubuntu lists it in every arch's index). */
export function ubuntuKernelPackages(k: UbuntuKernel, arch: string): FixturePackage[] {
  const release = `${k.abi}-${k.flavour}`;
  const common = ubuntuCommonName(k);
  const src = { Source: `${k.source} (${k.version})` };
  const signedSource = k.source.replace(/^linux/, 'linux-signed');
  const out: FixturePackage[] = [
    {
      name: common,
      version: k.version,
      architecture: 'all',
      filename: pool(k.source, common, k.version, 'all'),
      depends: 'dpkg',
      fields: src,
    },
    {
      name: `linux-headers-${release}`,
      version: k.version,
      filename: pool(k.source, `linux-headers-${release}`, k.version, arch),
      depends: `${common}, ${HEADERS_DEPENDS}`,
      fields: src,
    },
    {
      name: `linux-image-unsigned-${release}`,
      version: k.version,
      filename: pool(k.source, `linux-image-unsigned-${release}`, k.version, arch),
      depends: `linux-modules-${release}`,
      fields: src,
    },
    {
      name: `linux-modules-${release}`,
      version: k.version,
      filename: pool(k.source, `linux-modules-${release}`, k.version, arch),
      fields: src,
    },
    {
      name: `linux-tools-${release}`,
      version: k.version,
      filename: pool(k.source, `linux-tools-${release}`, k.version, arch),
      fields: src,
    },
    {
      name: `linux-buildinfo-${release}`,
      version: k.version,
      filename: pool(k.source, `linux-buildinfo-${release}`, k.version, arch),
      fields: src,
    },
  ];
  if (k.signed !== false)
    out.push({
      name: `linux-image-${release}`,
      version: k.version,
      filename: pool(signedSource, `linux-image-${release}`, k.version, arch),
      depends: `linux-modules-${release}`,
      fields: { Source: `${signedSource} (${k.version})` },
    });
  return out;
}

/** A metapackage: `linux-headers-generic` 5.15.0.76.74 depending on the current ABI's headers. */
export function ubuntuMeta(name: string, version: string, dependsOn: string, source = 'linux-meta'): FixturePackage {
  return { name, version, filename: `pool/main/l/${source}/${name}_${version}_amd64.deb`, depends: dependsOn, fields: { Source: source } };
}

export interface UbuntuSuiteSpec {
  suite: string;
  kernels: UbuntuKernel[];
  /** Extra packages per arch (metapackages, odd cases). */
  extra?: Record<string, FixturePackage[]>;
  fillers?: number;
}

/** The packages of a suite per Debian architecture. */
export function ubuntuSuitePackages(spec: UbuntuSuiteSpec, arches: string[]): Record<string, FixturePackage[]> {
  const out: Record<string, FixturePackage[]> = {};
  for (const arch of arches) {
    out[arch] = [
      ...fillerPackages(spec.fillers ?? 20),
      ...spec.kernels.filter((k) => k.arches.includes(arch)).flatMap((k) => ubuntuKernelPackages(k, arch)),
      ...(spec.extra?.[arch] ?? []),
    ];
  }
  return out;
}

/**
 * Ubuntu 22.04 (jammy) in small: GA 5.15 kernels of the five flavours in the
 * release pocket, newer ones and HWE (6.2 generic and aws) in -updates, the
 * security pocket holding copies of some -updates kernels and one of its own,
 * arm64 on the ports archive, and the odd cases the definition must not take
 * for kernels.
 */
export function jammyFixture(fillers = 20): { archive: UbuntuSuiteSpec[]; ports: UbuntuSuiteSpec[] } {
  const both = ['amd64', 'arm64'];
  const amd = ['amd64'];
  const release: UbuntuKernel[] = [
    { abi: '5.15.0-25', flavour: 'generic', version: '5.15.0-25.25', source: 'linux', arches: both },
    { abi: '5.15.0-1004', flavour: 'aws', version: '5.15.0-1004.6', source: 'linux-aws', arches: both },
    { abi: '5.15.0-1003', flavour: 'gcp', version: '5.15.0-1003.6', source: 'linux-gcp', arches: both },
    { abi: '5.15.0-1002', flavour: 'gke', version: '5.15.0-1002.2', source: 'linux-gke', arches: amd },
    { abi: '5.15.0-1003', flavour: 'azure', version: '5.15.0-1003.4', source: 'linux-azure', arches: both },
  ];
  const updates: UbuntuKernel[] = [
    { abi: '5.15.0-76', flavour: 'generic', version: '5.15.0-76.83', source: 'linux', arches: both },
    { abi: '5.15.0-1019', flavour: 'aws', version: '5.15.0-1019.23', source: 'linux-aws', arches: both },
    // HWE: the 6.2 kernel of Ubuntu 23.04 built for 22.04; uname -v "#26~22.04.1-Ubuntu SMP ...".
    { abi: '6.2.0-26', flavour: 'generic', version: '6.2.0-26.26~22.04.1', source: 'linux-hwe-6.2', arches: both },
    { abi: '6.2.0-1009', flavour: 'aws', version: '6.2.0-1009.9~22.04.3', source: 'linux-aws-6.2', arches: amd, signed: false },
    { abi: '5.15.0-1040', flavour: 'gcp', version: '5.15.0-1040.48', source: 'linux-gcp', arches: amd },
    { abi: '5.15.0-1039', flavour: 'gke', version: '5.15.0-1039.44', source: 'linux-gke', arches: amd },
    { abi: '5.15.0-1041', flavour: 'azure', version: '5.15.0-1041.48', source: 'linux-azure', arches: both },
  ];
  const security: UbuntuKernel[] = [
    // Copies of -updates kernels (the archive publishes security fixes to both pockets).
    updates[0]!,
    updates[1]!,
    // Only in -security so far.
    { abi: '5.15.0-78', flavour: 'generic', version: '5.15.0-78.85', source: 'linux', arches: both },
  ];
  const oddities: FixturePackage[] = [
    // Metapackages: no ABI number, no kernel.
    ubuntuMeta('linux-headers-generic', '5.15.0.76.74', 'linux-headers-5.15.0-76-generic'),
    ubuntuMeta('linux-headers-aws', '5.15.0.1019.19', 'linux-headers-5.15.0-1019-aws', 'linux-meta-aws'),
    ubuntuMeta('linux-headers-generic-hwe-22.04', '6.2.0.26.26~22.04.7', 'linux-headers-6.2.0-26-generic', 'linux-meta-hwe-6.2'),
    // A flavour the definition does not build (lowlatency has its own source package).
    ...ubuntuKernelPackages(
      { abi: '5.15.0-76', flavour: 'lowlatency', version: '5.15.0-76.83', source: 'linux-lowlatency', arches: ['amd64'] },
      'amd64',
    ),
    // A gcp-named kernel from another source package (a FIPS build): not from pool/main/l/linux-gcp/, so not a gcp kernel.
    ...ubuntuKernelPackages(
      { abi: '5.15.0-1032', flavour: 'gcp', version: '5.15.0-1032.40', source: 'linux-gcp-fips', arches: ['amd64'] },
      'amd64',
    ),
  ];
  const ports64k: FixturePackage[] = ubuntuKernelPackages(
    { abi: '5.15.0-76', flavour: 'generic-64k', version: '5.15.0-76.83', source: 'linux', arches: ['arm64'] },
    'arm64',
  );
  const split = (kernels: UbuntuKernel[], arch: string) =>
    kernels.filter((k) => k.arches.includes(arch)).map((k) => ({ ...k, arches: [arch] }));
  const spec = (suite: string, kernels: UbuntuKernel[], arch: string, extra: FixturePackage[] = []): UbuntuSuiteSpec => ({
    suite,
    kernels: split(kernels, arch),
    extra: { [arch]: extra },
    fillers,
  });
  return {
    archive: [
      spec('jammy', release, 'amd64'),
      spec('jammy-updates', updates, 'amd64', oddities),
      spec('jammy-security', security, 'amd64'),
    ],
    ports: [spec('jammy', release, 'arm64'), spec('jammy-updates', updates, 'arm64', ports64k), spec('jammy-security', security, 'arm64')],
  };
}

/** Ubuntu 20.04 (focal) in small: 5.4 GA, the 5.15 HWE (generic and aws), and a kernel older than the minimum. */
export function focalFixture(fillers = 20): { archive: UbuntuSuiteSpec[]; ports: UbuntuSuiteSpec[] } {
  const both = ['amd64', 'arm64'];
  const release: UbuntuKernel[] = [
    { abi: '5.4.0-26', flavour: 'generic', version: '5.4.0-26.30', source: 'linux', arches: both },
    { abi: '5.4.0-1009', flavour: 'aws', version: '5.4.0-1009.9', source: 'linux-aws', arches: both },
    { abi: '5.4.0-1009', flavour: 'gcp', version: '5.4.0-1009.9', source: 'linux-gcp', arches: ['amd64'] },
    { abi: '5.4.0-1010', flavour: 'azure', version: '5.4.0-1010.10', source: 'linux-azure', arches: ['amd64'] },
    // Not in the real archive: a kernel older than minimumKernel 4.14, dropped from the lockfile.
    { abi: '4.4.0-210', flavour: 'generic', version: '4.4.0-210.242', source: 'linux', arches: ['amd64'] },
  ];
  const updates: UbuntuKernel[] = [
    { abi: '5.4.0-150', flavour: 'generic', version: '5.4.0-150.167', source: 'linux', arches: both },
    // HWE: uname -v "#83~20.04.1-Ubuntu SMP ..." gives kernelversion 83~20.04.1.
    { abi: '5.15.0-76', flavour: 'generic', version: '5.15.0-76.83~20.04.1', source: 'linux-hwe-5.15', arches: both },
    { abi: '5.15.0-1019', flavour: 'aws', version: '5.15.0-1019.23~20.04.1', source: 'linux-aws-5.15', arches: both },
    { abi: '5.4.0-1060', flavour: 'gke', version: '5.4.0-1060.63', source: 'linux-gke', arches: ['amd64'] },
    { abi: '5.15.0-1038', flavour: 'gke', version: '5.15.0-1038.43~20.04.1', source: 'linux-gke-5.15', arches: ['amd64'] },
  ];
  const split = (kernels: UbuntuKernel[], arch: string) =>
    kernels.filter((k) => k.arches.includes(arch)).map((k) => ({ ...k, arches: [arch] }));
  const meta = [
    ubuntuMeta('linux-headers-generic-hwe-20.04', '5.15.0.76.83~20.04.36', 'linux-headers-5.15.0-76-generic', 'linux-meta-hwe-5.15'),
  ];
  return {
    archive: [
      { suite: 'focal', kernels: split(release, 'amd64'), fillers },
      { suite: 'focal-updates', kernels: split(updates, 'amd64'), extra: { amd64: meta }, fillers },
      { suite: 'focal-security', kernels: split(updates.slice(0, 2), 'amd64'), fillers },
    ],
    ports: [
      { suite: 'focal', kernels: split(release, 'arm64'), fillers },
      { suite: 'focal-updates', kernels: split(updates, 'arm64'), fillers },
      { suite: 'focal-security', kernels: split(updates.slice(0, 2), 'arm64'), fillers },
    ],
  };
}

/** Ubuntu 24.04 (noble) in small: 6.8 kernels of every flavour and the 6.11 HWE. */
export function nobleFixture(fillers = 20): { archive: UbuntuSuiteSpec[]; ports: UbuntuSuiteSpec[] } {
  const both = ['amd64', 'arm64'];
  const release: UbuntuKernel[] = [
    { abi: '6.8.0-31', flavour: 'generic', version: '6.8.0-31.31', source: 'linux', arches: both },
    { abi: '6.8.0-1008', flavour: 'aws', version: '6.8.0-1008.8', source: 'linux-aws', arches: both },
    { abi: '6.8.0-1007', flavour: 'gcp', version: '6.8.0-1007.7', source: 'linux-gcp', arches: both },
    { abi: '6.8.0-1005', flavour: 'gke', version: '6.8.0-1005.8', source: 'linux-gke', arches: ['amd64'] },
    { abi: '6.8.0-1007', flavour: 'azure', version: '6.8.0-1007.7', source: 'linux-azure', arches: both },
  ];
  const updates: UbuntuKernel[] = [
    { abi: '6.8.0-60', flavour: 'generic', version: '6.8.0-60.63', source: 'linux', arches: both },
    { abi: '6.11.0-26', flavour: 'generic', version: '6.11.0-26.26~24.04.1', source: 'linux-hwe-6.11', arches: both },
    { abi: '6.8.0-1029', flavour: 'aws', version: '6.8.0-1029.31', source: 'linux-aws', arches: both },
  ];
  const split = (kernels: UbuntuKernel[], arch: string) =>
    kernels.filter((k) => k.arches.includes(arch)).map((k) => ({ ...k, arches: [arch] }));
  return {
    archive: [
      { suite: 'noble', kernels: split(release, 'amd64'), fillers },
      { suite: 'noble-updates', kernels: split(updates, 'amd64'), fillers },
      { suite: 'noble-security', kernels: split(updates.slice(0, 1), 'amd64'), fillers },
    ],
    ports: [
      { suite: 'noble', kernels: split(release, 'arm64'), fillers },
      { suite: 'noble-updates', kernels: split(updates, 'arm64'), fillers },
      { suite: 'noble-security', kernels: split(updates.slice(0, 1), 'arm64'), fillers },
    ],
  };
}

export const UBUNTU_FIXTURES = { focal: focalFixture, jammy: jammyFixture, noble: nobleFixture } as const;

// Debian 13 (trixie): ABIs named <version>+deb13, for amd64 and arm64, each with
// plain, cloud and rt headers, a -common (-common-rt) package and linux-kbuild; the
// headers depend on gcc-14, the compiler the kernel was built with (kernels/debian13.yaml
// follows it with role compiler), which the release pocket serves.

export interface DebianKernel {
  /** `6.12.43+deb13` */
  abi: string;
  /** `6.12.43-1` */
  version: string;
  arches: string[];
  /** The linux-kbuild package's version, when it differs (it may have moved on). */
  kbuildVersion?: string;
}

/** The compiler trixie's kernels were built with (their headers depend on it). */
export const TRIXIE_GCC = 'gcc-14';

export function debianKernelPackages(k: DebianKernel, arch: string, opts: { kbuild?: boolean } = {}): FixturePackage[] {
  const p = (name: string, extra: Partial<FixturePackage> = {}): FixturePackage => ({
    name,
    version: k.version,
    filename: `pool/main/l/linux/${name}_${k.version}_${extra.architecture ?? arch}.deb`,
    ...extra,
  });
  const kbuild = `linux-kbuild-${k.abi}`;
  const out: FixturePackage[] = [
    p(`linux-headers-${k.abi}-common`, { architecture: 'all' }),
    p(`linux-headers-${k.abi}-common-rt`, { architecture: 'all' }),
  ];
  for (const f of [arch, `cloud-${arch}`, `rt-${arch}`]) {
    const common = f.startsWith('rt-') ? `linux-headers-${k.abi}-common-rt` : `linux-headers-${k.abi}-common`;
    out.push(
      p(`linux-headers-${k.abi}-${f}`, { depends: `${common} (= ${k.version}), ${kbuild} (>= ${k.version}), ${TRIXIE_GCC}` }),
      p(`linux-image-${k.abi}-${f}-unsigned`, { depends: 'kmod, linux-base (>= 4.3~)' }),
      {
        ...p(`linux-image-${k.abi}-${f}`, { depends: 'kmod, linux-base (>= 4.3~)' }),
        filename: `pool/main/l/linux-signed-${arch}/linux-image-${k.abi}-${f}_${k.version}_${arch}.deb`,
      },
    );
  }
  if (opts.kbuild !== false)
    out.push({
      name: kbuild,
      version: k.kbuildVersion ?? k.version,
      filename: `pool/main/l/linux/${kbuild}_${k.kbuildVersion ?? k.version}_${arch}.deb`,
      depends: 'libc6 (>= 2.38)',
    });
  return out;
}

/** trixie and trixie-security, amd64 and arm64. */
export function trixieFixture(fillers = 20): { suite: string; arches: Record<string, FixturePackage[]> }[] {
  const arches = ['amd64', 'arm64'];
  const suite = (name: string, build: (arch: string) => FixturePackage[]) => ({
    suite: name,
    arches: Object.fromEntries(arches.map((a) => [a, [...fillerPackages(fillers), ...build(a)]])),
  });
  return [
    suite('trixie', (a) => [
      ...debianKernelPackages({ abi: '6.12.33+deb13', version: '6.12.33-1', arches }, a),
      {
        name: 'linux-kbuild-6.12.43+deb13',
        version: '6.12.43-1',
        filename: `pool/main/l/linux/linux-kbuild-6.12.43+deb13_6.12.43-1_${a}.deb`,
        depends: 'libc6 (>= 2.38)',
      },
      {
        name: TRIXIE_GCC,
        version: '14.2.0-19',
        filename: `pool/main/g/gcc-14/gcc-14_14.2.0-19_${a}.deb`,
        depends: 'cpp-14 (= 14.2.0-19), binutils',
      },
      // The metapackage: no kernel.
      {
        name: `linux-headers-${a}`,
        version: '6.12.33-1',
        filename: `pool/main/l/linux-signed-${a}/linux-headers-${a}_6.12.33-1_${a}.deb`,
        depends: `linux-headers-6.12.33+deb13-${a} (= 6.12.33-1)`,
      },
      // A kernel older than minimumKernel 4.14 (not in the real trixie): dropped.
      ...debianKernelPackages({ abi: '4.9.0-13', version: '4.9.228-1', arches }, a),
    ]),
    suite('trixie-security', (a) => [
      // A security update: its headers and -common here, its kbuild package published to the
      // release pocket with the point release (followed across suites).
      ...debianKernelPackages({ abi: '6.12.43+deb13', version: '6.12.43-1', arches }, a, { kbuild: false }),
    ]),
  ];
}

// Writing the fixture archives as a mirror lays them out: `ubuntu/` (the amd64
// archive), `ubuntu-ports/` (arm64), `debian/` and `debian-security/`.

export async function writeUbuntuMirror(
  root: string,
  code: keyof typeof UBUNTU_FIXTURES,
  signer: TestSigner | undefined,
  fillers = 20,
): Promise<void> {
  const fixture = UBUNTU_FIXTURES[code](fillers);
  for (const [folder, specs, arch] of [
    ['ubuntu', fixture.archive, 'amd64'],
    ['ubuntu-ports', fixture.ports, 'arm64'],
  ] as const) {
    for (const spec of specs)
      await writeAptRepository(join(root, folder), {
        suite: spec.suite,
        origin: 'Ubuntu',
        arches: ubuntuSuitePackages(spec, [arch]),
        ...(signer ? { signer } : {}),
      });
  }
}

/** `--mirror` overrides for a shipped Ubuntu definition: its `*-ports` repositories to ubuntu-ports/, the others to ubuntu/. */
export function ubuntuOverrides(repositories: string[], mirrorUrl: string): Map<string, string[]> {
  return new Map(repositories.map((r) => [r, [`${mirrorUrl}/${r.endsWith('-ports') ? 'ubuntu-ports' : 'ubuntu'}`]]));
}

export async function writeTrixieMirror(root: string, signer: TestSigner | undefined, fillers = 20): Promise<void> {
  for (const s of trixieFixture(fillers))
    await writeAptRepository(join(root, s.suite === 'trixie-security' ? 'debian-security' : 'debian'), {
      suite: s.suite,
      origin: 'Debian',
      arches: s.arches,
      ...(signer ? { signer } : {}),
    });
}

export function debian13Overrides(mirrorUrl: string): Map<string, string[]> {
  return new Map([
    ['trixie', [`${mirrorUrl}/debian`]],
    ['trixie-security', [`${mirrorUrl}/debian-security`]],
  ]);
}
