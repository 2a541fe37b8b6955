import { FalcoProbesError, errorKindOf, type ErrorKind } from '../util/errors.js';
import { canonicalJson } from '../util/hash.js';
import type { Logger } from '../util/log.js';
import type { BuilderPin, Target } from '../graph/types.js';
import { clangSatisfies } from '../builders/host-facts.js';
import { LocalRepository, type PublishStatus } from '../repository/local.js';
import { repositoryMemoPath } from '../repository/memo.js';
import type { TargetPipeline } from './build-target.js';
import { planTargets, REASON_TEXT, type PlannedTarget, type StaleReason } from './plan.js';
import { createProgress, formatDuration } from './progress.js';
import { executeTasks, inWorkDir, reportJsonText, summaryText, sweepDeadRuns, withLockedRepository } from './execution.js';
import type { RunPaths } from './paths.js';
import { unbuildableLines, whyNotBuildable, type BuildableHere } from './buildable.js';

// `build`: plan against the repository's index, then build what is out of
// date with at most `jobs` compiles at once, publishing each probe (and the
// index) as soon as it is built so an interrupted run keeps its work. The
// machinery of building (build-target, driver sources, their fetchers and
// builders) is loaded only when something is out of date: a no-op build
// never loads it (bench/noop.ts).

export interface BuildRunOptions {
  /** The selected targets, in graph order. */
  targets: readonly Target[];
  repositoryDir: string;
  paths: RunPaths;
  jobs: number;
  keepGoing: boolean;
  dryRun: boolean;
  explain: boolean;
  /** Read every published file again instead of trusting the stats the repository's memo recorded (`--verify-all`). */
  verifyAll?: boolean;
  waitLock: boolean;
  logger: Logger;
  /** Made only when something is out of date (creating the builder runs the toolchain). */
  makePipeline: () => Promise<TargetPipeline>;
  signal?: AbortSignal;
  timeoutMs?: number;
  /**
   * Obtain every out-of-date target's driver source before building any. A
   * source that cannot be downloaded from anywhere either stops the run
   * before anything is built (`fail`), or drops that driver's targets with one
   * line each (`skip`: status `unreachable`). Unset: each build obtains its
   * own source when it gets to it.
   */
  unreachableDrivers?: 'fail' | 'skip';
  /**
   * Check before any build which out-of-date targets no builder here can
   * build (buildable.ts): `fail` stops the run naming them, `skip` leaves them
   * out with one line per reason (status `unbuildable`). Unset: not checked.
   */
  unbuildable?: { mode: 'fail' | 'skip'; here: BuildableHere };
}

/** `unreachable`: not built because the driver's source could not be downloaded (skipped with --skip-unreachable-drivers). */
/** `unbuildable`: not built because no builder here can build it (another architecture; a compiler image without Docker), with --skip-unbuildable. */
/** `cancelled`: stopped by an interrupt (SIGINT, SIGTERM) while it was building; not a failure, its work directory is removed. */
export type TargetStatus = 'built' | 'up-to-date' | 'failed' | 'skipped' | 'would-build' | 'unreachable' | 'unbuildable' | 'cancelled';

export interface TargetReport {
  label: string;
  file: string;
  key: string;
  status: TargetStatus;
  /** Why it was out of date. */
  reason?: StaleReason;
  /** The evidence for the reason (keys, sha256s), for --explain. */
  detail?: string;
  /** What publishing did (built targets). */
  publish?: PublishStatus;
  sha256?: string;
  ms?: number;
  /** Built targets: milliseconds spent fetching, extracting and compiling. */
  phases?: { fetchMs: number; extractMs: number; buildMs: number };
  /** Failed targets: the error's kind and message, the log and the kept work directory. */
  errorKind?: ErrorKind | 'internal';
  error?: string;
  log?: string;
  workDir?: string;
}

export interface BuildReport {
  repository: string;
  dryRun: boolean;
  targets: number;
  upToDate: number;
  built: number;
  failed: number;
  skipped: number;
  /** Not built: their driver's source was unreachable (--skip-unreachable-drivers). Absent counts as 0. */
  unreachable?: number;
  /** Not built: no builder here can build them (--skip-unbuildable). Absent counts as 0. */
  unbuildable?: number;
  /** Stopped by an interrupt while building. Absent counts as 0. */
  cancelled?: number;
  elapsedMs: number;
  results: TargetReport[];
}

