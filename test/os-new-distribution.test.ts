import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fg from 'fast-glob';
import ts from 'typescript';
import { startMirror, type TestMirror } from './helpers/server.js';
import { PROJECT_ROOT, runCli } from './helpers/cli.js';
import { debianLikeSuites, writeAptSuite } from './helpers/apt-fixture.js';
import { EL9_BUILDS, el9Repos, writeYumRepos } from './helpers/yum-os-fixtures.js';
import { falcoctlProbeFile, tempDir } from './helpers/os-fixtures.js';
import { readLockfileText } from '../src/lockfile/lockfile.js';
import { probeFileOf } from '../src/graph/targets.js';

// Adding a distribution that uses apt or yum is one YAML file: this test
// writes two brand-new definitions that nothing in src/ knows about (Devuan 5,
// which ships Debian 12's kernels through its merged archive, and MIRACLE
// LINUX 9, a RHEL 9 rebuild) and resolves them with the real binary, as
// docs/ADDING-AN-OS.md describes.

let mirror: TestMirror;
let root: string;
let project: string;

const DEVUAN = `# Devuan 5 (daedalus): Debian 12's kernels, served by Devuan's merged archive.
id: devuan5
description: Devuan 5 (daedalus), amd64, plain and cloud kernels
type: apt
targetId: devuan
architectures: [x86_64]
minimumKernel: "4.14"
osRelease:
  PRETTY_NAME: Devuan GNU/Linux 5 (daedalus)
  NAME: Devuan GNU/Linux
  VERSION_ID: "5"
  VERSION: 5 (daedalus)
  VERSION_CODENAME: daedalus
  ID: devuan
  ID_LIKE: debian
repositories:
  - name: daedalus
    mirrors: [http://deb.devuan.org/merged]
    suite: daedalus
  - name: daedalus-security
    mirrors: [http://deb.devuan.org/merged]
    suite: daedalus-security
apt:
  headers:
    - flavour: amd64
      pattern: '^linux-headers-(?<release>[0-9]+\\.[0-9]+(?:\\.[0-9]+)?(?:-[0-9]+|\\+deb[0-9]+)-amd64)$'
    - flavour: cloud-amd64
      pattern: '^linux-headers-(?<release>[0-9]+\\.[0-9]+(?:\\.[0-9]+)?(?:-[0-9]+|\\+deb[0-9]+)-cloud-amd64)$'
  follow:
    - '^linux-headers-.*-common$'
    - '^linux-kbuild-.*$'
  followRoles: [common, kbuild]
  unameVersion: '#1 SMP PREEMPT_DYNAMIC Debian {version}'
  kernelVersion: '1'
`;

const MIRACLE = `# MIRACLE LINUX 9: a RHEL 9 rebuild; kernel-devel in AppStream, kernel-core in BaseOS.
id: miraclelinux9
description: MIRACLE LINUX 9, x86_64 and aarch64
type: yum
targetId: miraclelinux
architectures: [x86_64, aarch64]
minimumKernel: "4.14"
osRelease:
  NAME: MIRACLE LINUX
  VERSION: "9.4"
  ID: miraclelinux
  ID_LIKE: rhel fedora
  VERSION_ID: "9"
  PRETTY_NAME: MIRACLE LINUX 9.4
repositories:
  - name: appstream
    mirrors: [https://repo.dist.miraclelinux.net/miraclelinux/9-latest/AppStream/$basearch/os/]
  - name: baseos
    mirrors: [https://repo.dist.miraclelinux.net/miraclelinux/9-latest/BaseOS/$basearch/os/]
yum:
  devel: [kernel-devel]
  kernel: [kernel-core]
  unameVersion: '#1 SMP PREEMPT_DYNAMIC'
  kernelVersion: '1'
`;

