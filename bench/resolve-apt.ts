// Benchmark of the apt resolver on a Debian-main-sized index.
//
//   node --import tsx bench/resolve-apt.ts [--stanzas 60000] [--runs 3]
//   node --import tsx bench/resolve-apt.ts --xz [--stanzas 63000] [--runs 5] [--packages FILE]
//   (BENCH_NODE_FLAGS="--cpu-prof --cpu-prof-dir=DIR" profiles the resolving child)
//
// Builds a synthetic gzip-compressed Packages index (60,000 stanzas with the
// fields and sizes of Debian's, a few hundred of them kernel headers, common
// and kbuild packages), serves it on loopback, and compares the resolve time
// with `zcat` of the same file in the same run. Each resolve runs in a child
// process that reports its own time and peak RSS (VmHWM).
// Prints a markdown table.
//
// --xz: the index Debian's mirrors actually serve first, Packages.xz (`xz -6`),
// of 63,000 stanzas by default (bookworm main amd64 has about 63,000: 50.1 MB
// plain, 8.8 MB xz); the reference is `xz -dc` of the same file. With
// --packages FILE (a plain Packages index, or one compressed with .xz, .gz or
// .lz4, such as apt's own copy of bookworm's under /var/lib/apt/lists/) that
// real index is served instead of the synthetic one, its kernel packages as
// they are.

import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SELF = fileURLToPath(import.meta.url);

interface ChildReport {
  resolveMs: number;
  /** CPU time (user + system, all threads) of the resolve. */
  resolveCpuMs: number;
  /** The same for a second resolve in the same process (JIT warm). */
  warmMs: number;
  warmCpuMs: number;
  /** Peak RSS after the first resolve. */
  maxRssMiB: number;
  kernels: number;
}

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

// --- child: resolve once, report time and peak RSS ---------------------------------------
async function child(projectDir: string, mirrorUrl: string): Promise<void> {
  const { loadSourceDefinition } = await import('../src/config/source-definition.js');
  const { resolveSource } = await import('../src/resolve/index.js');
  // Load (and let tsx transpile) the resolver's modules before the clock starts: the figure is the
  // resolve's work, not TypeScript compilation, which a built distribution would not do.
  await import('../src/resolve/apt.js');
  await import('node:zlib');
  const source = await loadSourceDefinition(join(projectDir, 'kernels', 'benchapt.yaml'), projectDir);
  // CPU of child processes that have exited (the `xz -dc` the xz path runs), from /proc/self/stat: cutime + cstime, in clock ticks of 10 ms.
  const childCpuMs = async () => {
    const fields = (await readFile('/proc/self/stat', 'utf8')).replace(/^.*\) /, '').split(' ');
    return (Number(fields[13]) + Number(fields[14])) * 10;
  };
  const once = async () => {
    const cpu = process.cpuUsage();
    const children = await childCpuMs();
    const started = process.hrtime.bigint();
    const lock = await resolveSource(source, { mirrorOverrides: new Map([['bench', [mirrorUrl]]]) });
    const used = process.cpuUsage(cpu);
    return {
      ms: Number(process.hrtime.bigint() - started) / 1e6,
      cpuMs: (used.user + used.system) / 1000 + ((await childCpuMs()) - children),
      kernels: lock.kernels.length,
    };
  };
  const first = await once();
  // VmHWM, not resourceUsage().maxRSS: Linux keeps the latter's high-water mark across fork and exec, so it would count this bench's own memory.
  const hwm = /^VmHWM:\s+(\d+) kB/m.exec(await readFile('/proc/self/status', 'utf8'));
  const maxRssMiB = hwm ? Number(hwm[1]) / 1024 : process.resourceUsage().maxRSS / 1024;
  // A second resolve in the same process: the same work with the JIT warmed up.
  const second = await once();
  const report: ChildReport = {
    resolveMs: first.ms,
    resolveCpuMs: first.cpuMs,
    warmMs: second.ms,
    warmCpuMs: second.cpuMs,
    maxRssMiB,
    kernels: first.kernels,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

// --- the synthetic index ------------------------------------------------------------------
function hex(seed: string, n = 64): string {
  let out = '';
  for (let i = 0; out.length < n; i++) out += createHash('sha256').update(`${seed}/${i}`).digest('hex');
  return out.slice(0, n);
}

// A vocabulary of a few hundred made-up words, picked pseudo-randomly, so that the index
// compresses about as well as Debian's (about 4:1 with gzip), not far better.
const SYLLABLES = 'ka lo mi ne su ra te vo pi zu de fa go hi ju ly mo nu qu ri so ta vu wy xe ze bo ce'.split(' ');
const WORDS: string[] = [];
for (let i = 0; i < 600; i++) WORDS.push(SYLLABLES[i % 29]! + SYLLABLES[(i * 7 + 3) % 29]! + (i % 3 ? SYLLABLES[(i * 13 + 5) % 29]! : ''));
let seed = 12345;
const rand = (n: number) => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed % n;
};

