import { availableParallelism } from 'node:os';
import { FalcoProbesError, errorMessage } from '../../util/errors.js';
import { loadBuildGraph } from '../../graph/load.js';
import { runPaths } from '../../run/paths.js';
import { REASON_TEXT } from '../../run/plan.js';
import { reportJson, runBuild, summaryLine, type BuildReport } from '../../run/runner.js';
import { withInterrupts } from '../../run/interrupt.js';
import { noopStamp } from '../../run/noop-stamp.js';
import { buildableHere } from '../../run/buildable.js';
import { hostArch } from '../../builders/host-facts.js';
import { builderOptions, builderOptionsUsage, parseBuilderOptions, prepareBuilder } from '../builder-option.js';
import { driverMirrorOptions, driverMirrorUsage, parseDriverMirrors } from '../driver-source-option.js';
import type { Target } from '../../graph/types.js';
import { parsePositiveInt, type Command } from '../context.js';
import { inSelectedShard, parseSelection, selectedTargets, selectionOptions, selectionUsage } from '../selection-options.js';
import { interrupted, okIf, worse } from '../outcome.js';
import { fetchOptions, fetchOptionsUsage, parseFetchOptions, pipelineOptions } from '../fetch-options.js';

export const command: Command = {
  name: 'build',
  summary: 'build every out-of-date probe of the selected targets into the local repository',
  usage: `usage: falco-probes build [PATTERN...] [options]

Builds the probes of the selected targets whose repository entry is missing,
was built for another key, or whose file is missing or damaged; publishes
each into the local repository (Falco's layout, index.json, SHA256SUMS) as
soon as it is built. Nothing else counts: no timestamps.

patterns (default //probes/...):
  //probes/...               every target
  //probes/<os>/...          every target of one OS (also //probes/<os>)
  //probes/<os>:<name>       one target, or every target of one kernel

options:
  -j, --jobs N               at most N builds at once (default: the number of cores, ${availableParallelism()} here)
  -k, --keep-going           after a failure, build the rest (default: start nothing new)
  -n, --dry-run              build nothing; list what would build (and lock nothing)
      --explain              say why each target is out of date
      --verify-all           read and hash every published file (and index.json) again; by default a
                             file whose device, inode, size, mtime and ctime are those it had when it
                             was last read and found to hold the index's bytes is not read again
                             (git's rule, with its racy-timestamp check: see docs/PERFORMANCE.md)
      --json                 print a machine-readable summary on stdout
${selectionUsage(['label', 'repository', 'wait-lock'], '      ', 29)}
${fetchOptionsUsage('      ', 29)}
      --timeout SECONDS      time limit of one build (default 1800)
      --shard I/N            build only shard I of N (targets split by key; see falco-probes plan)
${driverMirrorUsage('      ', 29)}
      --skip-unreachable-drivers
                             a driver source that cannot be downloaded (every URL or mirror fails
                             to answer) drops that driver's targets, with one line saying so, and
                             the rest is built; without it the run stops before building anything.
                             A source with the wrong bytes (sha256 or tree hash) is always an error
      --skip-unbuildable     out-of-date targets that no builder here can build (another
                             architecture: this machine's is ${hostArch() ?? process.arch}; a module keyed for a compiler
                             image when no Docker daemon answers) are reported, one line per
                             reason, and the rest is built; without it the run stops before
                             building anything. plan shows them too
${builderOptionsUsage('      ', 29)}
      --load-test            after building, boot the kernel of each selected probe (of this shard)
                             in qemu and load it (see falco-probes load-test --help); a probe
                             refused, or whose kernel did not boot or timed out, fails the run, as
                             does one no VM here can boot (aarch64); with --json the load test's
                             report is the build report's \`verify\` field
      --verify-load          the old name of --load-test (accepted until the next release)
      --allow-unverified     with --load-test: record such probes without failing

Every out-of-date target's driver source is obtained (downloaded, verified, unpacked) once,
before anything is built.

exit status: 0 when every selected target is up to date or built (or skipped with
--skip-unreachable-drivers or --skip-unbuildable), 1 when any failed, 2 for bad input.
`,
  options: {
    'keep-going': { type: 'boolean', short: 'k' },
    'dry-run': { type: 'boolean', short: 'n' },
    explain: { type: 'boolean' },
    'verify-all': { type: 'boolean' },
    json: { type: 'boolean' },
    ...selectionOptions('jobs', 'label', 'repository', 'wait-lock', 'shard'),
    ...fetchOptions,
    timeout: { type: 'string' },
    ...driverMirrorOptions,
    'skip-unreachable-drivers': { type: 'boolean' },
    'skip-unbuildable': { type: 'boolean' },
    ...builderOptions,
    'load-test': { type: 'boolean' },
    'verify-load': { type: 'boolean' },
    'allow-unverified': { type: 'boolean' },
  },
  allowPositionals: true,
  async run({ values, positionals }, ctx) {
    // Check every option before reading anything.
    const selection = parseSelection(values, ctx.root);
    const { jobs, labels, repositoryDir } = selection;
    const timeoutS = parsePositiveInt(values['timeout'], '--timeout', 1800);
    // --cache, resolved once: the package cache (and, beside it, the Docker pin memo).
    const fetch = parseFetchOptions(values);
    const { cacheDir, via, mirrorOverrides, downloads } = fetch;
    const dryRun = values['dry-run'] === true;
    const explain = values['explain'] === true;
    const json = values['json'] === true;
    const builderChoice = parseBuilderOptions(values);
    const driverMirrors = parseDriverMirrors(values);
    // A complete no-op leaves a stamp that bin/ replays until something it records changes; anything else removes it.
    const stamp = dryRun
      ? undefined
      : noopStamp(ctx.root, {
          verifyAll: values['verify-all'] === true,
          verifyLoad: values['load-test'] === true || values['verify-load'] === true,
          builder: builderChoice.kind,
        });
    if (values['verify-load'] === true)
      ctx.logger.warn('--verify-load is the old name of --load-test, accepted until the next release; use --load-test');

    // A dry run writes nothing, the graph's memo included.
    const graph = await loadBuildGraph(ctx.root, { logger: ctx.logger, remember: !dryRun });
    // An unpinned remote driver has no targets: asking for it by label or by a target name that carries it is refused with the way out.
    const selectedDrivers = new Set(labels.filter((l) => l.startsWith('driver=')).map((l) => l.slice('driver='.length)));
    for (const d of graph.unpinned) {
      if (
        selectedDrivers.has(d.name) ||
        positionals.some((p) => p.includes(':') && (p.endsWith(`-${d.name}`) || `${p}-`.includes(`-${d.name}-${d.version}-`)))
      )
        throw new FalcoProbesError(
          'config',
          `driver ${d.name} ${d.version} is a remote tarball without a sha256 pin; refusing to build from unverified source`,
          {
            location: { file: graph.driversFile },
            hint: `run \`falco-probes pin ${d.name}\` on a machine that can download it, or point its source at a local checkout`,
          },
        );
    }
    let targets: Target[] = selectedTargets(graph, positionals, selection);
    // The generated Makefile's recipes name the key they were generated for: a stale Makefile is refused, not obeyed.
    const wantedKey = process.env['FALCO_PROBES_KEY'];
    if (wantedKey !== undefined && wantedKey !== '' && !(targets.length === 1 && targets[0]!.key === wantedKey))
      throw new FalcoProbesError(
        'usage',
        `FALCO_PROBES_KEY is ${wantedKey}, but ${targets.length === 1 ? `${targets[0]!.label}'s key is ${targets[0]!.key}` : `${targets.length} targets are selected`}: the generated files are older than the lockfiles or drivers.yaml`,
        {
          hint: 'run falco-probes generate, then make again',
        },
      );
    const paths = runPaths(ctx.root);

    // The Docker builder's image id is its pin: every key built with it names the image,
    // so the selected targets are keyed again for it (the generated files hold host keys).
    const prepared = await prepareBuilder(builderChoice, targets, ctx.logger, cacheDir);
    const builder = prepared.builder;
    targets = prepared.targets;
    // A shard is a fixed slice of the keys: every machine computes the same split (falco-probes plan prints it).
    targets = inSelectedShard(targets, selection);

    return withInterrupts(ctx.logger, async (signal) => {
      const report = await runBuild({
        targets,
        repositoryDir,
        paths,
        jobs,
        keepGoing: values['keep-going'] === true,
        dryRun,
        explain,
        verifyAll: values['verify-all'] === true,
        waitLock: selection.waitLock,
        logger: ctx.logger,
        timeoutMs: timeoutS * 1000,
        signal,
        unreachableDrivers: values['skip-unreachable-drivers'] === true ? 'skip' : 'fail',
        unbuildable: { mode: values['skip-unbuildable'] === true ? 'skip' : 'fail', here: buildableHere() },
        // Loaded only when something is out of date: fetchers, extractors and builders are most of the tool.
        makePipeline: async () =>
          (await import('../../run/pipeline.js')).createPipeline(pipelineOptions(ctx, fetch, { targets, signal, driverMirrors, builder })),
      });
      stamp?.ran({ report, aborted: signal.aborted, graph, targets, repositoryDir });
      const verifying = (values['load-test'] === true || values['verify-load'] === true) && !dryRun;
      // With --load-test the build report waits for the load test's report: stdout holds one JSON document.
      if (json && !verifying) ctx.stdout.write(reportJson(report));
      else if (dryRun && !json) {
        const lines = report.results
          .filter((r) => r.status === 'would-build')
          .map((r) => (explain ? `${r.label}: ${REASON_TEXT[r.reason!]}${r.detail ? ` (${r.detail})` : ''}` : r.label));
        if (lines.length) ctx.stdout.write(`${lines.join('\n')}\n`);
      }
      if (signal.aborted) {
        if (json && verifying) ctx.stdout.write(buildVerifyJson(report, undefined));
        ctx.logger.error(`interrupted: ${summaryLine(report)}`);
        return interrupted(signal);
      }
      (report.failed ? ctx.logger.error : report.unreachable || report.unbuildable ? ctx.logger.warn : ctx.logger.info)(
        summaryLine(report),
      );
      const built = okIf(!(report.failed || report.skipped));
      if (!verifying) return built;

      // Verify exactly what this run selected (its shard, and its keys: the Docker builder's too).
      // Loaded only here: a build without --load-test never reads the verify modules.
      const { runVerifyStep } = await import('./verify-load.js');
      const { verifyReportObject } = await import('../../verify/run.js');
      const { DEFAULT_MEMORY_MIB, DEFAULT_VERIFY_TIMEOUT_MS } = await import('../../verify/verify-load.js');
      let verify: Awaited<ReturnType<typeof runVerifyStep>>;
      try {
        verify = await runVerifyStep(
          ctx,
          targets,
          {
            jobs,
            timeoutS: DEFAULT_VERIFY_TIMEOUT_MS / 1000,
            memoryMiB: DEFAULT_MEMORY_MIB,
            downloads,
            accelerator: 'auto',
            via,
            mirrorOverrides,
            allowUnverified: values['allow-unverified'] === true,
            force: false,
            waitLock: selection.waitLock,
            repositoryDir,
            ...(cacheDir !== undefined ? { cacheDir } : {}),
          },
          signal,
        );
      } catch (err) {
        if (json) ctx.stdout.write(buildVerifyJson(report, { error: errorMessage(err) }));
        throw err;
      }
      if (json) ctx.stdout.write(buildVerifyJson(report, verifyReportObject(verify.report)));
      return worse(built, verify.outcome);
    });
  },
};

/**
 * `build --load-test --json`: one document, the build report with the
 * load test's report as its `verify` field (`{error}` when the load test failed
 * to run, null when it was not reached).
 */
function buildVerifyJson(build: BuildReport, verify: object | undefined): string {
  const doc = JSON.parse(reportJson(build)) as Record<string, unknown>;
  doc['verify'] = verify ?? null;
  return `${JSON.stringify(doc, null, 2)}\n`;
}
