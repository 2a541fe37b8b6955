// Benchmark of `falco-probes generate` on a large fleet.
//
//   node --import tsx bench/generate.ts [--kernels 10000] [--oses 4] [--runs 3]
//   node --import tsx bench/generate.ts --write-project DIR [--kernels N]   (only write the project)
//
// Writes a temporary project with --kernels kernels (3 packages each, like
// Debian's headers/common/kbuild) spread over --oses lockfiles, and two
// drivers that both apply to every kernel (the local example driver and a
// pinned tarball), so 2 x kernels targets. Measures, in the same run:
//   - `cat` of the lockfiles (the floor: reading the bytes),
//   - generate from scratch (no probes/, generated/ or stamps),
//   - generate again with nothing changed (must write 0 files and 0 stamps),
//   - JSON.parse of the same data written as JSON (the floor for turning the
//     text into objects in this JavaScript engine; a CPU-bound yardstick that
//     slows down with the machine as generate does),
//   - `node -e 0`, Node's own start (part of the whole command; it includes
//     reading NODE_EXTRA_CA_CERTS when that is set, which the output says),
// each in a child process that reports the time of generate() itself (its
// modules loaded before the clock starts, as a built tool would have them)
// and its peak RSS, and the wall time of the whole `falco-probes generate`
// command (node start and TypeScript loading included). Prints a markdown table.

import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { extraCaCertsLine } from './lib.js';

const SELF = fileURLToPath(import.meta.url);
const BIN = fileURLToPath(new URL('../bin/falco-probes.js', import.meta.url));

interface ChildReport {
  ms: number;
  /** CPU time (user + system) of generate(). */
  cpuMs: number;
  maxRssMiB: number;
  targets: number;
  filesWritten: number;
  /** Make key stamps created or removed (0 without a repository). */
  stampsTouched: number;
}

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