function description(i: number): string {
  const lines = [`${WORDS[rand(600)]} ${WORDS[rand(600)]} package number ${i}`];
  const n = 1 + rand(5);
  for (let l = 0; l < n; l++) {
    const words: string[] = [];
    for (let w = 0; w < 10; w++) words.push(WORDS[rand(600)]!);
    lines.push(` ${words.join(' ')}.`);
    if (l === 1) lines.push(' .');
  }
  return lines.join('\n');
}

function stanza(name: string, version: string, arch: string, depends: string, i: number, section: string): string {
  const size = 10_000 + ((i * 7919) % 5_000_000);
  const dir = name.startsWith('lib') ? name.slice(0, 4) : name[0];
  return [
    `Package: ${name}`,
    `Source: ${name.replace(/[0-9.]+$/, '')}`,
    `Version: ${version}`,
    `Installed-Size: ${Math.floor(size / 300)}`,
    'Maintainer: Debian Example Maintainers <pkg-example@lists.example.org>',
    `Architecture: ${arch}`,
    ...(depends ? [`Depends: ${depends}`] : []),
    ...(i % 5 === 0 ? [`Recommends: ${WORDS[rand(600)]}-common, lib${WORDS[rand(600)]}${i % 100}`] : []),
    ...(i % 11 === 0 ? [`Breaks: old-${name} (<< ${version})`, `Replaces: old-${name} (<< ${version})`] : []),
    `Description: ${description(i)}`,
    'Homepage: https://www.example.org/projects/example',
    `Description-md5: ${hex(`md5${i}`, 32)}`,
    ...(i % 2 === 0 ? [`Tag: devel::library, implemented-in::c, role::devel-lib, suite::${WORDS[rand(600)]}`] : []),
    `Section: ${section}`,
    'Priority: optional',
    `Filename: pool/main/${dir}/${name}/${name}_${version.replace(/^\d+:/, '')}_${arch}.deb`,
    `Size: ${size}`,
    `MD5sum: ${hex(`m${i}`, 32)}`,
    `SHA256: ${hex(`s${i}`)}`,
  ].join('\n');
}

/** `total` stanzas: filler packages and, spread among them, kernel packages of 100 ABIs in 3 flavours. */
function packagesText(total: number): { text: string; kernelPackages: number } {
  const stanzas: string[] = [];
  const kernel: string[] = [];
  for (let abi = 1; abi <= 100; abi++) {
    const version = `6.1.${100 + abi}-1`;
    const a = `6.1.0-${abi}`;
    kernel.push(stanza(`linux-headers-${a}-common`, version, 'all', '', abi, 'kernel'));
    kernel.push(stanza(`linux-headers-${a}-common-rt`, version, 'all', '', abi, 'kernel'));
    for (const f of ['amd64', 'cloud-amd64', 'rt-amd64']) {
      const common = f === 'rt-amd64' ? `${a}-common-rt` : `${a}-common`;
      kernel.push(
        stanza(
          `linux-headers-${a}-${f}`,
          version,
          'amd64',
          `linux-headers-${common} (= ${version}), linux-kbuild-6.1 (>= ${version}), linux-compiler-gcc-12-x86`,
          abi,
          'kernel',
        ),
      );
      kernel.push(
        stanza(
          `linux-image-${a}-${f}`,
          version,
          'amd64',
          'kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool',
          abi,
          'kernel',
        ),
      );
    }
  }
  kernel.push(stanza('linux-kbuild-6.1', '6.1.200-1', 'amd64', 'libc6 (>= 2.34), libelf1 (>= 0.142), libssl3 (>= 3.0.0)', 0, 'kernel'));
  const every = Math.floor(total / kernel.length);
  let k = 0;
  for (let i = 0; stanzas.length < total; i++) {
    if (k < kernel.length && i % every === 0) stanzas.push(kernel[k++]!);
    else
      stanzas.push(
        stanza(
          `libexample${i}`,
          `${1 + (i % 7)}.${i % 40}.${i % 13}-${1 + (i % 4)}`,
          i % 6 === 0 ? 'all' : 'amd64',
          `libc6 (>= 2.34), libexample${(i * 31) % 1000} (>= 1.0), zlib1g (>= 1:1.2.0)`,
          i,
          'libs',
        ),
      );
  }
  return { text: `${stanzas.join('\n\n')}\n`, kernelPackages: k };
}

