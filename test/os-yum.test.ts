import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { startMirror, type TestMirror } from './helpers/server.js';
import { copyShippedDefinition, falcoctlProbeFile, legacyLoaderProbeFile, tempDir } from './helpers/os-fixtures.js';
import { EL9_BUILDS, el9Repos, fedoraRepos, oracle9Repos, writeAmazonLinux2023, writeYumRepos } from './helpers/yum-os-fixtures.js';
import { loadSourceDefinition } from '../src/config/source-definition.js';
import { resolveSource } from '../src/resolve/index.js';
import { readLockfileText, serializeLockfile } from '../src/lockfile/lockfile.js';
import { probeFileOf } from '../src/graph/targets.js';
import { createMemoryLogger } from '../src/util/log.js';
import type { KernelDescriptor, Lockfile } from '../src/config/types.js';

// The shipped yum-family definitions (CentOS Stream 9, Rocky 9, AlmaLinux 9,
// Fedora 44, Oracle Linux 9, Amazon Linux 2023) resolved against loopback
// repositories in their real layouts, with `--mirror`-style overrides of each
// repository's base URL ($basearch substituted by the resolver).

const HTTP = { idleTimeoutMs: 5000, attempts: 2, backoffMs: 10 };
const ARCHES = ['x86_64', 'aarch64'];
let mirror: TestMirror;
let root: string;
let al2023Base: string;
const projects: string[] = [];

before(async () => {
  root = await tempDir('os-yum-mirror-');
  mirror = await startMirror({ root });
  // CentOS Stream 9 with a CentOS 7 kernel mixed in (older than the minimum: dropped).
  await writeYumRepos(
    root,
    el9Repos('9-stream', [...EL9_BUILDS, { version: '3.10.0', release: '1160.el7', arches: ['x86_64'] }], { compression: 'xz' }),
    ARCHES,
  );
  await writeYumRepos(root, el9Repos('pub/rocky/9', EL9_BUILDS, { compression: 'gz' }), ARCHES);
  await writeYumRepos(root, el9Repos('almalinux/9', EL9_BUILDS, { compression: 'gz' }), ARCHES);
  await writeYumRepos(root, fedoraRepos(44), ARCHES);
  await writeYumRepos(root, oracle9Repos(), ARCHES);
  al2023Base = (await writeAmazonLinux2023(root, mirror.url, ARCHES)).base;
});

after(async () => {
  await mirror.close();
  await rm(root, { recursive: true, force: true });
  for (const p of projects) await rm(p, { recursive: true, force: true });
});

async function resolveShipped(id: string, bases: Record<string, string>): Promise<Lockfile> {
  const project = await tempDir(`os-yum-${id}-`);
  projects.push(project);
  const source = await loadSourceDefinition(await copyShippedDefinition(id, project), project);
  const overrides = new Map(Object.entries(bases).map(([name, path]) => [name, [`${mirror.url}/${path}`]]));
  const lock = await resolveSource(source, { mirrorOverrides: overrides, http: HTTP, logger: createMemoryLogger() });
  const text = serializeLockfile(lock);
  assert.ok(!text.includes(mirror.url));
  readLockfileText(text, `${id}.lock.yaml`);
  for (const k of lock.kernels) {
    // Both Falco loaders ask for the graph's file name on a node running this kernel.
    assert.equal(probeFileOf(k), falcoctlProbeFile(lock.osRelease, k.release, k.version), k.release);
    assert.equal(probeFileOf(k), legacyLoaderProbeFile(lock.osRelease, k.release, k.version), k.release);
    assert.equal(k.name, k.release);
    assert.ok(k.release.endsWith(`.${k.machine}`), k.release);
  }
  return lock;
}

const roles = (k: KernelDescriptor) => k.packages.map((p) => `${p.role} ${p.name} ${p.repository}`).sort();

test('CentOS Stream 9: kernel-devel from AppStream with its kernel-core from BaseOS', async () => {
  const lock = await resolveShipped('centos-stream9', {
    appstream: '9-stream/AppStream/$basearch/os/',
    baseos: '9-stream/BaseOS/$basearch/os/',
  });
  assert.deepEqual(lock.kernels.map((k) => k.release).sort(), [
    '5.14.0-570.el9.aarch64',
    '5.14.0-570.el9.x86_64',
    '5.14.0-611.el9.aarch64',
    '5.14.0-611.el9.x86_64',
    '5.14.0-620.el9.x86_64',
  ]);
  const k = lock.kernels.find((x) => x.release === '5.14.0-611.el9.aarch64')!;
  assert.deepEqual(roles(k), ['devel kernel-devel appstream', 'image kernel-core baseos']);
  assert.equal(k.packages.find((p) => p.role === 'devel')!.path, 'Packages/k/kernel-devel-5.14.0-611.el9.aarch64.rpm');
  assert.equal(k.version, '#1 SMP PREEMPT_DYNAMIC');
  assert.equal(probeFileOf(k), 'falco_centos_5.14.0-611.el9.aarch64_1.o');
  assert.ok(!lock.kernels.some((x) => x.release.startsWith('3.10.')), 'older than minimumKernel');
});