// --- child: generate once, report time and peak RSS ---------------------------------------
async function child(root: string): Promise<void> {
  const { generate } = await import('../src/generate/generate.js');
  await import('../src/repository/index-file.js');
  const cpu = process.cpuUsage();
  const started = process.hrtime.bigint();
  const result = await generate(root);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  const used = process.cpuUsage(cpu);
  const report: ChildReport = {
    ms,
    cpuMs: (used.user + used.system) / 1000,
    maxRssMiB: process.resourceUsage().maxRSS / 1024,
    targets: result.graph.targets.length,
    filesWritten: result.files.filter((f) => f.change !== 'unchanged').length,
    stampsTouched: (result.stamps?.created ?? 0) + (result.stamps?.removed ?? 0),
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

// --- the synthetic project ----------------------------------------------------------------
async function writeProject(root: string, kernels: number, oses: number): Promise<string[]> {
  const asJson: unknown[] = [];
  const { serializeLockfile } = await import('../src/lockfile/lockfile.js');
  const { sha256Hex } = await import('../src/util/hash.js');
  await mkdir(join(root, 'kernels'), { recursive: true });
  await mkdir(join(root, 'drivers', 'example'), { recursive: true });
  await writeFile(join(root, 'drivers', 'example', 'Makefile'), 'always-y += probe.o\n');
  await writeFile(join(root, 'drivers', 'example', 'probe.c'), '/* probe */\n');
  await writeFile(
    join(root, 'kernels', 'drivers.yaml'),
    `builder:
  kind: host
  clang: "14.0.6"
drivers:
  - name: example
    version: 1.0.0
    source:
      path: drivers/example
    recipe: kbuild
    bpfDir: .
    object: probe.o
    kinds: [bpf]
  - name: falco
    version: 9.1.0+driver
    source:
      url: https://example.invalid/libs.tar.gz
      sha256: ${sha256Hex('bench tarball')}
      strip: 1
    recipe: falco-libs
    bpfDir: driver/bpf
    object: probe.o
    kinds: [bpf]
`,
  );
  const files: string[] = [];
  const perOs = Math.ceil(kernels / oses);
  for (let o = 0; o < oses; o++) {
    const os = `bench${o}`;
    const def = `id: ${os}\ntype: apt\ntargetId: ${os}\narchitectures: [x86_64]\nminimumKernel: "4.14"\nosRelease:\n  ID: ${os}\nrepositories:\n  - name: main\n    mirrors: [http://127.0.0.1:9/x]\n    suite: stable\napt:\n  headers:\n    - flavour: amd64\n      pattern: '^linux-headers-(?<release>.*)$'\n  follow: []\n  unameVersion: '#1 SMP {version}'\n  kernelVersion: '1'\n`;
    await writeFile(join(root, 'kernels', `${os}.yaml`), def);
    const list = [];
    for (let i = 0; i < perOs && o * perOs + i < kernels; i++) {
      const major = 4 + (i % 3);
      const release = `${major}.${i % 20}.${Math.floor(i / 20)}-${i}-amd64`;
      const version = `${major}.${i % 20}.${Math.floor(i / 20)}-${i}`;
      const pkg = (name: string, role: string) => ({
        name,
        version,
        role,
        repository: 'main',
        path: `pool/main/l/linux/${name}_${version}_amd64.deb`,
        sha256: sha256Hex(`${os}/${name}`),
        size: 1_000_000 + i,
      });
      list.push({
        name: release,
        release,
        version: `#1 SMP PREEMPT_DYNAMIC Debian ${version}`,
        machine: 'x86_64' as const,
        kernelVersion: '1',
        targetId: os,
        flavour: 'amd64',
        packages: [
          pkg(`linux-headers-${release}`, 'headers'),
          pkg(`linux-headers-${major}.${i % 20}-${i}-common`, 'common'),
          pkg(`linux-kbuild-${major}.${i % 20}`, 'kbuild'),
        ],
      });
    }
    const file = join(root, 'kernels', `${os}.lock.yaml`);
    const lock = { os, source: { path: `kernels/${os}.yaml`, sha256: sha256Hex(def) }, osRelease: { ID: os }, kernels: list };
    await writeFile(file, serializeLockfile(lock));
    asJson.push(lock);
    files.push(file);
  }
  await writeFile(join(root, 'lockfiles.json'), JSON.stringify(asJson));
  return files;
}

function runChild(root: string): ChildReport {
  const r = spawnSync(process.execPath, ['--import', 'tsx', SELF, '--child', root], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildReport;
}

/** Wall time of the real command, and its peak RSS as /usr/bin/time reports it. */
function runCli(root: string): { ms: number; maxRssMiB: number; stdout: string } {
  const started = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%M', process.execPath, BIN, '--root', root, 'generate'], {
    encoding: 'utf8',
    timeout: 300_000,
  });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  if (r.status !== 0) throw new Error(`generate failed: ${r.stderr}`);
  const kb = Number(r.stderr.trim().split('\n').pop());
  return { ms, maxRssMiB: kb / 1024, stdout: r.stdout };
}

function catMs(files: string[]): number {
  const started = process.hrtime.bigint();
  const r = spawnSync('sh', ['-c', 'cat "$@" > /dev/null', 'cat', ...files]);
  if (r.status !== 0) throw new Error('cat failed');
  return Number(process.hrtime.bigint() - started) / 1e6;
}

/** Wall time of `node -e 0`: Node's own start, before any code runs (the floor of the whole command). */
function nodeStartMs(): number {
  const started = process.hrtime.bigint();
  const r = spawnSync(process.execPath, ['-e', '0']);
  if (r.status !== 0) throw new Error('node -e 0 failed');
  return Number(process.hrtime.bigint() - started) / 1e6;
}

/** JSON.parse of the lockfiles' data, in a child like generate (its heap starts empty too). */
function jsonParseMs(root: string): number {
  const code = `const fs=require('fs');const t=fs.readFileSync(${JSON.stringify(join(root, 'lockfiles.json'))},'utf8');const s=process.hrtime.bigint();JSON.parse(t);console.log(Number(process.hrtime.bigint()-s)/1e6)`;
  const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`JSON.parse child failed: ${r.stderr}`);
  return Number(r.stdout.trim());
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);