/** Whether a builder that says `actual` builds what a key pinned as `wanted` promises (a bare clang version admits any vendor's build of it). */
export function builderSatisfies(wanted: BuilderPin, actual: BuilderPin): boolean {
  if (wanted.kind === 'host' && actual.kind === 'host') return clangSatisfies(wanted.clang, actual.clang);
  if (wanted.kind === 'docker' && actual.kind === 'docker')
    return wanted.image === actual.image && clangSatisfies(wanted.clang, actual.clang);
  return false;
}

/** Refuse to build when the toolchain differs from the pin in the keys: the keys would lie. */
export async function checkBuilderPin(pipeline: TargetPipeline, targets: readonly Target[]): Promise<void> {
  const actual = await pipeline.builder.pin();
  const wanted = new Map<string, BuilderPin>();
  // Modules keyed for a compiler image are checked by that image's builder when they build (builders/route.ts).
  for (const t of targets)
    if (!(t.builder.kind === 'docker' && t.builder.release !== undefined)) wanted.set(canonicalJson(t.builder), t.builder);
  for (const pin of wanted.values()) {
    if (builderSatisfies(pin, actual)) continue;
    throw new FalcoProbesError(
      'config',
      `the builder here is ${describePin(actual)} but the targets' keys are for ${describePin(pin)}: probes built here would carry keys that lie about how they were built`,
      {
        location: { file: 'kernels/drivers.yaml' },
        hint: `set \`builder\` in kernels/drivers.yaml to ${JSON.stringify(actual)} (then run falco-probes generate), or build where that toolchain is installed`,
      },
    );
  }
}

function describePin(pin: BuilderPin): string {
  return pin.kind === 'host' ? `host clang ${pin.clang}` : `docker image ${pin.image} (clang ${pin.clang})`;
}

function checkDistinctOutputs(targets: readonly Target[]): void {
  const seen = new Map<string, string>();
  for (const t of targets) {
    const other = seen.get(t.output);
    if (other !== undefined)
      throw new FalcoProbesError('config', `${other} and ${t.label} would both write ${t.output}`, {
        hint: 'two kernels map to one Falco probe file name; check the lockfile entries (release, kernelVersion, targetId)',
      });
    seen.set(t.output, t.label);
  }
}

function baseReport(p: PlannedTarget): TargetReport {
  return {
    label: p.target.label,
    file: p.target.output,
    key: p.target.key,
    status: p.reason ? 'would-build' : 'up-to-date',
    ...(p.reason ? { reason: p.reason } : {}),
    ...(p.detail ? { detail: p.detail } : {}),
  };
}