before(async () => {
  root = await tempDir('new-os-mirror-');
  project = await tempDir('new-os-project-');
  for (const suite of debianLikeSuites()) {
    const name = suite.suite.replace('bookworm', 'daedalus');
    await writeAptSuite(join(root, 'merged'), { ...suite, suite: name, codename: name });
  }
  await writeYumRepos(root, el9Repos('miraclelinux/9-latest', EL9_BUILDS, { compression: 'xz', fillers: 10 }), ['x86_64', 'aarch64']);
  mirror = await startMirror({ root });
  await mkdir(join(project, 'kernels'));
  await writeFile(join(project, 'kernels', 'devuan5.yaml'), DEVUAN);
  await writeFile(join(project, 'kernels', 'miraclelinux9.yaml'), MIRACLE);
});

after(async () => {
  await mirror.close();
  await rm(root, { recursive: true, force: true });
  await rm(project, { recursive: true, force: true });
});

test('no code knows these distributions', async () => {
  // Code and its strings, not comments: src/naming/loader-names.ts lists in a comment which
  // distributions fall under the loaders' generic naming rule (Devuan among them), with no code for any.
  const printer = ts.createPrinter({ removeComments: true });
  const files = await fg('src/**/*.ts', { cwd: PROJECT_ROOT, absolute: true });
  assert.ok(files.length > 50, 'the sources are found');
  for (const file of files) {
    const source = ts.createSourceFile(file, await readFile(file, 'utf8'), ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
    const code = printer.printFile(source).toLowerCase();
    assert.ok(!code.includes('devuan') && !code.includes('miracle'), file);
  }
});

test('an apt distribution added as YAML resolves through the CLI', async () => {
  const r = await runCli(
    ['resolve', 'devuan5', '--mirror', `daedalus=${mirror.url}/merged`, '--mirror', `daedalus-security=${mirror.url}/merged`],
    { cwd: project, timeoutMs: 60_000 },
  );
  assert.equal(r.code, 0, r.stderr);
  const lock = readLockfileText(await readFile(join(project, 'kernels', 'devuan5.lock.yaml'), 'utf8'), 'devuan5.lock.yaml');
  // debianLikeSuites: ABIs 6.1.0-10, -11, -12 and 6.12.30+deb12 in two flavours (4.9 is too old).
  assert.deepEqual(lock.kernels.map((k) => k.release).sort(), [
    '6.1.0-10-amd64',
    '6.1.0-10-cloud-amd64',
    '6.1.0-11-amd64',
    '6.1.0-11-cloud-amd64',
    '6.1.0-12-amd64',
    '6.1.0-12-cloud-amd64',
    '6.12.30+deb12-amd64',
    '6.12.30+deb12-cloud-amd64',
  ]);
  const k = lock.kernels.find((x) => x.release === '6.1.0-11-amd64')!;
  assert.equal(probeFileOf(k), 'falco_devuan_6.1.0-11-amd64_1.o');
  assert.equal(probeFileOf(k), falcoctlProbeFile(lock.osRelease, k.release, k.version));
  assert.deepEqual(k.packages.map((p) => p.role).sort(), ['common', 'headers', 'kbuild']);
});

test('a yum distribution added as YAML resolves through the CLI', async () => {
  const r = await runCli(
    [
      'resolve',
      'miraclelinux9',
      '--mirror',
      `appstream=${mirror.url}/miraclelinux/9-latest/AppStream/$basearch/os/`,
      '--mirror',
      `baseos=${mirror.url}/miraclelinux/9-latest/BaseOS/$basearch/os/`,
    ],
    { cwd: project, timeoutMs: 60_000 },
  );
  assert.equal(r.code, 0, r.stderr);
  const lock = readLockfileText(await readFile(join(project, 'kernels', 'miraclelinux9.lock.yaml'), 'utf8'), 'miraclelinux9.lock.yaml');
  assert.equal(lock.kernels.length, 5);
  const k = lock.kernels.find((x) => x.release === '5.14.0-611.el9.aarch64')!;
  assert.equal(probeFileOf(k), 'falco_miraclelinux_5.14.0-611.el9.aarch64_1.o');
  assert.deepEqual(k.packages.map((p) => `${p.role} ${p.name} ${p.repository}`).sort(), [
    'devel kernel-devel appstream',
    'image kernel-core baseos',
  ]);
});