async function main(): Promise<void> {
  const kernels = arg('--kernels', 10_000);
  const oses = arg('--oses', 4);
  const runs = arg('--runs', 3);
  const root = await mkdtemp(join(tmpdir(), 'falco-probes-bench-generate-'));
  try {
    const files = await writeProject(root, kernels, oses);
    let bytes = 0;
    for (const f of files) bytes += (await stat(f)).size;
    catMs(files); // warm the page cache
    const loadAverage = async () => (await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ');
    const loadBefore = await loadAverage();
    const cats: number[] = [];
    const jsons: number[] = [];
    const nodeStarts: number[] = [];
    const scratch: ChildReport[] = [];
    const noChange: ChildReport[] = [];
    const cliScratch: { ms: number; maxRssMiB: number }[] = [];
    const cliNoChange: { ms: number; maxRssMiB: number }[] = [];
    for (let r = 0; r < runs; r++) {
      cats.push(catMs(files));
      jsons.push(jsonParseMs(root));
      nodeStarts.push(nodeStartMs());
      await rm(join(root, 'probes'), { recursive: true, force: true });
      await rm(join(root, 'generated'), { recursive: true, force: true });
      await rm(join(root, '.falco-probes'), { recursive: true, force: true });
      scratch.push(runChild(root));
      noChange.push(runChild(root));
      if (noChange.at(-1)!.filesWritten !== 0 || noChange.at(-1)!.stampsTouched !== 0) throw new Error('the no-change run wrote files');
      await rm(join(root, 'probes'), { recursive: true, force: true });
      await rm(join(root, 'generated'), { recursive: true, force: true });
      await rm(join(root, '.falco-probes'), { recursive: true, force: true });
      cliScratch.push(runCli(root));
      const again = runCli(root);
      if (!/0 file\(s\) written/.test(again.stdout) || /key stamps/.test(again.stdout))
        throw new Error(`the no-change CLI run wrote files:\n${again.stdout}`);
      cliNoChange.push(again);
    }
    const loadAfter = await loadAverage();
    const cat = median(cats);
    const json = median(jsons);
    const row = (what: string, ms: number, rss: number, cpuMs?: number) =>
      `| ${what} | ${fmt(ms)} | ${(ms / cat).toFixed(1)}x | ${(ms / json).toFixed(1)}x | ${cpuMs === undefined ? '' : fmt(cpuMs)} | ${rss.toFixed(0)} MiB |`;
    console.log(
      `generate: ${kernels} kernels in ${oses} lockfiles (${(bytes / 1024 / 1024).toFixed(1)} MiB), 2 drivers, ${scratch[0]!.targets} targets; median of ${runs} runs; load average ${loadBefore} before, ${loadAfter} after`,
    );
    console.log(extraCaCertsLine());
    console.log('');
    console.log('| run | wall | / cat | / JSON.parse | CPU | peak RSS |');
    console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
    console.log(`| cat of the lockfiles | ${fmt(cat)} | 1x | | | |`);
    console.log(`| JSON.parse of the same data as JSON | ${fmt(json)} | ${(json / cat).toFixed(1)}x | 1x | | |`);
    console.log(`| \`node -e 0\` (Node's own start, in the whole command below) | ${fmt(median(nodeStarts))} | | | | |`);
    console.log(
      row(
        'generate() from scratch',
        median(scratch.map((r) => r.ms)),
        Math.max(...scratch.map((r) => r.maxRssMiB)),
        median(scratch.map((r) => r.cpuMs)),
      ),
    );
    console.log(
      row(
        'generate() again, nothing changed (0 files written)',
        median(noChange.map((r) => r.ms)),
        Math.max(...noChange.map((r) => r.maxRssMiB)),
        median(noChange.map((r) => r.cpuMs)),
      ),
    );
    console.log(
      row(
        '`falco-probes generate` from scratch (wall: bin/falco-probes.js, compiled dist/ when fresh)',
        median(cliScratch.map((r) => r.ms)),
        Math.max(...cliScratch.map((r) => r.maxRssMiB)),
      ),
    );
    console.log(
      row(
        '`falco-probes generate` again, nothing changed (wall)',
        median(cliNoChange.map((r) => r.ms)),
        Math.max(...cliNoChange.map((r) => r.maxRssMiB)),
      ),
    );
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

if (process.argv.includes('--child')) await child(process.argv[process.argv.indexOf('--child') + 1]!);
else if (process.argv.includes('--write-project')) {
  // Only write the project into DIR (for profiling by hand).
  await writeProject(process.argv[process.argv.indexOf('--write-project') + 1]!, arg('--kernels', 10_000), arg('--oses', 4));
} else await main();
