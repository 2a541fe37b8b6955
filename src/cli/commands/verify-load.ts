import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { loadBuildGraph } from '../../graph/load.js';
import { runPaths, DEFAULT_REPOSITORY_DIR } from '../../run/paths.js';
import { createPipeline } from '../../run/pipeline.js';
import { parseLabels, selectTargets } from '../../run/select.js';
import { withInterrupts } from '../../run/interrupt.js';
import { parseAcceleratorRequest } from '../../verify/accelerator.js';
import { consoleLogFile, runVerifyLoad, verifyReportJson, verifySummaryLine } from '../../verify/run.js';
import { createLoadVerifier, kernelImageCacheDir } from '../../verify/verifier.js';
import { DEFAULT_MEMORY_MIB, DEFAULT_VERIFY_TIMEOUT_MS } from '../../verify/verify-load.js';
import { parseMirrorOverrides, parsePositiveInt, type Command } from '../context.js';
import { parseFetchVia } from './build.js';

export const command: Command = {
  name: 'verify-load',
  summary: 'boot each probe\'s own kernel in a VM, load the probe, and record the verdict in the repository index',
  usage: `usage: falco-probes verify-load [PATTERN...] [options]

For each selected target whose probe is in the local repository (built for the
target's current key): fetch the kernel's bootable image (the lockfile package
with role \`image\`), boot it under qemu with a minimal initramfs (busybox,
bpftool, the probe), load every program of the probe with
\`bpftool prog loadall\`, and record the verdict in the probe's index entry:

  loaded      the kernel took every program
  refused     the verifier (or the loader) refused it; its log is recorded
  no-boot     the kernel did not reach /init (a panic, an image qemu cannot load)
  timeout     the kernel booted but loading did not finish in time

Probes that already have a verdict for their current build are not booted
again (see --force). Needs qemu-system-x86, bpftool and busybox-static.

patterns (default //probes/...): //probes/..., //probes/<os>/..., //probes/<os>:<name>

options:
  -j, --jobs N               at most N VMs at once (default: the number of cores, ${availableParallelism()} here),
                             and no more than free memory holds
      --allow-unverified     exit 0 even when a probe was refused or its kernel did not boot or timed out
      --force                verify again probes that already have a verdict
      --timeout SECONDS      time limit of one VM, boot to power-off (default ${DEFAULT_VERIFY_TIMEOUT_MS / 1000})
      --memory MIB           guest memory (default ${DEFAULT_MEMORY_MIB})
      --accel MODE           kvm, tcg, or auto: KVM when a bounded first boot shows it works (default)
      --json                 print a machine-readable report on stdout
      --label KEY=VALUE      only targets with this label (os, driver, arch, kind, flavour); repeatable
      --repository DIR       the local repository (default: ${DEFAULT_REPOSITORY_DIR}/ under the project root)
      --wait-lock            wait for another runner's lock on the repository instead of failing
      --mirror NAME=URL      fetch repository NAME's packages from URL (repeatable)
      --fetch-via MODE       http (mirrors), apt (apt-get download), or auto: mirrors, then apt (default)
      --cache DIR            package cache (default: $XDG_CACHE_HOME/falco-probes/packages)
      --downloads N          at most N downloads at once (default 4)

exit status: 0 when every checked probe loaded (or --allow-unverified), 1 otherwise, 2 for bad input.
`,
  options: {
    jobs: { type: 'string', short: 'j' },
    'allow-unverified': { type: 'boolean' },
    force: { type: 'boolean' },
    timeout: { type: 'string' },
    memory: { type: 'string' },
    accel: { type: 'string' },
    json: { type: 'boolean' },
    label: { type: 'string', multiple: true },
    repository: { type: 'string' },
    'wait-lock': { type: 'boolean' },
    mirror: { type: 'string', multiple: true },
    'fetch-via': { type: 'string' },
    cache: { type: 'string' },
    downloads: { type: 'string' },
  },
  allowPositionals: true,
  async run({ values, positionals }, ctx) {
    // Check every option before reading anything.
    const jobs = parsePositiveInt(values['jobs'], '--jobs', availableParallelism());
    const timeoutS = parsePositiveInt(values['timeout'], '--timeout', DEFAULT_VERIFY_TIMEOUT_MS / 1000);
    const memoryMiB = parsePositiveInt(values['memory'], '--memory', DEFAULT_MEMORY_MIB);
    const downloads = parsePositiveInt(values['downloads'], '--downloads', 4);
    const accelerator = parseAcceleratorRequest(values['accel']);
    const via = parseFetchVia(values['fetch-via']);
    const mirrorOverrides = parseMirrorOverrides(values['mirror']);
    const labels = (values['label'] as string[] | undefined) ?? [];
    parseLabels(labels);
    const allowUnverified = values['allow-unverified'] === true;
    const repositoryDir = resolve(ctx.root, (values['repository'] as string | undefined) ?? DEFAULT_REPOSITORY_DIR);

    const graph = await loadBuildGraph(ctx.root, { logger: ctx.logger });
    const targets = selectTargets(graph.targets, { patterns: positionals, labels, knownOs: graph.lockfiles.map((l) => l.lock.os) });
    const paths = runPaths(ctx.root);

    return withInterrupts(ctx.logger, async (signal) => {
      const report = await runVerifyLoad({
        targets,
        repositoryDir,
        paths,
        force: values['force'] === true,
        allowUnverified,
        waitLock: values['wait-lock'] === true,
        logger: ctx.logger,
        signal,
        makeVerifier: async () => {
          // The run's fetcher (cache, mirrors, apt), as build uses it; the builder it also makes is never asked to build.
          const pipeline = await createPipeline({
            projectRoot: ctx.root,
            kernelsDir: ctx.kernelsDir,
            targets,
            mirrorOverrides,
            via,
            downloads,
            logger: ctx.logger,
            signal,
            ...(values['cache'] !== undefined ? { cacheDir: resolve(String(values['cache'])) } : {}),
          });
          return createLoadVerifier({
            fetch: (pkg, opts) => pipeline.fetcher.fetch(pkg, opts),
            imageCacheDir: kernelImageCacheDir(pipeline.fetcher.cacheDir),
            jobs,
            memoryMiB,
            timeoutMs: timeoutS * 1000,
            accelerator,
            logger: ctx.logger,
            signal,
          });
        },
      });
      if (values['json'] === true) ctx.stdout.write(verifyReportJson(report));
      const byLabel = new Map(targets.map((t) => [t.label, t]));
      for (const r of report.results) {
        if (r.status === 'verified' && r.verdict !== 'loaded') {
          const target = byLabel.get(r.label);
          const log = target ? consoleLogFile(paths, target) : r.consoleLog;
          (allowUnverified ? ctx.logger.warn : ctx.logger.error)(`${r.label}: ${r.verdict}: ${r.message}${log ? `\nconsole: ${log}` : ''}`);
        } else if (r.status === 'failed') ctx.logger.error(`${r.label} could not be checked: ${r.error}`);
      }
      if (signal.aborted) {
        ctx.logger.error(`interrupted: ${verifySummaryLine(report)}`);
        return 130;
      }
      (report.passed ? ctx.logger.info : ctx.logger.error)(verifySummaryLine(report));
      return report.passed ? 0 : 1;
    });
  },
};
