import { sha256Hex } from '../../src/util/hash.js';
import {
  blobstorePackage,
  depthOf,
  fillerPackage,
  writeMirrorList,
  writeYumRepository,
  type FixtureCompression,
  type FixturePackage,
} from './yum-fixture.js';

// Fixture repositories in the shape of the yum family's real ones, for the
// shipped definitions: RHEL 9's clones (kernel-devel in AppStream, kernel-core
// in BaseOS, `Packages/k/` hrefs), Fedora (releases and updates, zstd
// metadata), Oracle Linux 9 (RHCK and UEK R7, `getPackage/` hrefs) and Amazon
// Linux 2023 (a mirror.list per architecture, blobstore hrefs, 6.1 and 6.12
// kernels). Each repository is written per architecture, as the mirrors lay
// them out, with realistic filler packages around the kernels.

export interface RpmBuild {
  version: string;
  release: string;
  arches: string[];
}

/** A package whose href is `<prefix><name>-<version>-<release>.<arch>.rpm`. */
export function rpmAt(prefix: string, name: string, version: string, release: string, arch: string, epoch = '0'): FixturePackage {
  const bytes = Buffer.from(`fake rpm ${name}-${version}-${release}.${arch}\n`);
  return {
    name,
    arch,
    epoch,
    version,
    release,
    href: `${prefix}${name}-${version}-${release}.${arch}.rpm`,
    sha256: sha256Hex(bytes),
    size: bytes.length,
  };
}

function fillers(n: number, arch: string): FixturePackage[] {
  return Array.from({ length: n }, (_, i) => {
    const p = fillerPackage(i, arch, 0);
    return { ...p, href: `Packages/${p.name[0]}/${p.name}-${p.version}-${p.release}.${p.arch}.rpm` };
  });
}

export interface YumRepoSpec {
  /** Folder under the mirror root, `$basearch` standing for the architecture. */
  path: string;
  compression: FixtureCompression;
  packages(arch: string): FixturePackage[];
}

export async function writeYumRepos(root: string, specs: YumRepoSpec[], arches: string[]): Promise<void> {
  for (const spec of specs)
    for (const arch of arches)
      await writeYumRepository(root, spec.path.split('$basearch').join(arch), spec.packages(arch), {
        compression: spec.compression,
        blobstore: false,
      });
}

/** RHEL 9's layout: AppStream holds kernel-devel (and debug, 64k variants), BaseOS the kernel itself. */
export function el9Repos(
  prefix: string,
  builds: RpmBuild[],
  opts: { compression: FixtureCompression; fillers?: number; dist?: string },
): YumRepoSpec[] {
  const k = (name: string, b: RpmBuild, arch: string) => rpmAt(`Packages/k/`, name, b.version, b.release, arch);
  const of = (arch: string) => builds.filter((b) => b.arches.includes(arch));
  return [
    {
      path: `${prefix}/AppStream/$basearch/os/`,
      compression: opts.compression,
      packages: (arch) => [
        ...fillers(opts.fillers ?? 30, arch),
        ...of(arch).flatMap((b) => [
          k('kernel-devel', b, arch),
          k('kernel-devel-matched', b, arch),
          k('kernel-debug-devel', b, arch),
          ...(arch === 'aarch64' ? [k('kernel-64k-devel', b, arch)] : []),
          k('kernel-headers', b, arch),
        ]),
      ],
    },
    {
      path: `${prefix}/BaseOS/$basearch/os/`,
      compression: opts.compression,
      packages: (arch) => [
        ...fillers(opts.fillers ?? 30, arch),
        ...of(arch).flatMap((b) => [
          k('kernel', b, arch),
          k('kernel-core', b, arch),
          k('kernel-modules', b, arch),
          k('kernel-debug-core', b, arch),
        ]),
      ],
    },
  ];
}

export const EL9_BUILDS: RpmBuild[] = [
  { version: '5.14.0', release: '570.el9', arches: ['x86_64', 'aarch64'] },
  { version: '5.14.0', release: '611.el9', arches: ['x86_64', 'aarch64'] },
  { version: '5.14.0', release: '620.el9', arches: ['x86_64'] },
];

