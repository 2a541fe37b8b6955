import { availableParallelism } from 'node:os';
import type { FetchVia } from '../../fetch/types.js';
import { loadBuildGraph } from '../../graph/load.js';
import type { Target } from '../../graph/types.js';
import { runPaths } from '../../run/paths.js';
import { createPipeline } from '../../run/pipeline.js';
import { withInterrupts } from '../../run/interrupt.js';
import { parseAcceleratorRequest, type AcceleratorRequest } from '../../verify/accelerator.js';
import { runVerifyLoad, verifyReportJson, verifySummaryLine, type VerifyReport } from '../../verify/run.js';
import { createLoadVerifier, kernelImageCacheDir } from '../../verify/verifier.js';
import { DEFAULT_MEMORY_MIB, DEFAULT_VERIFY_TIMEOUT_MS } from '../../verify/verify-load.js';
import { parsePositiveInt, type CliContext, type Command } from '../context.js';
import { inSelectedShard, parseSelection, selectedTargets, selectionOptions, selectionUsage } from '../selection-options.js';
import { interrupted, NOT_OK, OK, type Outcome } from '../outcome.js';
import { fetchOptions, fetchOptionsUsage, parseFetchOptions } from '../fetch-options.js';

export const command: Command = {
  name: 'load-test',
  summary: "boot each probe's own kernel in a VM, load the probe, and record the verdict in the repository index",
  usage: `usage: falco-probes load-test [PATTERN...] [options]
       falco-probes verify-load ...   (its old name, accepted until the next release, with a note on stderr)

For each selected target whose probe is in the local repository (built for the
target's current key): fetch the kernel's bootable image (the lockfile package
with role \`image\`), boot it under qemu with a minimal initramfs (busybox,
bpftool, the probe), load every program of the probe with
\`bpftool prog loadall\` (a kernel module: \`insmod\`, its /dev nodes and
/proc/modules line, \`rmmod\`), and record the verdict in the probe's index entry:

  loaded      the kernel took every program (the module was loaded)
  refused     the verifier, the loader or the kernel refused it; its log (its reason) is recorded
  no-boot     the kernel did not reach /init (a panic, an image qemu cannot load)
  timeout     the kernel booted but loading did not finish in time
  unknown     the guest's record did not arrive whole, twice (booted again by the next run)

Each target's status (--json's \`results\`): verified (booted now: its verdict above),
recorded (its verdict was known), not-built, unverified (no VM here can boot it),
failed (could not be checked: the image package could not be fetched, the probe is
damaged), cancelled (its VM was stopped by Ctrl-C or SIGTERM: nothing recorded),
skipped (not started: the run was interrupted).

Probes that already have a verdict for their current build are not booted
again (see --force). Needs qemu-system-x86, bpftool and busybox-static.
Kernels of another machine than x86_64 (aarch64) cannot be booted here: their
probes are left unverified, which fails the run unless --allow-unverified.

patterns (default //probes/...): //probes/..., //probes/<os>/..., //probes/<os>:<name>

options:
  -j, --jobs N               at most N VMs at once (default: the number of cores, ${availableParallelism()} here),
                             and no more than free memory holds
      --allow-unverified     exit 0 even when a probe was refused, its kernel did not boot or timed out,
                             or no guest here can boot it (aarch64)
      --force                boot and load again probes that already have a verdict
      --timeout SECONDS      time limit of one VM, boot to power-off (default ${DEFAULT_VERIFY_TIMEOUT_MS / 1000})
      --memory MIB           guest memory (default ${DEFAULT_MEMORY_MIB})
      --accel MODE           kvm, tcg, or auto: KVM when a bounded first boot shows it works (default)
      --json                 print a machine-readable report on stdout
${selectionUsage(['label'], '      ', 29)}
      --shard I/N            only the targets of shard I of N (the split of falco-probes plan and build --shard)
${selectionUsage(['repository', 'wait-lock'], '      ', 29)}
${fetchOptionsUsage('      ', 29)}

exit status: 0 when every checked probe loaded (or --allow-unverified), 1 otherwise (each probe that
did not load, or could not be booted, is named on stderr), 2 for bad input, 130 after
Ctrl-C (SIGINT) and 143 after SIGTERM (the running VMs are stopped, their targets cancelled).
`,
  options: {
    'allow-unverified': { type: 'boolean' },
    force: { type: 'boolean' },
    timeout: { type: 'string' },
    memory: { type: 'string' },
    accel: { type: 'string' },
    json: { type: 'boolean' },
    ...selectionOptions('jobs', 'label', 'shard', 'repository', 'wait-lock'),
    ...fetchOptions,
  },
  allowPositionals: true,
  async run({ values, positionals }, ctx) {
    // Check every option before reading anything.
    const options = parseVerifyOptions(values, ctx.root);
    const selection = parseSelection(values, ctx.root);

    const graph = await loadBuildGraph(ctx.root, { logger: ctx.logger });
    // The same split as plan and build --shard: a CI shard verifies what it built.
    const targets = inSelectedShard(selectedTargets(graph, positionals, selection), selection);

    return withInterrupts(ctx.logger, async (signal) => {
      const { report, outcome } = await runVerifyStep(ctx, targets, options, signal);
      if (values['json'] === true) ctx.stdout.write(verifyReportJson(report));
      return outcome;
    });
  },
};

