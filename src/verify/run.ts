import { dirname, join } from 'node:path';
import type { Target } from '../graph/types.js';
import { writeIndex } from '../repository/index-file.js';
import { INDEX_VERSION, type ProbeEntry } from '../repository/types.js';
import { FalcoProbesError, type ErrorKind } from '../util/errors.js';
import { sha256File } from '../util/hash.js';
import type { Logger } from '../util/log.js';
import { checkTargetName } from '../util/names.js';
import { createProgress, type ProgressWords } from '../run/progress.js';
import { executeTasks, inWorkDir, reportJsonText, summaryText, sweepDeadRuns, withLockedRepository } from '../run/execution.js';
import type { RunPaths } from '../run/paths.js';
import type { AcceleratorChoice } from './accelerator.js';
import { noGuestError, noGuestReason, unverifiedProbeError, type LoadVerifier } from './verifier.js';
import { loadRecord, verdictPasses } from './verify-load.js';
import type { VerdictKind } from './verdict.js';

// `verify-load`: for each selected target whose probe is in the local
// repository (built for the target's current key), boot the target's kernel,
// load the probe, and record the verdict in the probe's index entry. The
// repository's lock is held for the run, as `build` holds it, and the index
// is rewritten after each verdict, so an interrupted run keeps what it found.
// It runs on the skeleton build runs on (run/execution.ts): its lock, its
// scheduling, its progress (run/progress.ts), its sweep of dead runs' work
// directories, its cancelled targets.

export interface VerifyRunOptions {
  targets: readonly Target[];
  repositoryDir: string;
  paths: RunPaths;
  /** Verify again probes that already have a verdict for their current build. */
  force: boolean;
  allowUnverified: boolean;
  waitLock: boolean;
  logger: Logger;
  /** Made only when some probe needs a VM. */
  makeVerifier: () => Promise<LoadVerifier>;
  signal?: AbortSignal;
}

export type VerifyStatus =
  /** Booted and loaded now: `verdict` says how it went. */
  | 'verified'
  /** The index already had a verdict for this build of the probe (see --force). */
  | 'recorded'
  /** No probe for the target's current key in the repository: build it first. */
  | 'not-built'
  /** Could not be checked (the image package could not be fetched, the probe file is damaged...). */
  | 'failed'
  /** Its VM was stopped by an interrupt (SIGINT, SIGTERM), as build's targets are: not a failure, nothing recorded, its work directory removed. */
  | 'cancelled'
  /** Not started: the run was interrupted. */
  | 'skipped'
  /** No VM here can boot its kernel (an aarch64 kernel): neither loaded nor refused. */
  | 'unverified';

export interface VerifyTargetReport {
  label: string;
  file: string;
  status: VerifyStatus;
  verdict?: VerdictKind;
  message?: string;
  kernelImageSha256?: string;
  ms?: number;
  consoleLog?: string;
  /** `uname -r` the guest reported. */
  guestRelease?: string;
  errorKind?: ErrorKind | 'internal';
  error?: string;
}

export interface VerifyReport {
  repository: string;
  targets: number;
  results: VerifyTargetReport[];
  counts: Record<VerdictKind, number> & {
    recorded: number;
    notBuilt: number;
    failed: number;
    cancelled: number;
    skipped: number;
    unverified: number;
  };
  /** Every checked probe loaded and none was left unverified (or unverified ones are allowed), and nothing failed or was stopped. */
  passed: boolean;
  /**
   * Why each probe that did not load (now or by its recorded verdict) or
   * could not be booted is not verified, naming its target, in target order.
   * Not part of the JSON form: `results` says the same for scripts.
   */
  problems: FalcoProbesError[];
  accelerator?: AcceleratorChoice;
  elapsedMs: number;
}

/** The serial console of a target's last verify-load, beside its build log. */
export function consoleLogFile(paths: RunPaths, target: Target): string {
  return join(dirname(paths.logFile(target)), `${checkTargetName(target.name)}.verify-load.log`);
}

