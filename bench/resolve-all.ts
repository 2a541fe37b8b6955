// Benchmark: resolving every shipped source definition against loopback fixture
// mirrors of realistic size.
//
//   node --import tsx bench/resolve-all.ts [--scale 1] [--only ubuntu-jammy,cos]
//
// Builds, in a temporary folder, the fixture archives of test/helpers/*-os-fixtures.ts
// grown to the sizes of the real ones (--scale 1): Ubuntu's main indexes of tens of
// thousands of stanzas per suite with a few hundred kernels, Debian's main of about
// 64,000 stanzas per architecture, primary.xml documents of 1,500 (BaseOS) to 45,000
// (Fedora) packages, COS builds with headers tarballs of several megabytes. Then each
// definition is resolved in a child process of its own (its wall and CPU time, and its
// peak RSS read from /proc/self/status VmHWM), and all of them in one more child, in
// sequence, as `falco-probes resolve` does (total time and peak). COS is resolved with
// an empty memo (every tarball downloaded) and again with the memo filled.
// The servers run in this (parent) process, so their work is not counted.
// Prints a markdown table.

import { spawn } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { FixturePackage as AptPackage } from '../test/helpers/apt-fixture.js';
import { startMirror } from '../test/helpers/server.js';
import {
  copyShippedDefinition,
  createTestSigner,
  run,
  shippedRepositoryNames,
  tempDir,
  writeAptRepository,
  type AptCompression,
} from '../test/helpers/os-fixtures.js';
import {
  debianKernelPackages,
  ubuntuKernelPackages,
  ubuntuOverrides,
  debian13Overrides,
  type UbuntuKernel,
} from '../test/helpers/apt-os-fixtures.js';
import {
  el9Repos,
  fedoraRepos,
  oracle9Repos,
  writeAmazonLinux2023,
  writeYumRepos,
  type RpmBuild,
} from '../test/helpers/yum-os-fixtures.js';
import { fillerPackage, kernelBuild, repoHash, writeAmazonLinuxMirror, type AmazonLinuxRepoSpec } from '../test/helpers/yum-fixture.js';
import { cosBuildObjects, cosHeadersTarball, startCosBucket } from '../test/helpers/cos-fixture.js';

const SELF = fileURLToPath(import.meta.url);
const ALL = [
  'ubuntu-focal',
  'ubuntu-jammy',
  'ubuntu-noble',
  'debian12',
  'debian13',
  'centos-stream9',
  'rocky9',
  'almalinux9',
  'fedora44',
  'oraclelinux9',
  'amazonlinux2',
  'amazonlinux2023',
  'cos',
];

interface ChildResult {
  id: string;
  ms: number;
  cpuMs: number;
  kernels: number;
  /** VmHWM after this definition (the process's peak so far). */
  hwmMiB: number;
}

// --- child ---------------------------------------------------------------------------------
async function child(project: string, overridesFile: string, ids: string[], cacheDir: string): Promise<void> {
  const { readFile } = await import('node:fs/promises');
  const { loadSourceDefinition } = await import('../src/config/source-definition.js');
  const { resolveSource } = await import('../src/resolve/index.js');
  // Load (and let tsx transpile) every resolver before the clock starts.
  await Promise.all([import('../src/resolve/apt.js'), import('../src/resolve/yum.js'), import('../src/resolve/cos.js')]);
  const overrides = JSON.parse(await readFile(overridesFile, 'utf8')) as Record<string, Record<string, string[]>>;
  const hwm = async () => Number(/^VmHWM:\s+(\d+) kB$/m.exec(await readFile('/proc/self/status', 'utf8'))![1]) / 1024;
  const results: ChildResult[] = [];
  const startedAll = process.hrtime.bigint();
  const cpuAll = process.cpuUsage();
  for (const id of ids) {
    const source = await loadSourceDefinition(join(project, 'kernels', `${id}.yaml`), project);
    const cpu = process.cpuUsage();
    const started = process.hrtime.bigint();
    const lock = await resolveSource(source, {
      mirrorOverrides: new Map(Object.entries(overrides[id]!)),
      cacheDir,
      http: { idleTimeoutMs: 120_000 },
    });
    const used = process.cpuUsage(cpu);
    results.push({
      id,
      ms: Number(process.hrtime.bigint() - started) / 1e6,
      cpuMs: (used.user + used.system) / 1000,
      kernels: lock.kernels.length,
      hwmMiB: await hwm(),
    });
  }
  const used = process.cpuUsage(cpuAll);
  const total = { ms: Number(process.hrtime.bigint() - startedAll) / 1e6, cpuMs: (used.user + used.system) / 1000, hwmMiB: await hwm() };
  process.stdout.write(`${JSON.stringify({ results, total })}\n`);
}

