// Benchmark: per-probe time of the Docker builder divided by the host
// builder's, for the same targets, at -j 2, in one session.
//
//   node --import tsx bench/docker-vs-host.ts [--jobs 2] [--copies 2]
//
// Targets: the example probe for the two real Debian 12 kernels of the tests
// (test/helpers/kernel-headers.ts), each `--copies` times (distinct work
// directories), so that -j 2 has work to overlap. Each builder builds all of
// them through a pool of `--jobs`; per-probe time is the pool's wall time
// divided by the number of probes. The builders' one-off pin (clang --version;
// for Docker, finding the image and running a container) is reported apart.
// The Docker daemon, the base image and the builder image must be available
// as for test/docker.test.ts (as root they are started or made). Prints a
// markdown section for docs/PERFORMANCE.md ("Docker builder vs host").

import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import pLimit from 'p-limit';
import { createDockerBuilder } from '../src/builders/docker.js';
import { createHostBuilder } from '../src/builders/host.js';
import type { Builder, BuildResult } from '../src/builders/types.js';
import { PROJECT_ROOT } from '../test/helpers/cli.js';
import { ensureBaseImage, ensureBuilderImage, obtainDocker, stopDockerIfStarted } from '../test/helpers/docker.js';
import { debianTarget, exampleDriver, extractKernelRoot, obtainDebianKernels } from '../test/helpers/kernel-headers.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  const n = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} expects a positive whole number`);
  return n;
}

interface Measured {
  name: string;
  pinMs: number;
  wallMs: number;
  buildMs: number[];
  results: Map<string, BuildResult>;
}

const fmt = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

async function main(): Promise<void> {
  const jobs = arg('--jobs', 2);
  const copies = arg('--copies', 2);
  const d = await obtainDocker();
  if (!d.ok) throw new Error(d.skip);
  const base = await ensureBaseImage(d.docker);
  if (!base.ok) throw new Error(base.skip);
  const image = await ensureBuilderImage(d.docker);
  const k = await obtainDebianKernels();
  if (!k.ok) throw new Error(k.skip);
  const scratch = await mkdtemp(join(tmpdir(), 'falco-probes-bench-docker-'));
  const load0 = loadavg()[0]!;
  try {
    const roots = new Map<string, string>();
    for (const kernel of k.kernels) roots.set(kernel.release, await extractKernelRoot(kernel, join(scratch, `root-${kernel.series}`)));

    let counter = 0;
    const measure = async (name: string, builder: Builder): Promise<Measured> => {
      const t0 = performance.now();
      const pin = await builder.pin();
      const pinMs = performance.now() - t0;
      const limit = pLimit(jobs);
      const buildMs: number[] = [];
      const results = new Map<string, BuildResult>();
      const started = performance.now();
      await Promise.all(
        k.kernels.flatMap((kernel) =>
          Array.from({ length: copies }, () =>
            limit(async () => {
              const dir = join(scratch, `${name}-${++counter}`);
              await mkdir(join(dir, 'work'), { recursive: true });
              const target = debianTarget(kernel, pin, exampleDriver());
              const s = performance.now();
              const r = await builder.build({
                target,
                kernelRoot: roots.get(kernel.release)!,
                driverDir: join(PROJECT_ROOT, 'examples', 'probe'),
                workDir: join(dir, 'work'),
                outFile: join(dir, 'probe.o'),
                logFile: join(dir, 'build.log'),
              });
              buildMs.push(performance.now() - s);
              results.set(kernel.release, r);
            }),
          ),
        ),
      );
      return { name, pinMs, wallMs: performance.now() - started, buildMs, results };
    };

    const host = await measure('host', createHostBuilder());
    const docker = await measure('docker', createDockerBuilder({ docker: d.docker }));
    const probes = k.kernels.length * copies;
    const perProbe = (m: Measured) => m.wallMs / probes;
    const ratio = perProbe(docker) / perProbe(host);
    const same = k.kernels.every((kernel) => host.results.get(kernel.release)?.sha256 === docker.results.get(kernel.release)?.sha256);

    const lines = [
      '## Docker builder vs host',
      '',
      `The example probe for ${k.kernels.map((x) => x.release).join(' and ')}, each built ${copies} times, at -j ${jobs}, ` +
        `one run (\`node --import tsx bench/docker-vs-host.ts\`), on ${cpus().length} cores; load average ${load0.toFixed(1)} at the start, ${loadavg()[0]!.toFixed(1)} at the end. ` +
        `Builder image ${image.tag}.`,
      '',
      '| builder | pin (once) | wall time, all probes | per probe | slowest build |',
      '|---|---|---|---|---|',
      ...[host, docker].map(
        (m) => `| ${m.name} | ${fmt(m.pinMs)} | ${fmt(m.wallMs)} | ${fmt(perProbe(m))} | ${fmt(Math.max(...m.buildMs))} |`,
      ),
      '',
      `Docker / host, per probe: **${ratio.toFixed(2)}** (aim: at most 1.5). Probes byte-identical between the builders: ${same ? 'yes' : 'NO'}.`,
      '',
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await rm(scratch, { recursive: true, force: true });
    await stopDockerIfStarted();
  }
}

await main();