export async function runVerifyLoad(o: VerifyRunOptions): Promise<VerifyReport> {
  const t0 = performance.now();
  let accelerator: AcceleratorChoice | undefined;
  return withLockedRepository({ ...o, command: 'falco-probes verify-load' }, async (repo) => {
    // With the lock held nobody else writes the index: this copy is the truth, written whole after each verdict.
    const entries = new Map<string, ProbeEntry>(repo.entries().map((e) => [e.file, e]));
    let writing: Promise<void> = Promise.resolve();
    const record = (file: string, entry: ProbeEntry): Promise<void> => {
      entries.set(file, entry);
      writing = writing.catch(() => undefined).then(() => writeIndex(repo.root, { version: INDEX_VERSION, probes: [...entries.values()] }));
      return writing;
    };

    const results: VerifyTargetReport[] = [];
    const problems = new Map<string, FalcoProbesError>();
    const todo: { target: Target; entry: ProbeEntry; report: VerifyTargetReport }[] = [];
    for (const target of o.targets) {
      const entry = entries.get(target.output);
      const report: VerifyTargetReport = { label: target.label, file: target.output, status: 'not-built' };
      results.push(report);
      if (!entry) report.message = 'no probe in the repository';
      else if (entry.key !== target.key)
        report.message = `the repository's probe was built for another key (${entry.key.slice(0, 12)}...); build it again first`;
      // An `unknown` verdict is no verdict (the guest's record never arrived whole): boot it again.
      else if (entry.load && entry.load.verdict !== 'unknown' && !o.force) {
        Object.assign(report, { status: 'recorded', verdict: entry.load.verdict, kernelImageSha256: entry.load.kernelImageSha256 });
        const [first, ...rest] = (entry.load.message ?? '').split('\n');
        if (entry.load.message !== undefined) report.message = first!;
        // A verdict is recorded for this very build of the probe: it stands until --force.
        if (entry.load.verdict !== 'loaded')
          problems.set(
            target.label,
            unverifiedProbeError(target, {
              verdict: entry.load.verdict,
              message: first ?? '',
              recorded: true,
              ...(rest.length ? { detail: rest.join('\n') } : {}),
            }),
          );
      } else {
        const noGuest = noGuestReason(target);
        if (noGuest) {
          Object.assign(report, { status: 'unverified', message: noGuest });
          problems.set(target.label, noGuestError(target, noGuest));
        } else todo.push({ target, entry, report });
      }
    }
    const already = results.filter((r) => r.status === 'recorded').length;
    const unbootable = results.filter((r) => r.status === 'unverified').length;
    o.logger.info(
      `${o.targets.length} targets: ${todo.length} to verify, ${already} already verified, ${results.length - todo.length - already - unbootable} not built` +
        (unbootable ? `, ${unbootable} that no VM here can boot` : ''),
    );
    // A killed load test's work directories (initramfs) go as a killed build's do.
    await sweepDeadRuns(o.paths, o.logger);

    if (todo.length) {
      const verifier = await o.makeVerifier();
      const progress = createProgress(o.logger, todo.length, verifier.slots, { words: LOAD_TEST_WORDS });
      await executeTasks(todo, {
        jobs: verifier.slots,
        keepGoing: true,
        ...(o.signal ? { signal: o.signal } : {}),
        progress,
        statuses: { failed: 'failed', cancelled: 'cancelled', notStarted: 'skipped' },
        work: async ({ target, entry }) => {
          const probeFile = repo.pathOf(entry.file);
          const onDisk = await sha256File(probeFile).catch(() => undefined);
          if (onDisk?.sha256 !== entry.sha256)
            throw new FalcoProbesError('input', `${entry.file} is ${onDisk ? 'damaged (its sha256 differs from the index)' : 'missing'}`, {
              location: { file: probeFile },
              hint: 'run falco-probes build: it restores the published probe',
            });
          return inWorkDir(
            o.paths,
            target,
            async (workDir) => {
              const verdict = await verifier.verify(target, probeFile, { workDir, consoleLog: consoleLogFile(o.paths, target) });
              await record(entry.file, { ...entry, load: loadRecord(verdict) });
              return verdict;
            },
            { purpose: 'verify' },
          );
        },
        done: ({ target, report }, v, ms) => {
          accelerator ??= v.accelerator;
          Object.assign(report, {
            status: 'verified',
            verdict: v.verdict,
            message: v.message,
            kernelImageSha256: v.kernelImageSha256,
            ...(v.consoleLog ? { consoleLog: v.consoleLog } : {}),
            ...(v.guestRelease ? { guestRelease: v.guestRelease } : {}),
          });
          if (v.guestRelease && v.guestRelease !== target.kernel.release)
            o.logger.warn(`${target.label}: the guest reported kernel ${v.guestRelease}, not ${target.kernel.release}`);
          if (v.verdict !== 'loaded') problems.set(target.label, unverifiedProbeError(target, v));
          const accel = v.accelerator.accelerator;
          progress.finished(
            target.label,
            v.verdict === 'loaded'
              ? { ok: true, ms, note: `${v.message}; ${accel}` }
              : { ok: false, ms, word: v.verdict.toUpperCase(), reason: `${v.message} (${accel})` },
          );
        },
        failed: ({ target }, failure) =>
          failure.cancelled
            ? progress.cancelled(target.label)
            : progress.finished(target.label, { ok: false, ms: failure.ms, reason: failure.reason }),
      });
      await writing;
    }

    const count = (f: (r: VerifyTargetReport) => boolean) => results.filter(f).length;
    const counts = {
      loaded: count((r) => r.verdict === 'loaded'),
      refused: count((r) => r.verdict === 'refused'),
      'no-boot': count((r) => r.verdict === 'no-boot'),
      timeout: count((r) => r.verdict === 'timeout'),
      unknown: count((r) => r.verdict === 'unknown'),
      recorded: count((r) => r.status === 'recorded'),
      notBuilt: count((r) => r.status === 'not-built'),
      failed: count((r) => r.status === 'failed'),
      cancelled: count((r) => r.status === 'cancelled'),
      skipped: count((r) => r.status === 'skipped'),
      unverified: count((r) => r.status === 'unverified'),
    };
    const passed =
      counts.failed === 0 &&
      counts.cancelled === 0 &&
      counts.skipped === 0 &&
      (o.allowUnverified || counts.unverified === 0) &&
      results.every((r) => r.verdict === undefined || verdictPasses(r.verdict, o.allowUnverified));
    return {
      repository: repo.root,
      targets: o.targets.length,
      results,
      counts,
      passed,
      problems: o.targets.flatMap((t) => problems.get(t.label) ?? []),
      ...(accelerator ? { accelerator } : {}),
      elapsedMs: performance.now() - t0,
    };
  });
}

