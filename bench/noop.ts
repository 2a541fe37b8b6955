// Benchmark of a no-op build: every target up to date.
//
//   node --import tsx bench/noop.ts [--kernels 10000] [--oses 4] [--runs 5] [--project DIR]
//
// Writes a temporary project with --kernels kernels (3 packages each) over
// --oses lockfiles and the example driver, so --kernels targets; publishes a
// tiny probe for each into repository/ with its index (as a finished build
// leaves it); runs `falco-probes generate` so generated/Makefile and its key
// stamps exist, and two unmeasured `falco-probes build`s: the first reads
// every probe once and records its stat (a no-op after a real build does
// the same once), and writes the no-op stamp; the second must replay it.
// Then, in the same run, alternating:
//   - `make -q -f generated/Makefile` (make's own no-op check: stat of every
//     probe and stamp; it must exit 0),
//   - `node -e 0` (Node's own start, before any code of the tool: the floor
//     of any Node command; NODE_EXTRA_CA_CERTS, when set, adds the reading
//     of that file to it, and the first lines say whether it is),
//   - `falco-probes build` (the tool's no-op as it runs: the no-op stamp
//     replayed by bin/ before any module loads, a stat of every recorded
//     path by one run of GNU find; FALCO_PROBES_NOOP_TRACE=1 must say it was
//     replayed, and how the stats were checked, and the output must report
//     0 built),
//   - `falco-probes build` with FALCO_PROBES_NOOP_STAMP=0 (the no-op
//     computed: the graph from its memo, the index from the repository's
//     memo, a stat of every probe),
//   - `falco-probes build --verify-all` (the same, reading and hashing every
//     probe and index.json: what a no-op cost before the stat memo),
// each timed by /usr/bin/time (wall, and user + system CPU), and, in a child
// whose modules are loaded before the clock starts, the phases of the tool's
// no-op: loading the graph, opening the repository, planning. Prints a
// markdown table with medians, the ratios to make -q, and the load average
// before and after. The tool measured is this checkout's bin/ (its compiled
// dist/ when it is newer than src/, else the sources through tsx: the first
// line says which).

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { extraCaCertsLine } from './lib.js';

const SELF = fileURLToPath(import.meta.url);
const BIN = fileURLToPath(new URL('../bin/falco-probes.js', import.meta.url));

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

interface Phases {
  targets: number;
  loadGraphMs: number;
  readIndexMs: number;
  planMs: number;
  upToDate: number;
}