function runChild(args: string[]): Promise<{ results: ChildResult[]; total: { ms: number; cpuMs: number; hwmMiB: number } }> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, ['--import', 'tsx', SELF, '--child', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), 30 * 60_000);
    c.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`child exited ${code}`));
      else resolve(JSON.parse(out.trim().split('\n').at(-1)!));
    });
  });
}

// --- realistic sizes ------------------------------------------------------------------------
let seed = 4242;
const rand = (n: number) => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed % n;
};
const SYL = 'ka lo mi ne su ra te vo pi zu de fa go hi ju ly mo nu qu ri so ta vu wy xe ze bo ce'.split(' ');
const word = () => SYL[rand(SYL.length)]! + SYL[rand(SYL.length)]! + (rand(2) ? SYL[rand(SYL.length)]! : '');
const sentence = (n: number) => Array.from({ length: n }, word).join(' ');

/** An ordinary package stanza of about a kilobyte, as in Ubuntu's and Debian's main. */
function aptFiller(i: number, tag: string): AptPackage {
  const name = `${word()}${tag}${i}`;
  return {
    name,
    version: `${1 + (i % 9)}.${i % 31}.${i % 7}-${1 + (i % 5)}`,
    depends: `libc6 (>= 2.34), lib${word()}${i % 97} (>= ${i % 5}.${i % 11}), ${word()}-common (= ${1 + (i % 9)}.${i % 31})`,
    fields: {
      Source: `${word()}-src`,
      Homepage: `https://${word()}.example.org/`,
      'Original-Maintainer': `${word()} ${word()} <${word()}@example.org>`,
      Description: `${sentence(6)}\n ${sentence(12)}\n ${sentence(12)}\n .\n ${sentence(10)}`,
      'Description-md5': (i * 2654435761).toString(16).padStart(32, '0').slice(0, 32),
      Task: `${word()}-server, ${word()}-desktop`,
    },
  };
}

const fast = async (data: Buffer, format: AptCompression) =>
  format === 'xz'
    ? run('xz', ['-c', '-1', '-T0'], { input: data, timeoutMs: 600_000 })
    : run('gzip', ['-c', '-1', '-n'], { input: data, timeoutMs: 600_000 });

function ubuntuKernels(scale: number, pocket: 'release' | 'updates' | 'security', arch: string): UbuntuKernel[] {
  const n = (k: number) => Math.max(1, Math.round(k * scale));
  const a = [arch];
  if (pocket === 'release')
    return (['generic', 'aws', 'gcp', 'gke', 'azure'] as const)
      .filter((f) => f !== 'gke' || arch === 'amd64')
      .map((f, j) => ({
        abi: `5.15.0-${f === 'generic' ? 25 : 1002 + j}`,
        flavour: f,
        version: `5.15.0-${f === 'generic' ? 25 : 1002 + j}.${3 + j}`,
        source: f === 'generic' ? 'linux' : `linux-${f}`,
        arches: a,
      }));
  const out: UbuntuKernel[] = [];
  const count = pocket === 'updates' ? 1 : 0.5;
  for (let i = 0; i < n(60 * count); i++)
    out.push({
      abi: `5.15.0-${30 + i * 2}`,
      flavour: 'generic',
      version: `5.15.0-${30 + i * 2}.${33 + i * 2}`,
      source: 'linux',
      arches: a,
    });
  for (let i = 0; i < n(30 * count); i++)
    out.push({
      abi: `6.8.0-${40 + i}`,
      flavour: 'generic',
      version: `6.8.0-${40 + i}.${40 + i}~22.04.1`,
      source: 'linux-hwe-6.8',
      arches: a,
    });
  for (const [f, k] of [
    ['aws', 50],
    ['gcp', 50],
    ['azure', 50],
    ['gke', 30],
  ] as const) {
    if (f === 'gke' && arch !== 'amd64') continue;
    for (let i = 0; i < n(k * count); i++)
      out.push({ abi: `5.15.0-${1010 + i}`, flavour: f, version: `5.15.0-${1010 + i}.${14 + i}`, source: `linux-${f}`, arches: a });
  }
  return out;
}

