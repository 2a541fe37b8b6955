import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { startMirror, type TestMirror } from './helpers/server.js';
import {
  createTestSigner,
  copyShippedDefinition,
  falcoctlProbeFile,
  legacyLoaderProbeFile,
  legacyProbeFileOf,
  shippedRepositoryNames,
  tempDir,
  type TestSigner,
} from './helpers/os-fixtures.js';
import { debian13Overrides, ubuntuCommonName, ubuntuOverrides, writeTrixieMirror, writeUbuntuMirror } from './helpers/apt-os-fixtures.js';
import { loadSourceDefinition } from '../src/config/source-definition.js';
import { resolveSource } from '../src/resolve/index.js';
import { readLockfileText, serializeLockfile } from '../src/lockfile/lockfile.js';
import { probeFileOf } from '../src/graph/targets.js';
import { createMemoryLogger } from '../src/util/log.js';
import type { KernelDescriptor, Lockfile } from '../src/config/types.js';

// The shipped Ubuntu (focal, jammy, noble) and Debian 13 definitions, resolved
// against loopback archives in the real archives' shape (signed InRelease,
// xz-compressed indexes, amd64 on the archive and arm64 on the ports archive
// for Ubuntu, both in one Release for Debian). Each kernel's derived release,
// uname -v, kernelversion and target id are checked against Falco's two
// loaders' rules: a node running that kernel asks for exactly that probe file.

const HTTP = { idleTimeoutMs: 5000, attempts: 2, backoffMs: 10 };
let signer: TestSigner;
let mirror: TestMirror;
let root: string;
const projects: string[] = [];

before(async () => {
  signer = await createTestSigner();
  root = await tempDir('os-apt-mirror-');
  for (const code of ['focal', 'jammy', 'noble'] as const) await writeUbuntuMirror(root, code, signer);
  await writeTrixieMirror(root, signer);
  mirror = await startMirror({ root });
});

after(async () => {
  await mirror.close();
  await signer.close();
  await rm(root, { recursive: true, force: true });
  for (const p of projects) await rm(p, { recursive: true, force: true });
});

async function resolveShipped(id: string, overrides: Map<string, string[]>): Promise<{ lock: Lockfile; lines: string[] }> {
  const project = await tempDir(`os-apt-${id}-`);
  projects.push(project);
  const file = await copyShippedDefinition(id, project, signer.keyring);
  const source = await loadSourceDefinition(file, project);
  const logger = createMemoryLogger();
  const lock = await resolveSource(source, { mirrorOverrides: overrides, http: HTTP, logger });
  // The lockfile text round-trips through its schema and names no mirror.
  const text = serializeLockfile(lock);
  assert.ok(!text.includes(mirror.url));
  readLockfileText(text, `${id}.lock.yaml`);
  return { lock, lines: logger.lines };
}

const key = (k: KernelDescriptor) => `${k.release} ${k.machine}`;
const byKey = (lock: Lockfile) => new Map(lock.kernels.map((k) => [key(k), k]));

/** Every kernel: the graph's probe file is what falcoctl and the legacy loader ask for on a node with that kernel. */
function assertFalcoNames(lock: Lockfile): void {
  for (const k of lock.kernels) {
    assert.equal(probeFileOf(k), falcoctlProbeFile(lock.osRelease, k.release, k.version), `falcoctl, ${key(k)}`);
    assert.equal(legacyProbeFileOf(k), legacyLoaderProbeFile(lock.osRelease, k.release, k.version), `legacy loader, ${key(k)}`);
  }
}

