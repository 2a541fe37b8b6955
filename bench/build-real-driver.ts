// Benchmark: the real drivers' artifacts, one at a time, against a bare
// kbuild `make` on the same prepared tree, in the same run (runs alternate,
// so machine load hits both alike). Aim (issues "Real Falco drivers" and
// "Performance, round two"): the whole `build-probe` command at most 1.2x.
//
//   node --import tsx bench/build-real-driver.ts [--runs N] [--kernel 6.1|6.12] [--no-write]
//
// Driver: Debian's scap 0.23.2 (kernels/drivers.yaml), fetched from Debian's
// archive like a kernel package. For each kind (kmod: scap.ko with the
// kernel's gcc; bpf: the legacy probe with clang/llc):
//   - builder: createHostBuilder().build(), the recipe's copy of the
//     driver, the kernel view, make with the reproducibility flags, the
//     output check, sha256 and atomic write;
//   - command: `falco-probes build-probe debian12 <target> --out FILE` in
//     this project (what Please and Make run: process start, graph, package
//     checks, kernel root, driver source, pin, build), packages cached;
//   - bare: `make -C <view> M=<fresh copy of the driver>` (kmod: `CC=<the
//     kernel's gcc> modules`), on the same view prepared once outside the
//     timing.
// Results go to docs/PERFORMANCE.md under "Build one real artifact (host)".

import { spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHostBuilder } from '../src/builders/host.js';
import { readKernelCompiler } from '../src/builders/kernel-compiler.js';
import { prepareKernelView } from '../src/builders/kernel-tree.js';
import { loadBuildGraph } from '../src/graph/load.js';
import type { DriverKind, Target } from '../src/graph/types.js';
import { defaultCacheDir } from '../src/fetch/cache.js';
import { extractPackage } from '../src/fetch/extract.js';
import { createDriverSources } from '../src/fetch/driver-source.js';
import { writeFileAtomic } from '../src/util/fs.js';
import { sha256Hex } from '../src/util/hash.js';
import { PROJECT_ROOT } from '../test/helpers/cli.js';
import { obtainDebianKernels, sharedKernelRoot } from '../test/helpers/kernel-headers.js';
import { argValue, median } from './lib.js';

const DOC = join(PROJECT_ROOT, 'docs', 'PERFORMANCE.md');
const HEADING = '## Build one real artifact (host)';
const BIN = join(PROJECT_ROOT, 'bin', 'falco-probes.js');

function timed(argv: string[], cwd: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd,
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true,
      env: { ...process.env, CI: 'true' },
    });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => process.kill(-(child.pid as number), 'SIGKILL'), 20 * 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`${argv.slice(0, 4).join(' ')} failed (${code}):\n${err.slice(-3000)}`));
      else resolve(performance.now() - started);
    });
  });
}

interface Row {
  kind: DriverKind;
  release: string;
  builder: number[];
  command: number[];
  bare: number[];
  size: number;
  sha256s: Set<string>;
}