export async function runBuild(o: BuildRunOptions): Promise<BuildReport> {
  const t0 = performance.now();
  checkDistinctOutputs(o.targets);
  const finish = (results: TargetReport[], dryRun: boolean, repository: string): BuildReport => ({
    repository,
    dryRun,
    targets: results.length,
    upToDate: results.filter((r) => r.status === 'up-to-date').length,
    built: results.filter((r) => r.status === 'built').length,
    failed: results.filter((r) => r.status === 'failed').length,
    skipped: results.filter((r) => r.status === 'skipped').length,
    unreachable: results.filter((r) => r.status === 'unreachable').length,
    unbuildable: results.filter((r) => r.status === 'unbuildable').length,
    cancelled: results.filter((r) => r.status === 'cancelled').length,
    elapsedMs: performance.now() - t0,
    results,
  });
  const repository = { verifyAll: o.verifyAll === true, memo: repositoryMemoPath(o.paths.state, o.repositoryDir) };

  if (o.dryRun) {
    const repo = await LocalRepository.read(o.repositoryDir, repository);
    const plan = await planTargets(o.targets, repo);
    return finish(plan.map(baseReport), true, repo.root);
  }

  return withLockedRepository({ ...o, command: 'falco-probes build', repository }, async (repo) => {
    const plan = await planTargets(o.targets, repo);
    const results = plan.map(baseReport);
    let stale: Stale[] = plan.flatMap((p, i) => (p.reason ? [{ target: p.target, report: results[i]! }] : []));
    if (o.explain)
      for (const p of plan) if (p.reason) o.logger.info(`${p.target.label}: ${REASON_TEXT[p.reason]}${p.detail ? ` (${p.detail})` : ''}`);
    o.logger.info(`${o.targets.length} targets: ${o.targets.length - stale.length} up to date, ${stale.length} to build with -j ${o.jobs}`);
    // Work directories and memo temporaries of dead runs go on every run, one with nothing to build too (two readdirs);
    // the package cache is swept when the pipeline is made (a run killed with cache work in flight left targets to build).
    await sweepDeadRuns(o.paths, o.logger);
    if (stale.length === 0) return finish(results, false, repo.root);
    if (o.unbuildable) {
      const reasons = new Map<Target, string>();
      for (const { target } of stale) {
        const why = await whyNotBuildable(target, o.unbuildable.here);
        if (why !== undefined) reasons.set(target, why);
      }
      if (reasons.size) {
        const skipping = o.unbuildable.mode === 'skip';
        const lines = unbuildableLines(reasons, skipping);
        if (!skipping)
          throw new FalcoProbesError('config', lines.join('\n'), {
            hint: 'nothing was built; build them where they can be built, leave them out (--label arch=x86_64), or pass --skip-unbuildable to build the rest and report these',
          });
        for (const line of lines) o.logger.warn(line);
        for (const { target, report } of stale) {
          const why = reasons.get(target);
          if (why === undefined) continue;
          report.status = 'unbuildable';
          report.error = why;
        }
        stale = stale.filter((s) => !reasons.has(s.target));
        if (stale.length === 0) return finish(results, false, repo.root);
      }
    }

    const pipeline = await o.makePipeline();
    await checkBuilderPin(
      pipeline,
      stale.map((s) => s.target),
    );
    if (o.unreachableDrivers) {
      // Every driver source once, before any build: an unreachable one is known now, not after hours of builds.
      const { obtainDriverSources, unreachableDriverLine } = await import('./driver-source.js');
      let unreachable: Awaited<ReturnType<typeof obtainDriverSources>>;
      try {
        unreachable = await obtainDriverSources(
          stale.map((s) => s.target),
          (driver) => pipeline.driverDir(driver),
        );
      } catch (err) {
        if (!o.signal?.aborted) throw err;
        // Interrupted while downloading sources: nothing was started; the caller reports the interruption.
        for (const { report } of stale) report.status = 'skipped';
        return finish(results, false, repo.root);
      }
      if (unreachable.length) {
        const skipping = o.unreachableDrivers === 'skip';
        const lines = unreachable.map((u) => unreachableDriverLine(u, skipping));
        if (!skipping)
          throw new FalcoProbesError('network', lines.join('\n'), {
            hint: "nothing was built; --skip-unreachable-drivers builds the other drivers' targets and reports these",
          });
        for (const line of lines) o.logger.warn(line);
        const dropped = new Map(unreachable.flatMap((u) => u.targets.map((t) => [t, u.error] as const)));
        for (const { target, report } of stale) {
          const error = dropped.get(target);
          if (!error) continue;
          report.status = 'unreachable';
          report.errorKind = 'network';
          report.error = error.message;
        }
        stale = stale.filter((s) => !dropped.has(s.target));
        if (stale.length === 0) return finish(results, false, repo.root);
      }
    }
    const progress = createProgress(o.logger, stale.length, o.jobs);
    const failures = new Map<TargetReport, Failure>();
    await executeTasks(stale, {
      jobs: o.jobs,
      keepGoing: o.keepGoing,
      ...(o.signal ? { signal: o.signal } : {}),
      progress,
      statuses: { failed: 'failed', cancelled: 'cancelled', notStarted: 'skipped' },
      work: ({ target, report }) =>
        inWorkDir(
          o.paths,
          target,
          async (workDir) => {
            const built = await (await import('./build-target.js')).buildTarget(target, pipeline, {
              workDir,
              logFile: o.paths.logFile(target),
              ...(o.signal ? { signal: o.signal } : {}),
              ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
            });
            return { published: await repo.publish(target, built.file, built), built };
          },
          {
            keep: (error, workDir) => {
              // Interrupted: nothing to inspect, and nothing of it may outlive the run.
              const keep = !o.signal?.aborted && worthKeeping(error);
              failures.set(report, { error, workDir: keep ? workDir : undefined });
              return keep;
            },
          },
        ),
      done: ({ report: r }, { published, built }, ms) => {
        r.status = 'built';
        r.publish = published.status;
        r.sha256 = built.sha256;
        r.phases = built.phases;
        const ph = r.phases;
        const note = `${r.publish !== 'published' ? `${r.publish}; ` : ''}fetch ${formatDuration(ph.fetchMs)}, extract ${formatDuration(ph.extractMs)}, compile ${formatDuration(ph.buildMs)}`;
        progress.finished(r.label, { ok: true, ms, note });
      },
      failed: ({ target, report: r }, failure) => {
        if (failure.cancelled) {
          progress.cancelled(r.label);
          return;
        }
        r.log = o.paths.logFile(target);
        const kept = failures.get(r)?.workDir;
        if (kept) r.workDir = kept;
        progress.finished(r.label, { ok: false, ms: failure.ms, reason: failure.reason });
      },
    });
    for (const { report } of stale) {
      const failure = failures.get(report);
      if (failure && report.status === 'failed') await explainFailure(report, failure, o.logger);
    }
    return finish(results, false, repo.root);
  });
}

