import { readFile, rm, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { FalcoProbesError } from '../../util/errors.js';
import { writeFileAtomic } from '../../util/fs.js';
import { loadBuildGraph } from '../../graph/load.js';
import { buildTarget } from '../../run/build-target.js';
import { withInterrupts } from '../../run/interrupt.js';
import { removeStaleWorkDirs, runPaths } from '../../run/paths.js';
import { createPipeline } from '../../run/pipeline.js';
import { formatDuration } from '../../run/progress.js';
import { checkBuilderPin } from '../../run/runner.js';
import { nearMatches, selectTargets } from '../../run/select.js';
import { parsePositiveInt, type Command } from '../context.js';
import { OK } from '../outcome.js';
import { fetchOptions, fetchOptionsUsage, parseFetchOptions, pipelineOptions } from '../fetch-options.js';
import { BUILDER_ENV, builderOptions, builderOptionsUsage, parseBuilderOptions, prepareBuilder } from '../builder-option.js';
import { DRIVER_MIRROR_ENV, driverMirrorOptions, driverMirrorUsage, parseDriverMirrors } from '../driver-source-option.js';

export const command: Command = {
  name: 'build-probe',
  summary: 'build one probe into a file, without the repository (what Please and Make recipes call)',
  usage: `usage: falco-probes build-probe OS KERNEL [--driver DRIVER] --out FILE [options]

Builds the probe of one target (OS's kernel KERNEL, with DRIVER when several
drivers apply) and writes it to FILE atomically. The repository and its
index are not touched; packages come from (and go to) the shared cache.
When FALCO_PROBES_KEY is set (the generated Makefile and Please rules set
it), it must equal the target's key: a different one means the build files
are stale. With the Docker builder the probe is built under a key that also
names the image (its bytes are the host builder's); the check is against the
generated files' key all the same.

${BUILDER_ENV}=docker (or host) chooses the builder when --builder
is not given: Make recipes and Please rules (pass_env) carry it here, as
they carry ${DRIVER_MIRROR_ENV} (--driver-mirror pairs separated by ;).

options:
  --driver NAME          the driver, when several apply to the kernel
  --out FILE             where to write the probe (relative to the working directory)
${fetchOptionsUsage('  ', 25)}
  --timeout SECONDS      time limit of the build (default 1800)
  --json                 print the result (label, key, builder, sha256, size) on stdout
${driverMirrorUsage('  ', 25)}
${builderOptionsUsage('  ', 25)}
`,
  options: {
    driver: { type: 'string' },
    out: { type: 'string' },
    ...fetchOptions,
    timeout: { type: 'string' },
    json: { type: 'boolean' },
    ...driverMirrorOptions,
    ...builderOptions,
  },
  allowPositionals: true,
  async run({ values, positionals }, ctx) {
    if (positionals.length !== 2)
      throw new FalcoProbesError('usage', 'build-probe takes an OS and a kernel', { hint: 'see: falco-probes build-probe --help' });
    const [os, kernel] = positionals as [string, string];
    if (typeof values['out'] !== 'string' || values['out'] === '') throw new FalcoProbesError('usage', 'build-probe needs --out FILE');
    const out = resolve(values['out']);
    // A file, not a folder: refused before anything is built (writing would fail with EISDIR or EBUSY at the end).
    const outStat = await stat(out).catch(() => undefined);
    if (out === '/' || values['out'].endsWith('/') || outStat?.isDirectory())
      throw new FalcoProbesError('usage', `--out ${values['out']} names a directory; it must name the probe file to write`, {
        hint: 'e.g. --out probe.o (or --out DIR/NAME.ko)',
      });
    const fetch = parseFetchOptions(values);
    const { cacheDir } = fetch;
    const timeoutS = parsePositiveInt(values['timeout'], '--timeout', 1800);
    const builderChoice = parseBuilderOptions(values);
    const driverMirrors = parseDriverMirrors(values);

    const graph = await loadBuildGraph(ctx.root);
    // The pattern gives the same near-match errors as `build` for an unknown OS or kernel.
    let candidates = selectTargets(graph.targets, { patterns: [`//probes/${os}:${kernel}`], knownOs: graph.oses });
    const driver = values['driver'] as string | undefined;
    if (driver !== undefined) {
      const drivers = candidates.map((t) => t.driver.name);
      candidates = candidates.filter((t) => t.driver.name === driver);
      if (!candidates.length) {
        const unpinned = graph.unpinned.find((d) => d.name === driver);
        if (unpinned)
          throw new FalcoProbesError(
            'config',
            `driver ${driver} ${unpinned.version} is a remote tarball without a sha256 pin; refusing to build from unverified source`,
            {
              location: { file: graph.driversFile },
              hint: `run \`falco-probes pin ${driver}\` on a machine that can download it`,
            },
          );
        const near = nearMatches(driver, drivers);
        throw new FalcoProbesError('usage', `no driver "${driver}" applies to ${os} ${kernel}`, {
          hint: `drivers for it: ${[...new Set(drivers)].join(', ') || 'none'}${near.length ? ` (did you mean ${near[0]}?)` : ''}`,
        });
      }
    }
    if (candidates.length > 1)
      throw new FalcoProbesError('usage', `${os} ${kernel} has ${candidates.length} targets; name one with --driver`, {
        details: candidates.map((t) => `  ${t.label} (driver ${t.driver.name}, ${t.kind}, ${t.arch})`).join('\n'),
      });
    const generated = candidates[0]!;
    const wantedKey = process.env['FALCO_PROBES_KEY'];
    if (wantedKey !== undefined && wantedKey !== '' && wantedKey !== generated.key)
      throw new FalcoProbesError(
        'stale',
        `${generated.label}: the build file asks for key ${wantedKey.slice(0, 12)}, but the lockfiles and pins give ${generated.key.slice(0, 12)}`,
        {
          hint: 'the generated build files are stale: run falco-probes generate',
        },
      );
    // Docker: the target keyed with the image's pin, which the builder checks it is given.
    const {
      builder,
      targets: [target],
    } = await prepareBuilder(builderChoice, [generated], ctx.logger, cacheDir);
    if (!target) throw new FalcoProbesError('internal', `${generated.label}: no target after choosing the builder`);

    const paths = runPaths(ctx.root);
    // A private work directory per process: Make or Please may run several recipes of one project at once.
    const workDir = paths.workDir(target, 'probe');
    const logFile = paths.logFile(target);
    return withInterrupts(ctx.logger, async (signal) => {
      const pipeline = await createPipeline(pipelineOptions(ctx, fetch, { targets: [target], signal, driverMirrors, builder }));
      await checkBuilderPin(pipeline, [target]);
      await removeStaleWorkDirs(paths, target);
      const t0 = performance.now();
      let built;
      try {
        built = await buildTarget(target, pipeline, { workDir, logFile, signal, timeoutMs: timeoutS * 1000 });
      } catch (err) {
        ctx.logger.error(`work directory kept for inspection: ${workDir}; log: ${logFile}`);
        throw err;
      }
      await writeFileAtomic(out, await readFile(built.file));
      await rm(workDir, { recursive: true, force: true });
      const how = builder ? ` with the Docker builder (key ${target.key.slice(0, 12)})` : '';
      ctx.logger.info(`built ${target.label}${how} in ${formatDuration(performance.now() - t0)}: ${out} (sha256 ${built.sha256})`);
      if (values['json'] === true)
        ctx.stdout.write(
          `${JSON.stringify({ label: target.label, key: target.key, builder: target.builder, file: out, output: target.output, sha256: built.sha256, size: built.size })}\n`,
        );
      return OK;
    });
  },
};