// --- child: the no-op's phases, modules already loaded ---------------------------------------
async function child(root: string): Promise<void> {
  const { loadBuildGraph } = await import('../src/graph/load.js');
  const { LocalRepository } = await import('../src/repository/local.js');
  const { repositoryMemoPath } = await import('../src/repository/memo.js');
  const { planTargets } = await import('../src/run/plan.js');
  const { selectTargets } = await import('../src/run/select.js');
  const t0 = performance.now();
  const graph = await loadBuildGraph(root);
  const targets = selectTargets(graph.targets, { patterns: [], knownOs: graph.oses });
  const t1 = performance.now();
  // As build opens it (without the lock: nothing is written here).
  const repo = await LocalRepository.read(join(root, 'repository'), {
    memo: repositoryMemoPath(join(root, '.falco-probes'), join(root, 'repository')),
  });
  const t2 = performance.now();
  const plan = await planTargets(targets, repo);
  const t3 = performance.now();
  const report: Phases = {
    targets: targets.length,
    loadGraphMs: t1 - t0,
    readIndexMs: t2 - t1,
    planMs: t3 - t2,
    upToDate: plan.filter((p) => !p.reason).length,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

// --- the synthetic project ----------------------------------------------------------------
async function writeProject(root: string, kernels: number, oses: number): Promise<void> {
  const { serializeLockfile } = await import('../src/lockfile/lockfile.js');
  const { sha256Hex } = await import('../src/util/hash.js');
  await mkdir(join(root, 'kernels'), { recursive: true });
  await mkdir(join(root, 'drivers', 'example'), { recursive: true });
  await writeFile(join(root, 'drivers', 'example', 'Makefile'), 'always-y += probe.o\n');
  await writeFile(join(root, 'drivers', 'example', 'probe.c'), '/* probe */\n');
  await writeFile(
    join(root, 'kernels', 'drivers.yaml'),
    `builder:\n  kind: host\n  clang: "14.0.6"\ndrivers:\n  - name: example\n    version: 1.0.0\n    source:\n      path: drivers/example\n    recipe: kbuild\n    bpfDir: .\n    object: probe.o\n    kinds: [bpf]\n`,
  );
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
    await writeFile(
      join(root, 'kernels', `${os}.lock.yaml`),
      serializeLockfile({ os, source: { path: `kernels/${os}.yaml`, sha256: sha256Hex(def) }, osRelease: { ID: os }, kernels: list }),
    );
  }
}

/** A finished build's repository: a small probe per target and the index, then generate (stamps dated before the probes). */
async function publishAll(root: string): Promise<number> {
  const { loadBuildGraph } = await import('../src/graph/load.js');
  const { writeIndex } = await import('../src/repository/index-file.js');
  const { entryFor } = await import('../src/repository/local.js');
  const { generate } = await import('../src/generate/generate.js');
  const { sha256Hex } = await import('../src/util/hash.js');
  const graph = await loadBuildGraph(root);
  const repo = join(root, 'repository');
  const probes = [];
  const made = new Set<string>();
  for (const t of graph.targets) {
    // About the size of the example probe's object would be 10 KiB; a few hundred bytes keep the set small on disk.
    const bytes = Buffer.from(`\x7fELF bench probe ${t.key}\n`.repeat(8));
    const file = join(repo, t.output);
    if (!made.has(dirname(file))) {
      await mkdir(dirname(file), { recursive: true });
      made.add(dirname(file));
    }
    await writeFile(file, bytes);
    probes.push(entryFor(t, { sha256: sha256Hex(bytes), size: bytes.length }));
  }
  await writeIndex(repo, { version: 1, probes });
  await generate(root, { published: new Map(probes.map((p) => [p.key, { file: p.file, sha256: p.sha256 }])) });
  return graph.targets.length;
}

/** Wall time, and the command's user + system CPU as /usr/bin/time reports it (its last stderr line). */
function timed(
  cmd: string,
  args: string[],
  cwd: string,
  env: Record<string, string> = {},
): { ms: number; cpuMs: number; status: number | null; stdout: string; stderr: string } {
  const started = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S', cmd, ...args], {
    cwd,
    encoding: 'utf8',
    timeout: 300_000,
    maxBuffer: 256 * 1024 * 1024,
    env: { ...process.env, CI: 'true', ...env },
  });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  const [user, sys] = r.stderr.trim().split('\n').pop()!.split(' ').map(Number);
  return { ms, cpuMs: (user! + sys!) * 1000, status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Whether bin/falco-probes.js runs the compiled dist/ (BUILT newer than every file of src/) or the sources, as bin/ decides. */
const FRESH = `const { readdirSync, statSync } = require('node:fs');
const root = process.argv[1];
let built = -1;
try { built = statSync(root + '/dist/BUILT').mtimeMs; } catch {}
const newer = (dir) => readdirSync(dir, { withFileTypes: true }).some((e) => e.isDirectory() ? newer(dir + '/' + e.name) : statSync(dir + '/' + e.name).mtimeMs > built);
console.log(built >= 0 && !newer(root + '/src') ? 'compiled dist/' : 'the sources through tsx (dist/ is older than src/: npm run build)');`;

const loadAverage = async () => (await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ');

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);

async function main(): Promise<void> {
  const kernels = arg('--kernels', 10_000);
  const oses = arg('--oses', 4);
  const runs = arg('--runs', 5);
  // --project DIR: write the project there (or reuse it when it exists) and keep it, to profile.
  const kept = process.argv.includes('--project') ? resolve(process.argv[process.argv.indexOf('--project') + 1]!) : undefined;
  const root = kept ?? (await mkdtemp(join(tmpdir(), 'falco-probes-bench-noop-')));
  try {
    const reuse = kept !== undefined && existsSync(join(kept, 'repository', 'index.json'));
    if (!reuse) await writeProject(root, kernels, oses);
    const targets = reuse
      ? (JSON.parse(await readFile(join(root, 'repository', 'index.json'), 'utf8')) as { probes: unknown[] }).probes.length
      : await publishAll(root);
    const noop = (args: string[], env: Record<string, string> = {}) => {
      const build = timed(process.execPath, [BIN, 'build', ...args], root, env);
      if (build.status !== 0) throw new Error(`build failed: ${build.stderr}`);
      if (!build.stderr.includes(`${targets} targets: 0 built, ${targets} up to date`))
        throw new Error(`the no-op build was not a no-op: ${build.stderr.slice(0, 300)}`);
      return build;
    };
    /**
     * The stamp's fast path, proven by its trace line (and the same no-op output). Another session editing src/
     * changes the code (the stamp's key): that run writes the stamp again, and the measurement is taken again.
     */
    const replayed = () => {
      for (let attempt = 0; ; attempt++) {
        const build = noop([], { FALCO_PROBES_NOOP_TRACE: '1' });
        const how = /noop stamp: replayed .*checked by ([a-z ]+)\)/.exec(build.stderr)?.[1];
        if (how !== undefined) {
          checkedBy.add(how);
          return build;
        }
        if (attempt === 2 || !build.stderr.includes('noop stamp: not used: other code'))
          throw new Error(`the no-op stamp was not replayed: ${build.stderr.slice(0, 600)}`);
      }
    };
    const checkedBy = new Set<string>();
    noop([]); // reads every probe once and records its stat, writes the no-op stamp (unmeasured)
    replayed(); // unmeasured
    const loadBefore = await loadAverage();
    const makes: ReturnType<typeof timed>[] = [];
    const builds: ReturnType<typeof timed>[] = [];
    const computed: ReturnType<typeof timed>[] = [];
    const verifyAll: ReturnType<typeof timed>[] = [];
    const phases: Phases[] = [];
    const nodeStarts: ReturnType<typeof timed>[] = [];
    for (let r = 0; r < runs; r++) {
      nodeStarts.push(timed(process.execPath, ['-e', '0'], root));
      const make = timed('make', ['-q', '-f', 'generated/Makefile'], root);
      if (make.status !== 0) throw new Error(`make -q says something is out of date (exit ${make.status}): ${make.stderr}`);
      makes.push(make);
      builds.push(replayed());
      computed.push(noop([], { FALCO_PROBES_NOOP_STAMP: '0' }));
      verifyAll.push(noop(['--verify-all']));
      const c = spawnSync(process.execPath, ['--import', 'tsx', SELF, '--child', root], { encoding: 'utf8', timeout: 300_000 });
      if (c.status !== 0) throw new Error(`child failed: ${c.stderr}`);
      phases.push(JSON.parse(c.stdout.trim().split('\n').pop()!) as Phases);
    }
    const loadAfter = await loadAverage();
    const make = median(makes.map((m) => m.ms));
    const makeCpu = median(makes.map((m) => m.cpuMs));
    const row = (what: string, list: ReturnType<typeof timed>[], bold = false) => {
      const ms = median(list.map((x) => x.ms));
      const cpu = median(list.map((x) => x.cpuMs));
      const b = bold ? '**' : '';
      return `| ${what} | ${fmt(ms)} | ${b}${(ms / make).toFixed(2)}${b} | ${fmt(cpu)} | ${(cpu / makeCpu).toFixed(2)} |`;
    };
    const tool = spawnSync(process.execPath, ['-e', FRESH, dirname(dirname(BIN))], { encoding: 'utf8' }).stdout.trim();
    const find = spawnSync('find', ['--version'], { encoding: 'utf8' }).stdout?.split('\n')[0] ?? 'no find';
    const inProcess = median(phases.map((p) => p.loadGraphMs + p.readIndexMs + p.planMs));
    console.log(
      `no-op build: ${targets} up-to-date targets (${kernels} kernels in ${oses} lockfiles, 1 driver); median of ${runs} alternating runs; load average ${loadBefore} before, ${loadAfter} after`,
    );
    console.log(`tool: ${tool}; ${find}; the replays' stats checked by ${[...checkedBy].join(', ')}`);
    console.log(extraCaCertsLine());
    console.log('');
    console.log('| run | wall | / make -q | CPU (user + sys) | / make -q |');
    console.log('| --- | ---: | ---: | ---: | ---: |');
    console.log(row('`make -q -f generated/Makefile`', makes));
    console.log(row("`node -e 0` (Node's own start: what any Node program takes before its first line)", nodeStarts));
    console.log(row('`falco-probes build` (bin/falco-probes.js: the no-op stamp replayed)', builds, true));
    console.log(row('`FALCO_PROBES_NOOP_STAMP=0 falco-probes build` (the no-op computed, compiled dist/ when fresh)', computed));
    console.log(row('`falco-probes build --verify-all` (reads and hashes every probe and index.json)', verifyAll));
    console.log(`| the no-op's work in-process (modules loaded) | ${fmt(inProcess)} | ${(inProcess / make).toFixed(2)} | | |`);
    console.log(
      `| - load the graph (drivers, every lockfile's bytes hashed, the graph memo) | ${fmt(median(phases.map((p) => p.loadGraphMs)))} | | | |`,
    );
    console.log(
      `| - open the repository (index.json's stat, the repository memo) | ${fmt(median(phases.map((p) => p.readIndexMs)))} | | | |`,
    );
    console.log(`| - plan: stat every probe, compare with the memo and the index | ${fmt(median(phases.map((p) => p.planMs)))} | | | |`);
  } finally {
    if (kept === undefined) await rm(root, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--child') await child(process.argv[3]!);
else await main();