test('Rocky Linux 9 and AlmaLinux 9: the same layout under their own target ids', async () => {
  const rocky = await resolveShipped('rocky9', {
    appstream: 'pub/rocky/9/AppStream/$basearch/os/',
    baseos: 'pub/rocky/9/BaseOS/$basearch/os/',
  });
  const alma = await resolveShipped('almalinux9', {
    appstream: 'almalinux/9/AppStream/$basearch/os/',
    baseos: 'almalinux/9/BaseOS/$basearch/os/',
  });
  for (const [lock, target] of [
    [rocky, 'rocky'],
    [alma, 'almalinux'],
  ] as const) {
    assert.equal(lock.kernels.length, 5);
    assert.ok(lock.kernels.every((k) => k.targetId === target && k.kernelVersion === '1' && k.packages.length === 2));
  }
  assert.equal(probeFileOf(rocky.kernels.find((k) => k.release === '5.14.0-620.el9.x86_64')!), 'falco_rocky_5.14.0-620.el9.x86_64_1.o');
});

test('Fedora 44: zstd metadata, the release and its updates', async () => {
  const lock = await resolveShipped('fedora44', {
    fedora: 'fedora/linux/releases/44/Everything/$basearch/os/',
    updates: 'fedora/linux/updates/44/Everything/$basearch/',
  });
  assert.deepEqual(lock.kernels.map((k) => k.release).sort(), [
    '6.19.10-300.fc44.aarch64',
    '6.19.10-300.fc44.x86_64',
    '6.19.6-300.fc44.aarch64',
    '6.19.6-300.fc44.x86_64',
    '7.0.4-200.fc44.aarch64',
    '7.0.4-200.fc44.x86_64',
  ]);
  const k = lock.kernels.find((x) => x.release === '6.19.6-300.fc44.x86_64')!;
  assert.deepEqual(roles(k), ['devel kernel-devel fedora', 'image kernel-core fedora']);
  assert.equal(probeFileOf(k), 'falco_fedora_6.19.6-300.fc44.x86_64_1.o');
});

test('Oracle Linux 9: RHCK and UEK as two flavours of target ol, UEK with kernelversion 2', async () => {
  const lock = await resolveShipped('oraclelinux9', {
    'ol9-appstream': 'repo/OracleLinux/OL9/appstream/$basearch/',
    'ol9-baseos': 'repo/OracleLinux/OL9/baseos/latest/$basearch/',
    'ol9-uekr7': 'repo/OracleLinux/OL9/UEKR7/$basearch/',
  });
  assert.equal(lock.kernels.length, 6);
  const uek = lock.kernels.find((x) => x.release === '5.15.0-310.184.5.2.el9uek.x86_64')!;
  assert.equal(uek.flavour, 'uek');
  assert.equal(uek.targetId, 'ol');
  assert.equal(uek.version, '#2 SMP');
  assert.equal(uek.kernelVersion, '2');
  assert.deepEqual(roles(uek), ['devel kernel-uek-devel ol9-uekr7', 'image kernel-uek-core ol9-uekr7']);
  assert.equal(uek.packages[0]!.path, 'getPackage/kernel-uek-devel-5.15.0-310.184.5.2.el9uek.x86_64.rpm');
  assert.equal(probeFileOf(uek), 'falco_ol_5.15.0-310.184.5.2.el9uek.x86_64_2.o');
  const rhck = lock.kernels.find((x) => x.release === '5.14.0-570.12.1.0.1.el9_6.aarch64')!;
  assert.equal(rhck.flavour, 'rhck');
  assert.equal(rhck.kernelVersion, '1');
  assert.deepEqual(roles(rhck), ['devel kernel-devel ol9-appstream', 'image kernel-core ol9-baseos']);
  assert.equal(lock.kernels.filter((k) => k.flavour === 'uek').length, 4);
});

test('Amazon Linux 2023: the 6.1 and 6.12 kernels of core, zstd metadata, blobstore paths', async () => {
  const lock = await resolveShipped('amazonlinux2023', { amazonlinux: al2023Base });
  assert.equal(lock.kernels.length, 6);
  const k612 = lock.kernels.find((x) => x.release === '6.12.46-66.121.amzn2023.aarch64')!;
  assert.deepEqual(roles(k612), ['devel kernel6.12-devel amazonlinux', 'image kernel6.12 amazonlinux']);
  // Blobstore hrefs climb out of the repository: paths are kept from the host root.
  assert.match(k612.packages[0]!.path, /^blobstore\/[0-9a-f]{64}\/kernel6\.12-devel-6\.12\.46-66\.121\.amzn2023\.aarch64\.rpm$/);
  const k61 = lock.kernels.find((x) => x.release === '6.1.158-178.288.amzn2023.x86_64')!;
  assert.deepEqual(roles(k61), ['devel kernel-devel amazonlinux', 'image kernel amazonlinux']);
  assert.equal(probeFileOf(k61), 'falco_amazonlinux2023_6.1.158-178.288.amzn2023.x86_64_1.o');
  assert.equal(lock.osRelease['VERSION_ID'], '2023');
});