const DEFINITION = `id: benchapt
type: apt
targetId: debian
architectures: [x86_64]
minimumKernel: "4.14"
osRelease:
  ID: debian
repositories:
  - name: bench
    mirrors: [http://127.0.0.1:9/unused]
    suite: bookworm
    components: [main]
apt:
  headers:
    - flavour: amd64
      pattern: '^linux-headers-(?<release>[0-9]+\\.[0-9]+(?:\\.[0-9]+)?(?:-[0-9]+|\\+deb[0-9]+)-amd64)$'
    - flavour: cloud-amd64
      pattern: '^linux-headers-(?<release>[0-9]+\\.[0-9]+(?:\\.[0-9]+)?(?:-[0-9]+|\\+deb[0-9]+)-cloud-amd64)$'
    - flavour: rt-amd64
      pattern: '^linux-headers-(?<release>[0-9]+\\.[0-9]+(?:\\.[0-9]+)?(?:-[0-9]+|\\+deb[0-9]+)-rt-amd64)$'
  follow: ['^linux-headers-.*-common(?:-rt)?$', '^linux-kbuild-.*$']
  followRoles: [common, kbuild]
  unameVersion: '#1 SMP PREEMPT_DYNAMIC Debian {version}'
  kernelVersion: '1'
  image: ['linux-image-{release} | linux-image-{release}-unsigned']
`;

/** Wall and CPU time of `zcat FILE > /dev/null` (or `xz -dc`; CPU from bash's `times`, which reports its children). */
function timeZcat(file: string, tool = 'zcat'): { wallMs: number; cpuMs: number } {
  const started = process.hrtime.bigint();
  const r = spawnSync('bash', ['-c', `${tool} "$1" > /dev/null && times`, 'bash', file], {
    stdio: ['ignore', 'pipe', 'inherit'],
    timeout: 300_000,
  });
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
  if (r.status !== 0) throw new Error(`${tool} failed`);
  // `times` prints two lines: the shell's own user/sys, then its children's.
  const children = r.stdout.toString().trim().split('\n')[1] ?? '';
  const secs = [...children.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60 + Number(m[2]));
  return { wallMs, cpuMs: (secs[0]! + secs[1]!) * 1000 };
}

