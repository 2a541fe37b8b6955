import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { sha256Hex } from '../../src/util/hash.js';
import { serializeLockfile } from '../../src/lockfile/lockfile.js';
import type { Arch, KernelDescriptor, Lockfile } from '../../src/config/types.js';
import type { Target } from '../../src/graph/types.js';
import { entryFor } from '../../src/repository/local.js';
import { writeIndex } from '../../src/repository/index-file.js';

// Small, valid projects for the build-graph tests: a source definition per
// OS, its lockfile (written by the real serializer, with the definition's
// real sha256), kernels/drivers.yaml and a local driver directory.

export function sourceDefinitionText(os: string, mirror = 'http://127.0.0.1:9/debian'): string {
  return `# test source definition
id: ${os}
type: apt
targetId: debian
architectures: [x86_64, aarch64]
minimumKernel: "4.14"
osRelease:
  ID: debian
  VERSION_ID: "12"
repositories:
  - name: main
    mirrors:
      - ${mirror}
    suite: bookworm
    components: [main]
apt:
  headers:
    - flavour: amd64
      pattern: '^linux-headers-(?<release>.*-amd64)$'
  follow: ['^linux-headers-.*-common$']
  unameVersion: '#1 SMP Debian {version}'
  kernelVersion: '1'
`;
}

/** A kernel descriptor with two packages whose hashes are computed from their names. */
/**
 * A Debian package version for a release, unique per ABI as Debian's are (`6.1.0-50-amd64` is
 * built from 6.1.50-1, `6.12.9+deb12-amd64` from 6.12.9-1): Falco's loaders name a Debian
 * kernel's artifact by this version (from `uname -v`), so two kernels must not share one.
 */
export function debianPackageVersion(release: string): string {
  const m = /^(\d+)\.(\d+)\.(\d+)(?:-(\d+))?/.exec(release);
  if (!m) return `${release.split('-')[0]}-1`;
  return m[4] !== undefined ? `${m[1]}.${m[2]}.${m[4]}-1` : `${m[1]}.${m[2]}.${m[3]}-1`;
}

export function kernel(release: string, opts: { machine?: Arch; name?: string; flavour?: string } = {}): KernelDescriptor {
  const machine = opts.machine ?? 'x86_64';
  const debVersion = debianPackageVersion(release);
  const pkg = (name: string, role: string) => ({
    name,
    version: debVersion,
    role,
    repository: 'main',
    path: `pool/main/l/linux/${name}_${debVersion}_${machine === 'x86_64' ? 'amd64' : 'arm64'}.deb`,
    sha256: sha256Hex(`${name}/${machine}`),
    size: 1000 + name.length,
  });
  // Package names allow no `~` (a release may hold one).
  const safe = release.replace(/~/g, '.');
  return {
    name: opts.name ?? release,
    release,
    version: `#1 SMP Debian ${debVersion}`,
    machine,
    kernelVersion: '1',
    targetId: 'debian',
    flavour: opts.flavour ?? 'amd64',
    packages: [pkg(`linux-headers-${safe}`, 'headers'), pkg(`linux-headers-${safe.replace(/-[a-z0-9]+$/, '')}-common`, 'common')],
  };
}

export const HOST_BUILDER = '  kind: host\n  clang: "14.0.6"\n';

/** drivers.yaml with the local `example` driver and, optionally, a pinned or unpinned remote one. */
export function driversText(
  opts: { remote?: 'pinned' | 'unpinned' | 'none'; remoteUrl?: string; remoteSha256?: string; builder?: string; exampleMax?: string } = {},
): string {
  const remote = opts.remote ?? 'pinned';
  let text = `# drivers for a test project
builder:
${opts.builder ?? HOST_BUILDER}drivers:
  - name: example
    version: 1.0.0
    source:
      path: drivers/example
    recipe: kbuild
    bpfDir: .
    object: probe.o
    kinds: [bpf]
    kernels:
      min: "4.14"${opts.exampleMax ? `\n      max: "${opts.exampleMax}"` : ''}
`;
  if (remote !== 'none') {
    text += `  - name: falco
    version: 9.1.0+driver
    source:
      url: ${opts.remoteUrl ?? 'https://github.invalid/falcosecurity/libs/archive/9.1.0%2Bdriver.tar.gz'}
${remote === 'pinned' ? `      sha256: ${opts.remoteSha256 ?? sha256Hex('a tarball that is not downloaded in tests')}\n` : ''}      strip: 1
    recipe: falco-libs
    bpfDir: driver/bpf
    object: probe.o
    kinds: [bpf]
    kernels:
      min: "4.14"
      max: "6.13"
`;
  }
  return text;
}

export interface ProjectSpec {
  /** OS id to its kernels. */
  oses: Record<string, KernelDescriptor[]>;
  drivers?: string;
  /** Mirror URL written into every source definition (it must not reach any key). */
  mirror?: string;
}

export async function writeLockfileFor(root: string, os: string, kernels: KernelDescriptor[], mirror?: string): Promise<Lockfile> {
  const defText = sourceDefinitionText(os, mirror);
  await writeFile(join(root, 'kernels', `${os}.yaml`), defText);
  const lock: Lockfile = {
    os,
    source: { path: `kernels/${os}.yaml`, sha256: sha256Hex(defText) },
    osRelease: { ID: 'debian', VERSION_ID: '12' },
    kernels,
  };
  await writeFile(join(root, 'kernels', `${os}.lock.yaml`), serializeLockfile(lock));
  return lock;
}

/** Write a project: kernels/<os>.yaml + lockfile per OS, kernels/drivers.yaml, drivers/example/. */
export async function makeProject(root: string, spec: ProjectSpec): Promise<void> {
  await mkdir(join(root, 'kernels'), { recursive: true });
  await mkdir(join(root, 'drivers', 'example'), { recursive: true });
  await writeFile(join(root, 'drivers', 'example', 'Makefile'), 'always-y += probe.o\n');
  await writeFile(join(root, 'drivers', 'example', 'probe.c'), '/* a probe */\n');
  await writeFile(join(root, 'kernels', 'drivers.yaml'), spec.drivers ?? driversText());
  for (const [os, kernels] of Object.entries(spec.oses)) await writeLockfileFor(root, os, kernels, spec.mirror);
}

/** A finished build's repository without building: a small probe (`probe <key>`) per target at its output path, and the index. */
export async function writePublishedProbes(repo: string, targets: readonly Target[]): Promise<void> {
  const probes = [];
  for (const t of targets) {
    const bytes = `probe ${t.key}`;
    await mkdir(dirname(join(repo, t.output)), { recursive: true });
    await writeFile(join(repo, t.output), bytes);
    probes.push(entryFor(t, { sha256: sha256Hex(bytes), size: bytes.length }));
  }
  await writeIndex(repo, { version: 1, probes });
}