/** What a verify run needs besides its targets; `build --verify-load` fills it from its own options. */
export interface VerifyStepOptions {
  /** At most this many VMs at once (fewer when memory is short). */
  jobs: number;
  timeoutS: number;
  memoryMiB: number;
  downloads: number;
  accelerator: AcceleratorRequest;
  via: FetchVia;
  mirrorOverrides: Map<string, string[]>;
  allowUnverified: boolean;
  force: boolean;
  waitLock: boolean;
  repositoryDir: string;
  /** Package cache (default: the fetcher's). */
  cacheDir?: string;
}

/** verify-load's options, checked (usage errors before anything is read). */
export function parseVerifyOptions(values: Record<string, unknown>, root: string): VerifyStepOptions {
  const fetch = parseFetchOptions(values);
  const { jobs, waitLock, repositoryDir } = parseSelection(values, root);
  return {
    jobs,
    timeoutS: parsePositiveInt(values['timeout'], '--timeout', DEFAULT_VERIFY_TIMEOUT_MS / 1000),
    memoryMiB: parsePositiveInt(values['memory'], '--memory', DEFAULT_MEMORY_MIB),
    downloads: fetch.downloads,
    accelerator: parseAcceleratorRequest(values['accel']),
    via: fetch.via,
    mirrorOverrides: fetch.mirrorOverrides,
    allowUnverified: values['allow-unverified'] === true,
    force: values['force'] === true,
    waitLock,
    repositoryDir,
    ...(fetch.cacheDir !== undefined ? { cacheDir: fetch.cacheDir } : {}),
  };
}

/**
 * Verify `targets` (already selected, and sharded), record the verdicts, and
 * say on stderr why each probe that is not verified is not: the step's outcome
 * is ok when it passed, not-ok when not, interrupted when a signal stopped it.
 */
export async function runVerifyStep(
  ctx: CliContext,
  targets: readonly Target[],
  o: VerifyStepOptions,
  signal: AbortSignal,
): Promise<{ report: VerifyReport; outcome: Outcome }> {
  const report = await runVerifyLoad({
    targets,
    repositoryDir: o.repositoryDir,
    paths: runPaths(ctx.root),
    force: o.force,
    allowUnverified: o.allowUnverified,
    waitLock: o.waitLock,
    logger: ctx.logger,
    signal,
    makeVerifier: async () => {
      // The run's fetcher (cache, mirrors, apt), as build uses it; the builder it also makes is never asked to build.
      const pipeline = await createPipeline({
        projectRoot: ctx.root,
        kernelsDir: ctx.kernelsDir,
        targets,
        mirrorOverrides: o.mirrorOverrides,
        via: o.via,
        downloads: o.downloads,
        logger: ctx.logger,
        signal,
        ...(o.cacheDir !== undefined ? { cacheDir: o.cacheDir } : {}),
      });
      return createLoadVerifier({
        fetch: (pkg, opts) => pipeline.fetcher.fetch(pkg, opts),
        imageCacheDir: kernelImageCacheDir(pipeline.fetcher.cacheDir),
        jobs: o.jobs,
        memoryMiB: o.memoryMiB,
        timeoutMs: o.timeoutS * 1000,
        accelerator: o.accelerator,
        logger: ctx.logger,
        signal,
      });
    },
  });
  for (const problem of report.problems) (o.allowUnverified ? ctx.logger.warn : ctx.logger.error)(problem.format());
  for (const r of report.results) if (r.status === 'failed') ctx.logger.error(`${r.label} could not be checked: ${r.error}`);
  if (signal.aborted) {
    ctx.logger.error(`interrupted: ${verifySummaryLine(report)}`);
    return { report, outcome: interrupted(signal) };
  }
  if (report.passed) {
    ctx.logger.info(verifySummaryLine(report));
    return { report, outcome: OK };
  }
  const unverified = report.problems.length;
  ctx.logger.error(
    `${verifySummaryLine(report)}${unverified ? `; ${unverified} probe${unverified === 1 ? '' : 's'} remain${unverified === 1 ? 's' : ''} unverified (--allow-unverified accepts them)` : ''}`,
  );
  return { report, outcome: NOT_OK };
}
