import { basename } from 'node:path';
import { FalcoProbesError, errorMessage, isBadInput, type ErrorKind } from '../../util/errors.js';
import { readFileOrUndefined } from '../../util/fs.js';
import {
  findSourceDefinitionFiles,
  loadSourceDefinition,
  loadSourceDefinitionById,
  type LoadedSourceDefinition,
} from '../../config/source-definition.js';
import { resolveSource } from '../../resolve/index.js';
import type { ResolveOptions } from '../../resolve/types.js';
import { lockfilePathFor, readLockfileText, serializeLockfile, writeLockfileAtomic } from '../../lockfile/lockfile.js';
import { diffLockfiles, formatLockfileDiff, type LockfileDiff } from '../../lockfile/diff.js';
import type { Logger } from '../../util/log.js';
import { parseMirrorOverrides, parsePositiveInt, type Command } from '../context.js';
import { NOT_OK, OK } from '../outcome.js';

export const command: Command = {
  name: 'resolve',
  summary: 'crawl the mirrors of source definitions and write kernels/<os>.lock.yaml',
  usage: `usage: falco-probes resolve [OS...] [options]

Reads kernels/<OS>.yaml (every source definition when no OS is named), fetches the
signed metadata of its package archives over HTTP, and writes kernels/<OS>.lock.yaml
atomically. The lockfile is only rewritten when its bytes change.

Every named OS is resolved before any lockfile is written: when one fails (a mirror,
a definition, a refused removal) the others are still resolved so that every failure
is reported, and then no lockfile is written at all.

options:
  --check               do not write; exit 1 and show what changed when a lockfile is stale
  --mirror NAME=URL     use URL for package archive NAME (an entry of the definition's
                        repositories:) instead of its mirrors (repeatable; later ones are
                        fallbacks). URL is always the archive's base URL
                        (for yum, the folder holding repodata/), never a mirror.list, even
                        when the definition lists mirror.list URLs; yum's $basearch in it
                        is replaced by each architecture (quote it from the shell)
  --allow-removals      accept a resolve that drops kernels the lockfile has
                        (without it such a resolve fails and lists them)
  --timeout SECONDS     give up on a request after this long without data (default 30),
                        then retry it with backoff (3 attempts in all)
  --json                print the outcome as JSON on stdout (instead of the diff lines): per OS,
                        whether its lockfile was up to date, and the kernels added, removed
                        and changed (with the fields that changed); the exit status is the same
`,
  options: {
    check: { type: 'boolean' },
    mirror: { type: 'string', multiple: true },
    'allow-removals': { type: 'boolean' },
    timeout: { type: 'string' },
    json: { type: 'boolean' },
  },
  async run({ values, positionals }, ctx) {
    const mirrorOverrides = parseMirrorOverrides(values['mirror']);
    const http = values['timeout'] === undefined ? {} : { idleTimeoutMs: parsePositiveInt(values['timeout'], '--timeout', 30) * 1000 };
    const check = values['check'] === true;
    const allowRemovals = values['allow-removals'] === true;
    const json = values['json'] === true;
    const reports: OsReport[] = [];

    const requested = await loadRequestedDefinitions(positionals, ctx.kernelsDir, ctx.root);
    if (!requested.length) throw new FalcoProbesError('usage', `no source definitions in ${ctx.kernelsDir}`);
    if (mirrorOverrides.size && requested.length > 1)
      throw new FalcoProbesError('usage', '--mirror applies to one OS at a time; name the OS');

    // Phase 1: resolve everything, writing nothing, so that one OS's failure cannot
    // leave the OSes before it with new lockfiles and the ones after it with old ones.
    const failures: OsFailure[] = [];
    const pending: PendingLockfile[] = [];
    let stale = 0;
    for (const [i, entry] of requested.entries()) {
      const more = i < requested.length - 1;
      if ('error' in entry) {
        failures.push(entry);
        continue;
      }
      const os = entry.source.definition.id;
      try {
        const outcome = await resolveOne(entry.source, ctx.kernelsDir, { mirrorOverrides, http, logger: ctx.logger });
        if (!outcome) {
          reports.push({ os, upToDate: true });
          continue;
        }
        if (check) {
          stale++;
          reports.push(osReport(outcome));
          if (!json) ctx.stdout.write(`${formatLockfileDiff(os, outcome.diff)}\n`);
          continue;
        }
        if (outcome.diff.removed.length && !allowRemovals) throw removalRefused(outcome);
        pending.push(outcome);
      } catch (error) {
        failures.push({ os, error });
        if (!(error instanceof FalcoProbesError) && error instanceof Error && error.stack) ctx.logger.debug(error.stack);
        if (more) ctx.logger.info(`${os}: failed (reported at the end); resolving the other OSes`);
      }
    }

    if (failures.length) throw failureReport(failures, requested.length, check);

    if (check) {
      if (json) ctx.stdout.write(`${JSON.stringify({ check, stale, oses: reports }, null, 2)}\n`);
      if (stale) {
        ctx.logger.error(`${stale} lockfile(s) are stale; run falco-probes resolve`);
        return NOT_OK;
      }
      return OK;
    }

    // Phase 2: every OS resolved; write each changed lockfile atomically.
    const written = await writePending(pending, json ? undefined : ctx.stdout, ctx.logger);
    if (json) {
      const byOs = new Map(written.map((p) => [p.os, osReport(p)]));
      const oses = [...reports, ...written.map((p) => byOs.get(p.os)!)].sort((a, b) => (a.os < b.os ? -1 : a.os > b.os ? 1 : 0));
      ctx.stdout.write(`${JSON.stringify({ check, written: written.length, oses }, null, 2)}\n`);
    }
    return OK;
  },
};