/** An out-of-date target and its report. */
interface Stale {
  target: Target;
  report: TargetReport;
}

interface Failure {
  error: unknown;
  /** Set when the work directory was kept. */
  workDir: string | undefined;
}

/** A compile or publish failure leaves something to look at (sources, objects); a failed download leaves nothing. */
function worthKeeping(error: unknown): boolean {
  if (errorKindOf(error) === 'io') return false; // a full disk: keeping more would not help
  if (!(error instanceof FalcoProbesError)) return true;
  return error.kind === 'build' || error.kind === 'reproducibility' || error.kind === 'docker' || error.kind === 'internal';
}

async function explainFailure(r: TargetReport, failure: Failure, logger: Logger): Promise<void> {
  const lines = [`${r.label} failed: ${r.error}`];
  // The builder's own errors carry the log's tail already (as details); others get it here.
  const hasDetails = failure.error instanceof FalcoProbesError && failure.error.details !== undefined;
  const tail = worthKeeping(failure.error) && !hasDetails ? await (await import('./build-target.js')).logTail(r.log!) : undefined;
  if (tail) lines.push(`--- last lines of ${r.log} ---`, tail, '---');
  else lines.push(`log: ${r.log}`);
  if (failure.workDir) lines.push(`work directory kept for inspection: ${failure.workDir}`);
  logger.error(lines.join('\n'));
}

/** One line for people at the end of a run. */
export function summaryLine(report: BuildReport): string {
  if (report.dryRun) {
    const n = report.results.filter((r) => r.status === 'would-build').length;
    return `${report.targets} targets: ${n} would build, ${report.upToDate} up to date (dry run)`;
  }
  const parts = [`${report.built} built`, `${report.upToDate} up to date`];
  if (report.failed) parts.push(`${report.failed} failed`);
  if (report.cancelled) parts.push(`${report.cancelled} cancelled`);
  if (report.skipped) parts.push(`${report.skipped} not started`);
  if (report.unreachable) parts.push(`${report.unreachable} skipped (driver source unreachable)`);
  if (report.unbuildable) parts.push(`${report.unbuildable} skipped (no builder here)`);
  return summaryText(report.targets, parts, report.elapsedMs, `; repository ${report.repository}`);
}

/** The `--json` form: stable field names for machines. */
export function reportJson(report: BuildReport): string {
  return reportJsonText({
    repository: report.repository,
    dryRun: report.dryRun,
    targets: report.targets,
    built: report.built,
    upToDate: report.upToDate,
    failed: report.failed,
    skipped: report.skipped,
    unreachable: report.unreachable ?? 0,
    unbuildable: report.unbuildable ?? 0,
    cancelled: report.cancelled ?? 0,
    elapsedMs: report.elapsedMs,
    results: report.results,
  });
}