async function main(): Promise<void> {
  const runs = Number(argValue('--runs') ?? 3);
  const series = argValue('--kernel') ?? '6.1';
  const write = !process.argv.includes('--no-write');
  const got = await obtainDebianKernels();
  if (!got.ok) throw new Error(got.skip);
  const kernel = got.kernels.find((k) => k.series === series);
  if (!kernel) throw new Error(`no ${series} kernel`);
  const graph = await loadBuildGraph(PROJECT_ROOT, { remember: false });
  const pick = (kind: DriverKind): Target => {
    const t = graph.targets.find(
      (x) => x.os === 'debian12' && x.kernel.release === kernel.release && x.driver.name === 'scap' && x.kind === kind,
    );
    if (!t)
      throw new Error(`kernels/debian12.lock.yaml has no scap ${kind} target for ${kernel.release}: re-resolve, or pick a kernel it lists`);
    return t;
  };
  const driverDir = await createDriverSources({
    projectRoot: PROJECT_ROOT,
    cacheDir: defaultCacheDir(),
    extract: async (file, dest, o) => {
      await extractPackage(file, 'tgz', dest, { strip: o.strip });
    },
  })(pick('kmod').driver);
  const root = await sharedKernelRoot(kernel);
  const scratch = await mkdtemp(join(tmpdir(), 'falco-probes-bench-real-'));
  const builder = createHostBuilder();
  const pin = await builder.pin();
  const loadBefore = loadavg()[0]!;
  const rows: Row[] = [];
  try {
    const view = await prepareKernelView({
      kernelRoot: root,
      release: kernel.release,
      workDir: await mkdir(join(scratch, 'view'), { recursive: true }).then(() => join(scratch, 'view')),
    });
    const cc = await readKernelCompiler(view.headersDir);
    for (const kind of ['kmod', 'bpf'] as const) {
      const target = { ...pick(kind), builder: pin };
      const row: Row = { kind, release: kernel.release, builder: [], command: [], bare: [], size: 0, sha256s: new Set() };
      for (let i = -1; i < runs; i++) {
        const dir = join(scratch, `${kind}-${i + 1}`);
        await mkdir(join(dir, 'work'), { recursive: true });
        const started = performance.now();
        const result = await builder.build({
          target,
          kernelRoot: root,
          driverDir,
          workDir: join(dir, 'work'),
          outFile: join(dir, 'out'),
          logFile: join(dir, 'build.log'),
        });
        const builderMs = performance.now() - started;

        const copy = join(dir, 'bare');
        await cp(driverDir, copy, { recursive: true, verbatimSymlinks: true });
        const moduleDir = kind === 'kmod' ? copy : join(copy, 'bpf');
        const bareMs = await timed(
          kind === 'kmod'
            ? ['make', '-C', view.kernelDir, `M=${moduleDir}`, `CC=${cc.program}`, 'modules']
            : ['make', '-C', view.kernelDir, `M=${moduleDir}`],
          scratch,
        );

        const out = join(dir, 'cli-out');
        const commandMs = await timed([process.execPath, BIN, 'build-probe', 'debian12', target.name, '--out', out], PROJECT_ROOT);
        row.sha256s.add(sha256Hex(await readFile(out)));
        if (i < 0) continue;
        row.builder.push(builderMs);
        row.command.push(commandMs);
        row.bare.push(bareMs);
        row.size = result.size;
        row.sha256s.add(result.sha256);
        console.log(
          `${kind} ${kernel.release} run ${i + 1}: builder ${(builderMs / 1000).toFixed(2)} s, command ${(commandMs / 1000).toFixed(2)} s, bare make ${(bareMs / 1000).toFixed(2)} s`,
        );
      }
      rows.push(row);
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  const loadAfter = loadavg()[0]!;
  const lines = rows.map((r) => {
    const b = median(r.builder);
    const c = median(r.command);
    const m = median(r.bare);
    return `| scap ${r.kind} | ${r.release} | ${(b / 1000).toFixed(2)} s | ${(c / 1000).toFixed(2)} s | ${(m / 1000).toFixed(2)} s | ${(b / m).toFixed(2)} | ${(c / m).toFixed(2)}${c / m <= 1.2 ? '' : ' (missed)'} | ${r.size} B | ${r.sha256s.size === 1 ? `identical (\`${[...r.sha256s][0]!.slice(0, 16)}…\`)` : `${r.sha256s.size} different`} |`;
  });
  for (const l of lines) console.log(l);
  if (!write) return;
  const section = [
    HEADING,
    '',
    "Debian's scap driver 0.23.2 (the main job's driver), one artifact at a time: the host builder and the whole",
    '`falco-probes build-probe debian12 <target> --out FILE` command (packages and driver source cached), each divided',
    'by a bare kbuild `make -C <view> M=<fresh copy>` (`CC=<kernel gcc> modules` for the module) on the same prepared',
    `view. Runs alternate after one unmeasured warm-up of each; medians of ${runs} runs.`,
    `Command: \`node --import tsx bench/build-real-driver.ts --kernel ${series}\`.`,
    '',
    `Measured ${new Date().toISOString().slice(0, 10)} on ${cpus().length} cores, load average ${loadBefore.toFixed(1)} before and ${loadAfter.toFixed(1)} after.`,
    '',
    '| artifact | kernel | host builder | build-probe command | bare make | builder / bare | command / bare (aim <= 1.2) | size | sha256 over runs (both paths) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...lines,
    '',
  ].join('\n');
  let doc = await readFile(DOC, 'utf8');
  const start = doc.indexOf(`${HEADING}\n`);
  if (start >= 0) {
    const next = doc.indexOf('\n## ', start + HEADING.length);
    doc = doc.slice(0, start) + section + (next >= 0 ? `\n${doc.slice(next + 1)}` : '');
  } else doc = `${doc.replace(/\n*$/, '\n\n')}${section}`;
  await writeFileAtomic(DOC, doc);
  console.log(`written: ${DOC}`);
}

await main();
