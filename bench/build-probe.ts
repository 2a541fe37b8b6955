// Benchmark: one real probe build with the host builder, divided by a bare
// `make -C <headers> M=<driver>` on the same extracted inputs, in the same
// run (runs alternate, so machine load hits both alike). Aim: at most 1.2.
//
//   node --import tsx bench/build-probe.ts [--runs N] [--no-write]
//
// The bare make runs against the same kernel view the builder prepares (a
// Debian headers tree cannot be used in place: its Makefile includes
// /usr/src/...-common by an absolute path), prepared once outside the timing,
// and against a fresh copy of the example probe each time. So the ratio is
// what the tool adds: its copy of the driver, the view, the reproducibility
// flags, the ELF check, the hash and the atomic write.
//
// The whole `build-probe` command (what the Please and Make recipes run) is
// measured for the real drivers by bench/build-real-driver.ts: this
// project's kernels/drivers.yaml no longer holds the example probe.
//
// Results go to docs/PERFORMANCE.md under "Build one probe (host)".

import { execFile, spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createHostBuilder } from '../src/builders/host.js';
import { prepareKernelView } from '../src/builders/kernel-tree.js';
import { writeFileAtomic } from '../src/util/fs.js';
import { PROJECT_ROOT } from '../test/helpers/cli.js';
import { debianTarget, obtainDebianKernels, sharedKernelRoot } from '../test/helpers/kernel-headers.js';
import { argValue, median } from './lib.js';

const execFileAsync = promisify(execFile);
const EXAMPLE = join(PROJECT_ROOT, 'examples', 'probe');
const DOC = join(PROJECT_ROOT, 'docs', 'PERFORMANCE.md');
const HEADING = '## Build one probe (host)';

function bareMake(kernelDir: string, moduleDir: string, log: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn('make', ['-C', kernelDir, `M=${moduleDir}`], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => process.kill(-(child.pid as number), 'SIGKILL'), 10 * 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`bare make failed (${code}) for ${log}:\n${err}`));
      else resolve(performance.now() - started);
    });
  });
}

interface KernelFigures {
  release: string;
  tool: number[];
  bare: number[];
  size: number;
  sha256s: Set<string>;
}

async function main(): Promise<void> {
  const runs = Number(argValue('--runs') ?? 3);
  const write = !process.argv.includes('--no-write');
  const got = await obtainDebianKernels();
  if (!got.ok) {
    console.error(`build-probe: ${got.skip}`);
    process.exitCode = 2;
    return;
  }
  const scratch = await mkdtemp(join(tmpdir(), 'falco-probes-bench-build-'));
  const loadBefore = loadavg()[0] as number;
  const figures: KernelFigures[] = [];
  const builder = createHostBuilder();
  const pin = await builder.pin();
  try {
    for (const kernel of got.kernels) {
      const root = await sharedKernelRoot(kernel);
      const bareWork = join(scratch, `bare-${kernel.series}`);
      await mkdir(bareWork);
      const view = await prepareKernelView({ kernelRoot: root, release: kernel.release, workDir: bareWork });
      const f: KernelFigures = { release: kernel.release, tool: [], bare: [], size: 0, sha256s: new Set() };
      // One unmeasured build of each kind first, so both start with warm caches.
      for (let i = -1; i < runs; i++) {
        const dir = join(scratch, `${kernel.series}-${i + 1}`);
        await mkdir(join(dir, 'work'), { recursive: true });
        const started = performance.now();
        const result = await builder.build({
          target: debianTarget(kernel, pin),
          kernelRoot: root,
          driverDir: EXAMPLE,
          workDir: join(dir, 'work'),
          outFile: join(dir, 'probe.o'),
          logFile: join(dir, 'build.log'),
        });
        const toolMs = performance.now() - started;

        const copy = join(dir, 'bare-driver');
        await cp(EXAMPLE, copy, { recursive: true });
        const bareMs = await bareMake(view.kernelDir, copy, kernel.release);
        await readFile(join(copy, 'probe.o')); // the bare build made the probe too

        if (i < 0) continue;
        f.tool.push(toolMs);
        f.bare.push(bareMs);
        f.size = result.size;
        f.sha256s.add(result.sha256);
        console.log(`${kernel.release} run ${i + 1}: tool ${(toolMs / 1000).toFixed(2)} s, bare make ${(bareMs / 1000).toFixed(2)} s`);
      }
      figures.push(f);
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  const loadAfter = loadavg()[0] as number;

  const rows = figures.map((f) => {
    const tool = median(f.tool);
    const bare = median(f.bare);
    return { ...f, toolMedian: tool, bareMedian: bare, ratio: tool / bare };
  });
  for (const r of rows)
    console.log(
      `${r.release}: tool ${(r.toolMedian / 1000).toFixed(2)} s / bare make ${(r.bareMedian / 1000).toFixed(2)} s = ${r.ratio.toFixed(2)}; ` +
        `${r.size} bytes; ${r.sha256s.size === 1 ? 'same sha256 every run' : `${r.sha256s.size} different sha256s!`}`,
    );
  if (!write) return;

  const { stdout: clangLine } = await execFileAsync('clang', ['--version']);
  const section = [
    HEADING,
    '',
    'One build of the example probe (`examples/probe`) by the host builder (`createHostBuilder().build()`:',
    'driver copy, kernel view, `make -C <view> M=<copy>` with the reproducibility flags, ELF check, sha256,',
    'atomic write), divided by a bare `make -C <headers> M=<driver>` on the same extracted headers (the same',
    'view, prepared once outside the timing; a fresh copy of the probe each time). Runs alternate, after',
    `one unmeasured warm-up of each; medians of ${runs} runs. The whole \`build-probe\` command is measured for`,
    'the real drivers by bench/build-real-driver.ts ("Build one real artifact (host)").',
    'Command: `node --import tsx bench/build-probe.ts`.',
    '',
    `Measured ${new Date().toISOString().slice(0, 10)} on ${cpus().length} cores, ${clangLine.split('\n')[0]?.trim()}, load average ${loadBefore.toFixed(1)} before and ${loadAfter.toFixed(1)} after (other work shared the machine: absolute times are rough, the ratio less so).`,
    '',
    '| kernel | host builder | bare make | builder / bare | probe size | sha256 over runs |',
    '| --- | --- | --- | --- | --- | --- |',
    ...rows.map(
      (r) =>
        `| ${r.release} | ${(r.toolMedian / 1000).toFixed(2)} s | ${(r.bareMedian / 1000).toFixed(2)} s | ${r.ratio.toFixed(2)} | ${r.size} B | ${r.sha256s.size === 1 ? `identical (\`${[...r.sha256s][0]?.slice(0, 16)}…\`)` : `${r.sha256s.size} different`} |`,
    ),
    '',
  ].join('\n');
  let doc = '';
  try {
    doc = await readFile(DOC, 'utf8');
  } catch {
    doc = '# Performance\n\nBenchmarks live in `bench/`; each section below is written by its benchmark.\n\n';
  }
  const start = doc.indexOf(`${HEADING}\n`);
  if (start >= 0) {
    const next = doc.indexOf('\n## ', start + HEADING.length);
    doc = doc.slice(0, start) + section + (next >= 0 ? `\n${doc.slice(next + 1)}` : '');
  } else {
    doc = `${doc.replace(/\n*$/, '\n\n')}${section}`;
  }
  await writeFileAtomic(DOC, doc);
  console.log(`written: ${DOC}`);
}

await main();