function runChild(projectDir: string, mirrorUrl: string): Promise<ChildReport & { wallMs: number }> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const c = spawn(
      process.execPath,
      [...(process.env['BENCH_NODE_FLAGS'] ?? '').split(' ').filter(Boolean), '--import', 'tsx', SELF, '--child', projectDir, mirrorUrl],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), 300_000);
    c.on('error', reject);
    c.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`resolve child exited ${code}`));
      resolve({ ...(JSON.parse(out) as ChildReport), wallMs: Number(process.hrtime.bigint() - started) / 1e6 });
    });
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** A Packages file from disk, decompressed by its name (.xz, .gz, .lz4 or plain). */
function readPackagesFile(file: string): Buffer {
  const tool = file.endsWith('.xz')
    ? ['xz', '-dc']
    : file.endsWith('.gz')
      ? ['gzip', '-dc']
      : file.endsWith('.lz4')
        ? ['lz4', '-dc']
        : ['cat'];
  const r = spawnSync(tool[0]!, [...tool.slice(1), file], { maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`${tool.join(' ')} ${file} failed`);
  return r.stdout;
}

const countStanzas = (plain: Buffer) =>
  plain
    .toString('latin1')
    .split('\n\n')
    .filter((s) => s.trim()).length;

async function main(): Promise<void> {
  const xz = process.argv.includes('--xz');
  const real = process.argv.includes('--packages') ? process.argv[process.argv.indexOf('--packages') + 1]! : undefined;
  const total = arg('--stanzas', xz ? 63_000 : 60_000);
  const runs = arg('--runs', 3);
  const dir = await mkdtemp(join(tmpdir(), 'falco-probes-bench-apt-'));
  const { startMirror } = await import('../test/helpers/server.js');
  const mirror = await startMirror({ root: join(dir, 'mirror') });
  try {
    const synthetic = real === undefined ? packagesText(total) : undefined;
    const plain = synthetic ? Buffer.from(synthetic.text, 'latin1') : readPackagesFile(real!);
    const stanzas = synthetic ? total : countStanzas(plain);
    const kernelPackages = synthetic
      ? synthetic.kernelPackages
      : (plain.toString('latin1').match(/^Package: linux-(?:headers|kbuild|image)-/gm) ?? []).length;
    const name = xz ? 'Packages.xz' : 'Packages.gz';
    const gz = xz
      ? spawnSync('xz', ['-6', '-c'], { input: plain, maxBuffer: 1 << 30 }).stdout
      : spawnSync('gzip', ['-9', '-n', '-c'], { input: plain, maxBuffer: 1 << 30 }).stdout;
    const dist = join(dir, 'mirror', 'dists', 'bookworm');
    await mkdir(join(dist, 'main', 'binary-amd64'), { recursive: true });
    const gzFile = join(dist, 'main', 'binary-amd64', name);
    await writeFile(gzFile, gz);
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    await writeFile(
      join(dist, 'InRelease'),
      `Suite: bookworm\nCodename: bookworm\nSHA256:\n ${sha(plain)} ${plain.length} main/binary-amd64/Packages\n ${sha(gz)} ${gz.length} main/binary-amd64/${name}\n`,
    );
    await mkdir(join(dir, 'kernels'));
    await writeFile(join(dir, 'kernels', 'benchapt.yaml'), DEFINITION);

    const zcat: { wallMs: number; cpuMs: number }[] = [];
    const resolves: (ChildReport & { wallMs: number })[] = [];
    const tool = xz ? 'xz -dc' : 'zcat';
    timeZcat(gzFile, tool); // warm the page cache
    for (let i = 0; i < runs; i++) {
      zcat.push(timeZcat(gzFile, tool));
      resolves.push(await runChild(dir, mirror.url));
    }
    const z = median(zcat.map((x) => x.wallMs));
    const zc = median(zcat.map((x) => x.cpuMs));
    const r = median(resolves.map((x) => x.resolveMs));
    const rc = median(resolves.map((x) => x.resolveCpuMs));
    const w = median(resolves.map((x) => x.warmMs));
    const wc = median(resolves.map((x) => x.warmCpuMs));
    const wall = median(resolves.map((x) => x.wallMs));
    const rss = Math.max(...resolves.map((x) => x.maxRssMiB));
    const mib = (n: number) => (n / 1024 / 1024).toFixed(1);
    const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}x`;
    process.stdout.write(
      [
        `${name} ${mib(gz.length)} MiB (${mib(plain.length)} MiB plain), ${stanzas} stanzas${real ? ` (${real})` : ''}, ${kernelPackages} kernel packages, ${resolves[0]!.kernels} kernels.`,
        '',
        `| | wall (ms) | / ${tool} | CPU (ms) | / ${tool} |`,
        `| --- | ---: | ---: | ---: | ---: |`,
        `| ${tool} | ${z.toFixed(0)} | 1x | ${zc.toFixed(0)} | 1x |`,
        `| resolve, first in a fresh process | ${r.toFixed(0)} | ${ratio(r, z)} | ${rc.toFixed(0)} | ${ratio(rc, zc)} |`,
        `| resolve, second in the same process | ${w.toFixed(0)} | ${ratio(w, z)} | ${wc.toFixed(0)} | ${ratio(wc, zc)} |`,
        `| whole child process (Node + tsx start-up, two resolves) | ${wall.toFixed(0)} | | | |`,
        '',
        `Peak RSS of the resolving process after the first resolve: ${rss.toFixed(0)} MiB.`,
        '',
        `Median of ${runs} runs, ${tool} and resolve alternating. resolve = resolveSource() (HTTP over loopback, SHA256, ${xz ? 'xz' : 'gunzip'}, parse,`,
        `checks, selection), timed after its modules are loaded; its CPU time counts every thread of the process and the`,
        `child processes it ran (the system's \`xz -dc\` on the xz path).`,
        '',
      ].join('\n'),
    );
  } finally {
    await mirror.close();
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--child') await child(process.argv[3]!, process.argv[4]!);
else await main();