interface PendingLockfile {
  os: string;
  lockPath: string;
  text: string;
  kernelCount: number;
  diff: LockfileDiff;
}

/** One OS in `resolve --json`. */
interface OsReport {
  os: string;
  upToDate: boolean;
  lockfile?: string;
  kernels?: number;
  added?: { name: string; machine: string }[];
  removed?: { name: string; machine: string }[];
  changed?: { name: string; machine: string; fields: string[] }[];
}

function osReport(p: PendingLockfile): OsReport {
  const brief = (k: { name: string; machine: string }) => ({ name: k.name, machine: k.machine });
  return {
    os: p.os,
    upToDate: false,
    lockfile: basename(p.lockPath),
    kernels: p.kernelCount,
    added: p.diff.added.map(brief),
    removed: p.diff.removed.map(brief),
    changed: p.diff.changed.map((c) => ({ ...brief(c.after), fields: c.fields })),
  };
}

interface OsFailure {
  os: string;
  error: unknown;
}

type RequestedDefinition = { source: LoadedSourceDefinition } | OsFailure;

/**
 * The named definitions (or all of them), each loaded or with the error that stopped
 * it. An unknown OS name is a mistake on the command line and stops the command before
 * any mirror is asked; a definition that fails its schema is one OS's failure.
 */
async function loadRequestedDefinitions(positionals: string[], kernelsDir: string, root: string): Promise<RequestedDefinition[]> {
  if (positionals.length) {
    const settled = await Promise.allSettled(positionals.map((id) => loadSourceDefinitionById(id, kernelsDir, root)));
    const unknown = settled.flatMap((s) =>
      s.status === 'rejected' && s.reason instanceof FalcoProbesError && s.reason.kind === 'usage' ? [s.reason] : [],
    );
    if (unknown.length === 1) throw unknown[0]!;
    if (unknown.length > 1)
      throw new FalcoProbesError('usage', `unknown OSes: ${unknown.map((e) => e.message).join('; ')}`, {
        ...(unknown[0]!.hint ? { hint: unknown[0]!.hint } : {}),
      });
    return settled.map((s, i) => (s.status === 'fulfilled' ? { source: s.value } : { os: positionals[i]!, error: s.reason }));
  }
  const files = await findSourceDefinitionFiles(kernelsDir);
  const settled = await Promise.allSettled(files.map((file) => loadSourceDefinition(file, root)));
  return settled.map((s, i) =>
    s.status === 'fulfilled' ? { source: s.value } : { os: basename(files[i]!).replace(/\.ya?ml$/, ''), error: s.reason },
  );
}