async function writeUbuntu(
  root: string,
  code: string,
  scale: number,
  signer: Awaited<ReturnType<typeof createTestSigner>>,
): Promise<number> {
  let stanzas = 0;
  const fillers = { release: 6000, updates: 30000, security: 20000 } as const;
  for (const [folder, arch] of [
    ['ubuntu', 'amd64'],
    ['ubuntu-ports', 'arm64'],
  ] as const) {
    for (const pocket of ['release', 'updates', 'security'] as const) {
      const packages = [
        ...Array.from({ length: Math.round(fillers[pocket] * scale) }, (_, i) => aptFiller(i, `${pocket[0]}`)),
        ...ubuntuKernels(scale, pocket, arch).flatMap((k) => ubuntuKernelPackages(k, arch)),
      ];
      stanzas += packages.length;
      const suite = pocket === 'release' ? code : `${code}-${pocket}`;
      await writeAptRepository(join(root, folder), {
        suite,
        origin: 'Ubuntu',
        arches: { [arch]: packages },
        signer,
        compressor: fast,
        writePool: false,
      });
    }
  }
  return stanzas;
}

async function writeDebian(
  root: string,
  codename: 'bookworm' | 'trixie',
  arches: string[],
  scale: number,
  signer: Awaited<ReturnType<typeof createTestSigner>>,
): Promise<number> {
  let stanzas = 0;
  for (const pocket of ['main', 'security'] as const) {
    const perArch: Record<string, AptPackage[]> = {};
    for (const arch of arches) {
      const abis = Array.from({ length: pocket === 'main' ? 4 : 10 }, (_, i) =>
        codename === 'trixie'
          ? { abi: `6.12.${30 + i}+deb13`, version: `6.12.${30 + i}-1` }
          : { abi: `6.1.0-${40 + i}`, version: `6.1.${150 + i}-1` },
      );
      perArch[arch] = [
        ...Array.from({ length: Math.round((pocket === 'main' ? 64000 : 2500) * scale) }, (_, i) => aptFiller(i, pocket[0]!)),
        ...abis.flatMap((a) => debianKernelPackages({ ...a, arches }, arch)),
      ];
      stanzas += perArch[arch]!.length;
    }
    const suite = pocket === 'main' ? codename : `${codename}-security`;
    await writeAptRepository(join(root, pocket === 'main' ? 'debian' : 'debian-security'), {
      suite,
      origin: 'Debian',
      arches: perArch,
      signer,
      compressor: fast,
      writePool: false,
    });
  }
  return stanzas;
}

function builds(n: number, release: (i: number) => string): RpmBuild[] {
  return Array.from({ length: n }, (_, i) => ({ version: '5.14.0', release: release(i), arches: ['x86_64', 'aarch64'] }));
}

