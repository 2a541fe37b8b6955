// Benchmark: resolve a yum repository whose primary.xml holds 20,000 packages
// (a few hundred of them kernel builds), gzip-compressed, served on loopback.
// Reports the resolve time divided by `zcat` of the same file, measured in the
// same run (alternating, median of each), and the resolving process's peak RSS.
//
//   node --import tsx bench/resolve-yum.ts [--packages 20000] [--kernels 300] [--rounds 5] [--warm]
//   (BENCH_NODE_FLAGS="--cpu-prof --cpu-prof-dir=DIR" passes flags to the resolving child, to profile it)
//
// The resolve runs in a fresh child process (so that its peak RSS is its own;
// module loading is done before the clock starts). Wall time depends on what
// else the machine runs, so CPU time (user + system, all threads) is reported
// beside it, for both.

import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile, stat, mkdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const self = fileURLToPath(import.meta.url);

interface ChildResult {
  ms: number;
  /** CPU time (user + system, all threads) of the resolve. */
  cpuMs: number;
  kernels: number;
  maxRssKb: number;
}

async function child(definition: string, project: string, warm: boolean): Promise<void> {
  const { loadSourceDefinition } = await import('../src/config/source-definition.js');
  const { resolveSource } = await import('../src/resolve/index.js');
  const source = await loadSourceDefinition(definition, project);
  // Module loading (tsx compiling TypeScript) is start-up, not resolving: load the resolver first.
  await import('../src/resolve/yum.js');
  const cpu = process.cpuUsage();
  const started = performance.now();
  const lock = await resolveSource(source, {});
  const ms = performance.now() - started;
  const used = process.cpuUsage(cpu);
  // --warm: resolve again in the same process, to show what start-up (JIT compilation) costs.
  if (warm) {
    for (let i = 0; i < 3; i++) {
      const c = process.cpuUsage();
      const t = performance.now();
      await resolveSource(source, {});
      const u = process.cpuUsage(c);
      process.stderr.write(`warm resolve: ${(performance.now() - t).toFixed(0)} ms, cpu ${((u.user + u.system) / 1000).toFixed(0)} ms\n`);
    }
  }
  const result: ChildResult = { ms, cpuMs: (used.user + used.system) / 1000, kernels: lock.kernels.length, maxRssKb: await peakRssKb() };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

/**
 * This process's peak RSS. Linux's getrusage() maxrss (process.resourceUsage)
 * keeps the high-water mark of the parent's memory copied at fork, so it is
 * read from VmHWM, which starts afresh at exec.
 */
async function peakRssKb(): Promise<number> {
  try {
    const status = await readFile('/proc/self/status', 'utf8');
    const m = /^VmHWM:\s+([0-9]+) kB/m.exec(status);
    if (m) return Number(m[1]);
  } catch {
    /* not Linux */
  }
  return process.resourceUsage().maxRSS;
}

function run(cmd: string, args: string[], opts: { stdout?: 'pipe' | 'ignore' } = {}): Promise<{ ms: number; out: string }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const p = spawn(cmd, args, { stdio: ['ignore', opts.stdout ?? 'pipe', 'inherit'] });
    let out = '';
    p.stdout?.on('data', (d) => (out += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), 600_000);
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`${cmd} exited with ${code}`));
      else resolve({ ms: performance.now() - started, out });
    });
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Wall and CPU time of `zcat FILE > /dev/null` (CPU from bash's `times`, which reports its children). */
async function zcat(file: string): Promise<{ ms: number; cpuMs: number }> {
  const { ms, out } = await run('bash', ['-c', `zcat "$1" > /dev/null; times`, 'zcat', file]);
  const children = out
    .trim()
    .split('\n')
    .pop()!
    .match(/([0-9]+)m([0-9.]+)s\s+([0-9]+)m([0-9.]+)s/);
  if (!children) throw new Error(`cannot read the times of zcat: ${out}`);
  const cpuMs = (Number(children[1]) * 60 + Number(children[2]) + Number(children[3]) * 60 + Number(children[4])) * 1000;
  return { ms, cpuMs };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      child: { type: 'string' },
      project: { type: 'string' },
      packages: { type: 'string', default: '20000' },
      kernels: { type: 'string', default: '300' },
      rounds: { type: 'string', default: '5' },
      warm: { type: 'boolean' },
    },
  });
  if (values.child) return child(values.child, values.project!, values.warm === true);

  const { startMirror } = await import('../test/helpers/server.js');
  const { fillerPackage, kernelBuild, writeYumRepository, writeMirrorList, yumDefinitionYaml, depthOf } = await import(
    '../test/helpers/yum-fixture.js'
  );

  const total = Number(values.packages);
  const kernelCount = Number(values.kernels);
  const rounds = Number(values.rounds);
  const root = await mkdtemp(join(tmpdir(), 'bench-yum-'));
  const mirror = await startMirror({ root });
  try {
    const base = `2/core/2.0/x86_64/${'c'.repeat(64)}/`;
    const depth = depthOf(base);
    // Kernel builds (kernel, kernel-devel, kernel-headers, kernel-tools each) spread through the document.
    const kernelPackages = Array.from({ length: kernelCount }, (_, i) =>
      kernelBuild(`4.14.${100 + i}`, `${50 + i}.${i % 400}.amzn2`, 'x86_64', depth),
    ).flat();
    const packages = [];
    const every = Math.max(1, Math.floor(total / kernelPackages.length));
    for (let i = 0, k = 0; packages.length < total; i++) {
      if (i % every === 0 && k < kernelPackages.length) packages.push(kernelPackages[k++]!);
      else packages.push(fillerPackage(i, 'x86_64', depth));
    }
    const written = await writeYumRepository(root, base, packages, { compression: 'gz', blobstore: false });
    await writeMirrorList(root, '2/core/2.0/x86_64/mirror.list', [`${mirror.url}/2/core/2.0/$basearch/${'c'.repeat(64)}`]);
    const gzFile = join(root, base, written.primaryHref);
    const project = join(root, 'project');
    await mkdir(join(project, 'kernels'), { recursive: true });
    const definition = join(project, 'kernels', 'benchyum.yaml');
    await writeFile(
      definition,
      yumDefinitionYaml({
        id: 'benchyum',
        kernel: ['kernel'],
        packageRoot: 'host',
        repos: [{ name: 'core', mirrorList: true, mirrors: [`${mirror.url}/2/core/2.0/$basearch/mirror.list`] }],
      }),
    );
    const kernelsInFile = packages.filter((p) => p.name === 'kernel-devel').length;
    console.log(
      `primary.xml: ${packages.length} packages (${kernelsInFile} kernel-devel), ${(written.primaryXml.length / 1e6).toFixed(1)} MB, ` +
        `${((await stat(gzFile)).size / 1e6).toFixed(1)} MB gzip`,
    );

    const zcatMs: number[] = [];
    const zcatCpu: number[] = [];
    const resolveMs: number[] = [];
    const resolveCpu: number[] = [];
    const rss: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const z = await zcat(gzFile);
      zcatMs.push(z.ms);
      zcatCpu.push(z.cpuMs);
      const { out } = await run(process.execPath, [
        ...(process.env['BENCH_NODE_FLAGS']?.split(' ').filter((f) => f !== '') ?? []),
        '--import',
        'tsx',
        self,
        '--child',
        definition,
        '--project',
        project,
        ...(values.warm ? ['--warm'] : []),
      ]);
      const result = JSON.parse(out.trim().split('\n').pop()!) as ChildResult;
      if (result.kernels !== kernelsInFile) throw new Error(`resolved ${result.kernels} kernels, expected ${kernelsInFile}`);
      resolveMs.push(result.ms);
      resolveCpu.push(result.cpuMs);
      rss.push(result.maxRssKb / 1024);
      console.log(
        `round ${r + 1}: zcat ${z.ms.toFixed(0)} ms (cpu ${z.cpuMs.toFixed(0)}), resolve ${result.ms.toFixed(0)} ms (cpu ${result.cpuMs.toFixed(0)}), ` +
          `peak RSS ${(result.maxRssKb / 1024).toFixed(0)} MB`,
      );
    }
    console.log(
      `median: zcat ${median(zcatMs).toFixed(0)} ms, resolve ${median(resolveMs).toFixed(0)} ms: ${(median(resolveMs) / median(zcatMs)).toFixed(2)}x zcat wall time; ` +
        `cpu ${median(zcatCpu).toFixed(0)} ms vs ${median(resolveCpu).toFixed(0)} ms: ${(median(resolveCpu) / median(zcatCpu)).toFixed(2)}x; ` +
        `peak RSS ${Math.max(...rss).toFixed(0)} MB (aim: at most 2x zcat, at most 200 MB)`,
    );
  } finally {
    await mirror.close();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