/** Resolve one OS in memory; undefined when its lockfile already has these bytes. */
async function resolveOne(
  source: LoadedSourceDefinition,
  kernelsDir: string,
  options: ResolveOptions & { logger: Logger },
): Promise<PendingLockfile | undefined> {
  const os = source.definition.id;
  const lockPath = lockfilePathFor(kernelsDir, os);
  options.logger.info(`${os}: resolving ${source.definition.repositories.length} package archives`);
  const lock = await resolveSource(source, options);
  const text = serializeLockfile(lock);
  const oldBytes = await readFileOrUndefined(lockPath);
  if (oldBytes && oldBytes.toString('utf8') === text) {
    options.logger.info(`${os}: ${lock.kernels.length} kernels, ${basename(lockPath)} up to date`);
    return undefined;
  }
  const old = oldBytes ? readLockfileText(oldBytes.toString('utf8'), lockPath) : undefined;
  const diff = diffLockfiles(old, lock);
  return { os, lockPath, text, kernelCount: lock.kernels.length, diff };
}

function removalRefused(p: PendingLockfile): FalcoProbesError {
  return new FalcoProbesError(
    'removal',
    `this resolve would drop ${p.diff.removed.length} kernel(s) that ${basename(p.lockPath)} has; the lockfile is unchanged`,
    {
      details: p.diff.removed.map((k) => `  - ${k.name} (${k.machine})`).join('\n'),
      hint: 'a mirror may have answered with a partial list; if the kernels really went away, run again with --allow-removals',
    },
  );
}

/**
 * One error for every OS that failed, each under its name with its own file or URL.
 * Its kind is bad input (exit 2) only when every failure is bad input or usage; else
 * the kind of the first failure that is not (exit 1).
 */
function failureReport(failures: OsFailure[], total: number, check: boolean): FalcoProbesError {
  const names = failures.map((f) => f.os);
  const indent = (text: string) => text.split('\n').join('\n  ');
  const details = failures.map((f) => `${f.os}: ${indent(errorMessage(f.error))}`).join('\n');
  const kinds = failures.map((f): ErrorKind => (f.error instanceof FalcoProbesError ? f.error.kind : 'internal'));
  const kind = kinds.find((k) => !isBadInput(k)) ?? kinds[0]!;
  const outcome = check ? 'the check is incomplete' : 'no lockfile was written';
  return new FalcoProbesError(
    kind,
    `resolve failed for ${names.join(', ')} (${failures.length} of ${total} OS${total === 1 ? '' : 'es'}); ${outcome}`,
    {
      details,
    },
  );
}

/** Write the lockfiles one by one (each atomically); when one write fails, say which ones were written before it. */
async function writePending(
  pending: PendingLockfile[],
  stdout: NodeJS.WritableStream | undefined,
  logger: Logger,
): Promise<PendingLockfile[]> {
  const written: string[] = [];
  for (const [i, p] of pending.entries()) {
    try {
      await writeLockfileAtomic(p.lockPath, p.text);
    } catch (cause) {
      const notWritten = pending.slice(i).map((q) => q.os);
      throw new FalcoProbesError('internal', `cannot write the lockfile of ${p.os}: ${(cause as Error).message}`, {
        location: { file: p.lockPath },
        details: `written: ${written.length ? written.join(', ') : 'none'}\nnot written (old bytes kept): ${notWritten.join(', ')}`,
        hint: 'fix the cause and run falco-probes resolve again; it rewrites only the lockfiles that differ',
        cause,
      });
    }
    written.push(p.os);
    stdout?.write(`${formatLockfileDiff(p.os, p.diff)}\n`);
    logger.info(`${p.os}: wrote ${p.lockPath} (${p.kernelCount} kernels)`);
  }
  return pending;
}