describe('Ubuntu', () => {
  test('jammy: five flavours, GA and HWE, amd64 from the archive and arm64 from ports', async () => {
    const { lock, lines } = await resolveShipped('ubuntu-jammy', ubuntuOverrides(await shippedRepositoryNames('ubuntu-jammy'), mirror.url));
    assert.ok(!lines.some((l) => /signature not checked/.test(l)), 'every InRelease is verified with the keyring');
    const expected: [release: string, machine: string, kernelVersion: string, flavour: string][] = [
      ['5.15.0-25-generic', 'x86_64', '25', 'generic'],
      ['5.15.0-76-generic', 'x86_64', '83', 'generic'],
      ['5.15.0-78-generic', 'x86_64', '85', 'generic'],
      ['6.2.0-26-generic', 'x86_64', '26~22.04.1', 'generic'],
      ['5.15.0-1004-aws', 'x86_64', '6', 'aws'],
      ['5.15.0-1019-aws', 'x86_64', '23', 'aws'],
      ['6.2.0-1009-aws', 'x86_64', '9~22.04.3', 'aws'],
      ['5.15.0-1003-gcp', 'x86_64', '6', 'gcp'],
      ['5.15.0-1040-gcp', 'x86_64', '48', 'gcp'],
      ['5.15.0-1002-gke', 'x86_64', '2', 'gke'],
      ['5.15.0-1039-gke', 'x86_64', '44', 'gke'],
      ['5.15.0-1003-azure', 'x86_64', '4', 'azure'],
      ['5.15.0-1041-azure', 'x86_64', '48', 'azure'],
      ['5.15.0-25-generic', 'aarch64', '25', 'generic'],
      ['5.15.0-76-generic', 'aarch64', '83', 'generic'],
      ['5.15.0-78-generic', 'aarch64', '85', 'generic'],
      ['6.2.0-26-generic', 'aarch64', '26~22.04.1', 'generic'],
      ['5.15.0-1004-aws', 'aarch64', '6', 'aws'],
      ['5.15.0-1019-aws', 'aarch64', '23', 'aws'],
      ['5.15.0-1003-gcp', 'aarch64', '6', 'gcp'],
      ['5.15.0-1003-azure', 'aarch64', '4', 'azure'],
      ['5.15.0-1041-azure', 'aarch64', '48', 'azure'],
    ];
    assert.deepEqual(lock.kernels.map(key).sort(), expected.map(([r, m]) => `${r} ${m}`).sort());
    const kernels = byKey(lock);
    for (const [release, machine, kernelVersion, flavour] of expected) {
      const k = kernels.get(`${release} ${machine}`)!;
      assert.equal(k.name, release);
      assert.equal(k.kernelVersion, kernelVersion, release);
      assert.equal(k.flavour, flavour);
      assert.equal(k.targetId, `ubuntu-${flavour}`);
      assert.equal(k.version, `#${kernelVersion}-Ubuntu SMP`);
      assert.equal(probeFileOf(k), `falco_ubuntu-${flavour}_${release}_${kernelVersion}.o`);
      // Headers, the source package's shared headers (role common) and an image.
      assert.deepEqual(k.packages.map((p) => p.role).sort(), ['common', 'headers', 'image'], release);
    }
    assertFalcoNames(lock);

    // The HWE kernel: Falco's own example name, its shared headers from linux-hwe-6.2, and its pool folder.
    const hwe = kernels.get('6.2.0-26-generic x86_64')!;
    assert.equal(probeFileOf(hwe), 'falco_ubuntu-generic_6.2.0-26-generic_26~22.04.1.o');
    assert.equal(hwe.packages.find((p) => p.role === 'common')!.name, ubuntuCommonName({ abi: '6.2.0-26', source: 'linux-hwe-6.2' }));
    assert.match(
      hwe.packages.find((p) => p.role === 'headers')!.path,
      /^pool\/main\/l\/linux-hwe-6\.2\/linux-headers-6\.2\.0-26-generic_6\.2\.0-26\.26~22\.04\.1_amd64\.deb$/,
    );
    // An aws kernel whose only image is the unsigned one.
    assert.equal(
      kernels.get('6.2.0-1009-aws x86_64')!.packages.find((p) => p.role === 'image')!.name,
      'linux-image-unsigned-6.2.0-1009-aws',
    );
    // The same build in -updates and -security: the earlier repository of the definition keeps it.
    assert.ok(kernels.get('5.15.0-76-generic x86_64')!.packages.every((p) => p.repository === 'jammy-updates'));
    assert.ok(kernels.get('5.15.0-76-generic aarch64')!.packages.every((p) => p.repository === 'jammy-updates-ports'));
    assert.ok(kernels.get('5.15.0-78-generic x86_64')!.packages.every((p) => p.repository === 'jammy-security'));
    // What must not become a kernel: metapackages, another flavour, another source package, generic-64k.
    const releases = lock.kernels.map((k) => k.release);
    for (const not of ['generic', 'aws', 'generic-hwe-22.04', '5.15.0-76-lowlatency', '5.15.0-1032-gcp', '5.15.0-76-generic-64k'])
      assert.ok(!releases.includes(not), not);
  });

  test('focal: the 5.15 HWE kernels of 20.04 and a kernel older than the minimum', async () => {
    const { lock } = await resolveShipped('ubuntu-focal', ubuntuOverrides(await shippedRepositoryNames('ubuntu-focal'), mirror.url));
    const kernels = byKey(lock);
    assert.equal(kernels.get('5.15.0-76-generic x86_64')!.kernelVersion, '83~20.04.1');
    assert.equal(probeFileOf(kernels.get('5.15.0-76-generic aarch64')!), 'falco_ubuntu-generic_5.15.0-76-generic_83~20.04.1.o');
    assert.equal(kernels.get('5.15.0-1019-aws x86_64')!.kernelVersion, '23~20.04.1');
    assert.equal(
      kernels.get('5.15.0-1038-gke x86_64')!.packages.find((p) => p.role === 'common')!.name,
      'linux-gke-5.15-headers-5.15.0-1038',
    );
    assert.equal(kernels.get('5.4.0-26-generic x86_64')!.kernelVersion, '30');
    assert.ok(!lock.kernels.some((k) => k.release.startsWith('4.4.')), 'the 4.4 kernel is older than minimumKernel 4.14');
    assert.deepEqual([...new Set(lock.kernels.map((k) => k.flavour))].sort(), ['aws', 'azure', 'gcp', 'generic', 'gke']);
    assertFalcoNames(lock);
  });

  test('noble: 6.8 kernels of every flavour and the 6.11 HWE, on both architectures', async () => {
    const { lock } = await resolveShipped('ubuntu-noble', ubuntuOverrides(await shippedRepositoryNames('ubuntu-noble'), mirror.url));
    const kernels = byKey(lock);
    // amd64: 5 GA flavours and 3 updates; arm64: the same without gke.
    assert.equal(lock.kernels.filter((k) => k.machine === 'x86_64').length, 8);
    assert.equal(lock.kernels.filter((k) => k.machine === 'aarch64').length, 7);
    assert.equal(kernels.get('6.11.0-26-generic aarch64')!.kernelVersion, '26~24.04.1');
    assert.equal(kernels.get('6.8.0-1007-azure aarch64')!.targetId, 'ubuntu-azure');
    assert.equal(kernels.get('6.8.0-1005-gke x86_64')!.targetId, 'ubuntu-gke');
    assert.equal(lock.osRelease['VERSION_CODENAME'], 'noble');
    assertFalcoNames(lock);
  });
});