/** Fedora: the release's kernel in releases/, newer ones in updates/ (no `os/` folder there), zstd metadata. */
export function fedoraRepos(release: number, opts: { fillers?: number } = {}): YumRepoSpec[] {
  const k = (name: string, v: string, r: string, arch: string) => rpmAt('Packages/k/', name, v, r, arch);
  const set = (v: string, r: string, arch: string) =>
    ['kernel', 'kernel-core', 'kernel-devel', 'kernel-devel-matched', 'kernel-debug-devel'].map((n) => k(n, v, r, arch));
  return [
    {
      path: `fedora/linux/releases/${release}/Everything/$basearch/os/`,
      compression: 'zst',
      packages: (arch) => [...fillers(opts.fillers ?? 30, arch), ...set('6.19.6', `300.fc${release}`, arch)],
    },
    {
      path: `fedora/linux/updates/${release}/Everything/$basearch/`,
      compression: 'zst',
      packages: (arch) => [
        ...fillers(opts.fillers ?? 30, arch),
        ...set('6.19.10', `300.fc${release}`, arch),
        ...set('7.0.4', `200.fc${release}`, arch),
      ],
    },
  ];
}

/** Oracle Linux 9: kernel-devel in appstream, kernel-core in baseos, kernel-uek* in UEKR7; hrefs `getPackage/<file>`. */
export function oracle9Repos(opts: { fillers?: number } = {}): YumRepoSpec[] {
  const g = (name: string, v: string, r: string, arch: string) => rpmAt('getPackage/', name, v, r, arch);
  return [
    {
      path: 'repo/OracleLinux/OL9/appstream/$basearch/',
      compression: 'gz',
      packages: (arch) => [
        ...fillers(opts.fillers ?? 30, arch),
        g('kernel-devel', '5.14.0', '570.12.1.0.1.el9_6', arch),
        g('kernel-headers', '5.14.0', '570.12.1.0.1.el9_6', arch),
      ],
    },
    {
      path: 'repo/OracleLinux/OL9/baseos/latest/$basearch/',
      compression: 'gz',
      packages: (arch) => [
        ...fillers(opts.fillers ?? 30, arch),
        g('kernel', '5.14.0', '570.12.1.0.1.el9_6', arch),
        g('kernel-core', '5.14.0', '570.12.1.0.1.el9_6', arch),
      ],
    },
    {
      path: 'repo/OracleLinux/OL9/UEKR7/$basearch/',
      compression: 'gz',
      packages: (arch) => [
        ...fillers(opts.fillers ?? 30, arch),
        ...['kernel-uek', 'kernel-uek-core', 'kernel-uek-modules', 'kernel-uek-devel'].flatMap((n) => [
          g(n, '5.15.0', '309.180.4.el9uek', arch),
          g(n, '5.15.0', '310.184.5.2.el9uek', arch),
        ]),
        // UEK's debug flavour is not built.
        g('kernel-uek-debug-devel', '5.15.0', '310.184.5.2.el9uek', arch),
      ],
    },
  ];
}

/**
 * Amazon Linux 2023: `al2023/core/mirrors/latest/<arch>/mirror.list` names
 * `<mirror>/al2023/core/guids/<guid>/<arch>/`, whose hrefs climb to `/blobstore/`.
 */
export async function writeAmazonLinux2023(
  root: string,
  mirrorUrl: string,
  arches: string[],
  opts: { fillers?: number } = {},
): Promise<{ base: string }> {
  const guid = sha256Hex('al2023-core').slice(0, 40);
  for (const arch of arches) {
    const base = `al2023/core/guids/${guid}/${arch}/`;
    const depth = depthOf(base);
    const b = (name: string, v: string, r: string) => blobstorePackage(name, v, r, arch, depth);
    const packages = [
      ...Array.from({ length: opts.fillers ?? 30 }, (_, i) => fillerPackage(i, arch, depth)),
      ...['kernel', 'kernel-devel', 'kernel-headers'].flatMap((n) => [
        b(n, '6.1.102', '111.182.amzn2023'),
        b(n, '6.1.158', '178.288.amzn2023'),
      ]),
      ...['kernel6.12', 'kernel6.12-devel'].map((n) => b(n, '6.12.46', '66.121.amzn2023')),
    ];
    await writeYumRepository(root, base, packages, { compression: 'zst', blobstore: false });
    await writeMirrorList(root, `al2023/core/mirrors/latest/${arch}/mirror.list`, [`${mirrorUrl}/al2023/core/guids/${guid}/$basearch/`]);
  }
  /** The repository base (what mirror.list names), `$basearch` left in. */
  return { base: `al2023/core/guids/${guid}/$basearch/` };
}