// --- parent --------------------------------------------------------------------------------
async function main(): Promise<void> {
  const { values } = parseArgs({ options: { scale: { type: 'string', default: '1' }, only: { type: 'string' } } });
  const scale = Number(values.scale);
  const ids = values.only ? values.only.split(',') : ALL;
  const root = await tempDir('bench-all-mirror-');
  const project = await tempDir('bench-all-project-');
  const signer = await createTestSigner();
  const mirror = await startMirror({ root });
  const counts: Record<string, string> = {};
  const t0 = Date.now();
  const load0 = (await import('node:os')).loadavg()[0]!.toFixed(1);
  const arches = ['x86_64', 'aarch64'];
  try {
    // apt
    for (const code of ['focal', 'jammy', 'noble'])
      if (ids.includes(`ubuntu-${code}`)) counts[`ubuntu-${code}`] = `${await writeUbuntu(root, code, scale, signer)} stanzas`;
    if (ids.includes('debian12')) counts['debian12'] = `${await writeDebian(root, 'bookworm', ['amd64'], scale, signer)} stanzas`;
    if (ids.includes('debian13')) counts['debian13'] = `${await writeDebian(root, 'trixie', ['amd64', 'arm64'], scale, signer)} stanzas`;
    // yum
    const n = (k: number) => Math.max(1, Math.round(k * scale));
    const yum: [string, () => Promise<void>, number][] = [
      [
        'centos-stream9',
        () =>
          writeYumRepos(
            root,
            el9Repos(
              '9-stream',
              builds(n(250), (i) => `${100 + i * 2}.el9`),
              { compression: 'xz', fillers: n(5000) },
            ),
            arches,
          ),
        2 * n(5000),
      ],
      [
        'rocky9',
        () =>
          writeYumRepos(
            root,
            el9Repos(
              'pub/rocky/9',
              builds(n(60), (i) => `${362 + i}.8.1.el9_3`),
              { compression: 'gz', fillers: n(5000) },
            ),
            arches,
          ),
        2 * n(5000),
      ],
      [
        'almalinux9',
        () =>
          writeYumRepos(
            root,
            el9Repos(
              'almalinux/9',
              builds(n(60), (i) => `${362 + i}.8.1.el9_3`),
              { compression: 'gz', fillers: n(5000) },
            ),
            arches,
          ),
        2 * n(5000),
      ],
      ['fedora44', () => writeYumRepos(root, fedoraRepos(44, { fillers: n(45000) }), arches), 2 * n(45000)],
      ['oraclelinux9', () => writeYumRepos(root, oracle9Repos({ fillers: n(4000) }), arches), 3 * n(4000)],
    ];
    for (const [id, write, packages] of yum)
      if (ids.includes(id)) {
        await write();
        counts[id] = `${packages} packages per arch`;
      }
    let al2023Base = '';
    if (ids.includes('amazonlinux2023')) {
      al2023Base = (await writeAmazonLinux2023(root, mirror.url, arches, { fillers: n(15000) })).base;
      counts['amazonlinux2023'] = `${n(15000)} packages per arch`;
    }
    const al2Specs: AmazonLinuxRepoSpec[] = [
      {
        path: '2/core/2.0',
        compression: 'gz',
        packages: (arch, depth) => [
          ...Array.from({ length: n(10000) }, (_, i) => fillerPackage(i, arch, depth)),
          ...Array.from({ length: n(120) }, (_, i) => kernelBuild(`4.14.${200 + i}`, `${150 + i}.${300 + i}.amzn2`, arch, depth)).flat(),
        ],
      },
      ...['5.4', '5.10', '5.15'].map(
        (v): AmazonLinuxRepoSpec => ({
          path: `2/extras/kernel-${v}/latest`,
          compression: 'gz',
          packages: (arch, depth) => [
            ...Array.from({ length: n(200) }, (_, i) => fillerPackage(i, arch, depth)),
            ...Array.from({ length: n(60) }, (_, i) => kernelBuild(`${v}.${100 + i}`, `${100 + i}.${200 + i}.amzn2`, arch, depth)).flat(),
          ],
        }),
      ),
    ];
    if (ids.includes('amazonlinux2')) {
      await writeAmazonLinuxMirror(root, mirror.url, al2Specs, arches);
      counts['amazonlinux2'] = `${n(10000)} + 3 x ${n(200)} packages per arch`;
    }
    // COS: four milestones, n(6) builds each, every second build a new kernel; headers tarballs
    // of ~10,000 files (the size of a kernel's header tree).
    const cosObjects = new Map<string, Buffer>();
    let cosBytes = 0;
    if (ids.includes('cos')) {
      for (const [milestone, build] of [
        [117, 18613],
        [121, 18867],
        [125, 19216],
        [129, 19506],
      ] as const) {
        for (let i = 0; i < n(6); i++) {
          const release = `6.${milestone - 110}.${10 + Math.floor(i / 2)}+`;
          const tgz = await cosHeadersTarball({
            release,
            version: `#1 SMP PREEMPT_DYNAMIC Mon Jan  ${1 + (i >> 1)} 00:00:00 UTC 2026`,
            fillers: n(10000),
            fillerBytes: 3000,
            mtime: new Date(Date.UTC(2026, 0, 1 + i)),
          });
          cosBytes += tgz.length;
          for (const [name, data] of cosBuildObjects(`${build}.${100 + i}.${i + 1}`, tgz)) cosObjects.set(name, data);
        }
      }
      counts['cos'] = `${cosObjects.size / 5} builds, ${(cosBytes / 1e6).toFixed(0)} MB of headers tarballs`;
    }
    const bucket = await startCosBucket({ objects: cosObjects });
    const fixtureSeconds = (Date.now() - t0) / 1000;
    process.stderr.write(`fixtures written in ${fixtureSeconds.toFixed(0)} s\n`);

    // The project: the shipped definitions, keyrings pointed at the fixture's key.
    const overrides: Record<string, Record<string, string[]>> = {};
    for (const id of ids) {
      await copyShippedDefinition(id, project, signer.keyring);
      const names = await shippedRepositoryNames(id);
      const base = (path: string) => [`${mirror.url}/${path}`];
      if (id.startsWith('ubuntu-')) overrides[id] = Object.fromEntries(ubuntuOverrides(names, mirror.url));
      else if (id === 'debian13') overrides[id] = Object.fromEntries(debian13Overrides(mirror.url));
      else if (id === 'debian12') overrides[id] = { bookworm: base('debian'), 'bookworm-security': base('debian-security') };
      else if (id === 'centos-stream9')
        overrides[id] = { appstream: base('9-stream/AppStream/$basearch/os/'), baseos: base('9-stream/BaseOS/$basearch/os/') };
      else if (id === 'rocky9')
        overrides[id] = { appstream: base('pub/rocky/9/AppStream/$basearch/os/'), baseos: base('pub/rocky/9/BaseOS/$basearch/os/') };
      else if (id === 'almalinux9')
        overrides[id] = { appstream: base('almalinux/9/AppStream/$basearch/os/'), baseos: base('almalinux/9/BaseOS/$basearch/os/') };
      else if (id === 'fedora44')
        overrides[id] = {
          fedora: base('fedora/linux/releases/44/Everything/$basearch/os/'),
          updates: base('fedora/linux/updates/44/Everything/$basearch/'),
        };
      else if (id === 'oraclelinux9')
        overrides[id] = {
          'ol9-appstream': base('repo/OracleLinux/OL9/appstream/$basearch/'),
          'ol9-baseos': base('repo/OracleLinux/OL9/baseos/latest/$basearch/'),
          'ol9-uekr7': base('repo/OracleLinux/OL9/UEKR7/$basearch/'),
        };
      else if (id === 'amazonlinux2023') overrides[id] = { amazonlinux: base(al2023Base) };
      else if (id === 'amazonlinux2')
        overrides[id] = Object.fromEntries(
          names.map((name, i) => [name, base(`${al2Specs[i]!.path}/$basearch/${repoHash(al2Specs[i]!.path, 'all')}/`)]),
        );
      else if (id === 'cos') overrides[id] = { 'cos-tools': [bucket.headersBase], 'cos-tools-listing': [bucket.listingBase] };
    }
    const overridesFile = join(project, 'overrides.json');
    await writeFile(overridesFile, JSON.stringify(overrides));
    const cache = join(project, 'cache');
    await mkdir(cache);

    const rows: string[] = [];
    for (const id of ids) {
      const r = await runChild([project, overridesFile, id, join(cache, `one-${id}`)]);
      const x = r.results[0]!;
      rows.push(`| ${id} | ${counts[id] ?? ''} | ${x.kernels} | ${x.ms.toFixed(0)} | ${x.cpuMs.toFixed(0)} | ${x.hwmMiB.toFixed(0)} |`);
    }
    const all = await runChild([project, overridesFile, ids.join(','), join(cache, 'all')]);
    let warm = '';
    if (ids.includes('cos')) {
      const w = await runChild([project, overridesFile, 'cos', join(cache, 'all')]);
      warm = `| cos, memo filled (no tarball downloaded) | | ${w.results[0]!.kernels} | ${w.results[0]!.ms.toFixed(0)} | ${w.results[0]!.cpuMs.toFixed(0)} | ${w.results[0]!.hwmMiB.toFixed(0)} |`;
    }
    const out = [
      `Scale ${scale}; fixtures written in ${fixtureSeconds.toFixed(0)} s (not timed); load average before: ${load0}, after: ${(await import('node:os')).loadavg()[0]!.toFixed(1)}.`,
      '',
      '| definition | fixture | kernels | wall (ms) | CPU (ms) | peak RSS (MiB) |',
      '| --- | --- | ---: | ---: | ---: | ---: |',
      ...rows,
      ...(warm ? [warm] : []),
      `| **all, in one process, in sequence** | | ${all.results.reduce((s, r) => s + r.kernels, 0)} | ${all.total.ms.toFixed(0)} | ${all.total.cpuMs.toFixed(0)} | ${all.total.hwmMiB.toFixed(0)} |`,
    ];
    process.stdout.write(`${out.join('\n')}\n`);
    await bucket.close();
  } finally {
    await mirror.close();
    await signer.close();
    await rm(root, { recursive: true, force: true });
    await rm(project, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--child') {
  const [project, overridesFile, ids, cacheDir] = process.argv.slice(3) as [string, string, string, string];
  await child(project, overridesFile, ids.split(','), cacheDir);
} else {
  await main();
}