describe('Debian 13', () => {
  test('trixie: plain, cloud and rt, amd64 and arm64, kbuild followed across suites', async () => {
    const { lock, lines } = await resolveShipped('debian13', debian13Overrides(mirror.url));
    assert.ok(!lines.some((l) => /signature not checked/.test(l)));
    const flavours = ['amd64', 'cloud-amd64', 'rt-amd64', 'arm64', 'cloud-arm64', 'rt-arm64'];
    const expected = ['6.12.33+deb13', '6.12.43+deb13'].flatMap((abi) =>
      flavours.map((f) => `${abi}-${f} ${f.endsWith('arm64') ? 'aarch64' : 'x86_64'}`),
    );
    assert.deepEqual(lock.kernels.map(key).sort(), expected.sort());
    const kernels = byKey(lock);
    const rt = kernels.get('6.12.43+deb13-rt-arm64 aarch64')!;
    assert.equal(rt.version, '#1 SMP PREEMPT_RT Debian 6.12.43-1');
    assert.equal(rt.kernelVersion, '1');
    assert.deepEqual(rt.packages.map((p) => `${p.role} ${p.name} ${p.repository}`).sort(), [
      'common linux-headers-6.12.43+deb13-common-rt trixie-security',
      // The gcc the kernel was built with: recorded (it picks the compiler image), never downloaded.
      'compiler gcc-14 trixie',
      'headers linux-headers-6.12.43+deb13-rt-arm64 trixie-security',
      'image linux-image-6.12.43+deb13-rt-arm64 trixie-security',
      // Published to the release pocket, followed from the security suite's headers.
      'kbuild linux-kbuild-6.12.43+deb13 trixie',
    ]);
    // Both loaders rebuild Debian's release from uname -v's package version plus the flavour
    // (falcoctl debian.go FixupKernel, the script's "debian" case): not uname -r's ABI name.
    assert.equal(probeFileOf(rt), 'falco_debian_6.12.43-1-rt-arm64_1.o');
    assert.equal(rt.legacyRelease, '6.12.43-1-rt-arm64');
    assert.equal(legacyProbeFileOf(kernels.get('6.12.33+deb13-cloud-amd64 x86_64')!), 'falco_debian_6.12.33-1-cloud-amd64_1.o');
    assert.ok(!lock.kernels.some((k) => k.release.startsWith('4.9.')), 'older than minimumKernel');
    assertFalcoNames(lock);
  });
});