/**
 * The targets whose probe, built for their current key, has a recorded
 * verdict other than `loaded` (and `unknown`, which is no verdict). Such a probe is up to date for `build` and
 * `plan` (a rebuild gives the same bytes), so they name it instead of
 * rebuilding it.
 */
export function unloadedProbes(
  targets: readonly Target[],
  entryOf: (file: string) => ProbeEntry | undefined,
): { target: Target; verdict: VerdictKind }[] {
  return targets.flatMap((target) => {
    const entry = entryOf(target.output);
    return entry?.key === target.key && entry.load && entry.load.verdict !== 'loaded' && entry.load.verdict !== 'unknown'
      ? [{ target, verdict: entry.load.verdict }]
      : [];
  });
}

/** The load test's progress: `[2/9] loaded //probes/...`, `[2/9] REFUSED ...`, `1 VM running`; each verdict on a terminal too. */
export const LOAD_TEST_WORDS: ProgressWords = { done: 'loaded', running: { one: 'VM', many: 'VMs' }, everyLineOnTerminal: true };

/** One line for people at the end of a run. */
export function verifySummaryLine(report: VerifyReport): string {
  const c = report.counts;
  const parts = [`${c.loaded} loaded`, `${c.refused} refused`, `${c['no-boot']} did not boot`, `${c.timeout} timed out`];
  if (c.unknown) parts.push(`${c.unknown} unknown (the guest's record did not arrive whole)`);
  if (c.recorded) parts.push(`(${c.recorded} of these verified before; --force checks again)`);
  if (c.unverified) parts.push(`${c.unverified} unverified (no VM here can boot their kernel)`);
  if (c.notBuilt) parts.push(`${c.notBuilt} not built`);
  if (c.failed) parts.push(`${c.failed} could not be checked`);
  if (c.cancelled) parts.push(`${c.cancelled} cancelled`);
  if (c.skipped) parts.push(`${c.skipped} not started`);
  const accel = report.accelerator ? `; ${report.accelerator.accelerator} (${report.accelerator.reason})` : '';
  return summaryText(report.targets, parts, report.elapsedMs, accel);
}

/** The `--json` form. */
export function verifyReportJson(report: VerifyReport): string {
  return reportJsonText(verifyReportObject(report));
}

/** The JSON form as a value, for a document that holds it (`build --verify-load --json`). */
export function verifyReportObject(report: VerifyReport): Omit<VerifyReport, 'problems'> {
  const { problems: _problems, ...rest } = report;
  return { ...rest, elapsedMs: Math.round(report.elapsedMs) };
}
