import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
  type BigIntStats,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { BuildGraph } from '../graph/load.js';
import type { Target } from '../graph/types.js';
import { INDEX_FILE } from '../repository/types.js';
import { LOCK_FILE } from '../repository/local.js';
import { STATE_DIR } from './paths.js';
import type { BuildReport } from './runner.js';

// The no-op stamp: git's stat memo applied to the whole `build` command
// (docs/PERFORMANCE.md, "No-op build"). After a run of `build` through
// bin/falco-probes.js whose outcome was a complete no-op (every selected
// target up to date; nothing built, failed, skipped or cancelled; exit 0;
// the host builder; no --verify-all or --verify-load), this writes
// `.falco-probes/cache/noop.stamp`: the key bin/ computed for the command line,
// environment and code; the (device, inode, size, mtime_ns, ctime_ns) of
// every file and folder whose content decides that verdict or its output;
// and what the run printed. bin/noop-stamp.js replays it, before any module
// of the tool loads, while every one of those stats is unchanged and none is
// racy. Any other outcome removes the stamp.
//
// What is recorded (each read by a no-op, or listing what one reads):
// - kernels/ itself (a lockfile or definition added, removed or renamed
//   moves its mtime) and every *.yaml in it (stat, and lstat for a link),
//   each lockfile's definition as absent when it has none;
// - every file, link and folder of each local driver tree the graph hashes
//   (its tree hash), but .git: also the build products the hash ignores, so
//   a build in that folder costs one full no-op;
// - the repository's index.json, its lock file (absent), and the file of
//   every selected target;
// - `.falco-probes/work` (a work folder of another run: the next run sweeps).
// Not recorded: the memos of the graph and of the repository (caches, never
// a verdict: the stamp holds the stats of the files they stand for), and
// Docker (a run with the Docker builder never writes a stamp).
//
// The stats are taken as the process exits, after the run: a file changed
// while the run read it could show its new stat with the old verdict, so
// any recorded time not older than the run's start (less RACY_MARGIN_MS, for
// file systems whose clock ticks coarser than this one's) keeps the stamp
// from being written; the reader also takes git's racy rule against the
// stamp's own mtime, on the newest time recorded (the stats being the
// recorded ones, so is their newest). Each stat is recorded as GNU find's
// `-printf '%D %i %s %T@ %C@\n'` prints it, so that the reader checks them
// all by comparing find's output with the stamp (bin/ splits the paths
// over a find per core); the writer runs find once on them all and records
// whether it printed exactly the same (when not, the reader checks with
// statSync alone). The output is kept only when every line of it is a
// no-op's own (notice lines of unpinned drivers, the plan's and the
// summary's lines): a run that also swept a dead run's leftovers or waited
// for a lock said so once, and that is not replayed.

const STAMP_GLOBAL = Symbol.for('falco-probes.noop-stamp');
/** File system timestamps lag the clock by at most a tick (a few ms on Linux); far more than that. */
export const RACY_MARGIN_MS = 100;
const MAGIC = 'falco-probes noop stamp 2\n';
/** GNU find's arguments for the paths read with lstat (-P) or stat (-H); bin/noop-stamp.js runs the same. */
const findArgs = (follow: boolean) => [follow ? '-H' : '-P', '-files0-from', '-', '-maxdepth', '0', '-printf', '%D %i %s %T@ %C@\\n'];

/** The stamp of a project. */
export const noopStampPath = (projectRoot: string) => join(resolve(projectRoot), STATE_DIR, 'cache', 'noop.stamp');

/** A line of a no-op's stderr, and the summary line whose elapsed time is replayed as this run's. */
const PLAN_LINE = /^\d+ targets: \d+ up to date, 0 to build with -j \d+$/;
const NOTICE_LINE = /^notice: driver [^\n]+ has no sha256 pin; it gets no targets \(run `falco-probes pin [^`\n]+`\)$/;
const SUMMARY_LINE = /^(\d+ targets: 0 built, \d+ up to date in )([0-9.]+s|\d+m\d\ds|\d+h\d\dm)(; repository .*)$/;

export interface NoopStampOptions {
  verifyAll: boolean;
  verifyLoad: boolean;
  builder: 'host' | 'docker';
}

export interface NoopStampRun {
  /** What the run decided, once runBuild has returned. */
  ran(outcome: { report: BuildReport; aborted: boolean; graph: BuildGraph; targets: readonly Target[]; repositoryDir: string }): void;
}

interface Outcome {
  noop: boolean;
  paths: () => Entry[];
}

type Entry = { kind: 's' | 'l'; path: string };

const trace = (line: string) => {
  if (process.env['FALCO_PROBES_NOOP_TRACE'] === '1') process.stderr.write(`noop stamp: ${line}\n`);
};

function remove(file: string): void {
  try {
    rmSync(file, { force: true });
  } catch {
    // Not removable (a read-only cache): its stats stop matching as soon as anything changes.
  }
}

/**
 * Start watching a `build` run (not a dry run, which writes nothing). The
 * stamp is written when the process exits with 0 after a complete no-op;
 * removed after anything else. A run not started by bin/ (no key) never
 * writes one.
 */
export function noopStamp(projectRoot: string, options: NoopStampOptions): NoopStampRun {
  const file = noopStampPath(projectRoot);
  const given = (globalThis as Record<symbol, unknown>)[STAMP_GLOBAL] as { key?: unknown; code?: unknown; file?: unknown } | undefined;
  const ok = given !== undefined && typeof given.key === 'string' && typeof given.code === 'string' && given.file === file;
  const key = ok ? { key: given.key as string, code: given.code as string } : undefined;
  const eligible = key !== undefined && !options.verifyAll && !options.verifyLoad && options.builder === 'host';
  const sinceNs = (BigInt(Date.now()) - BigInt(RACY_MARGIN_MS)) * 1_000_000n;
  const output = eligible ? captureOutput() : undefined;
  let outcome: Outcome | undefined;
  // Only bin/'s runs get an exit hook (one per process); a run without a key removes a stale stamp when it is no no-op.
  if (key !== undefined)
    process.once('exit', (code) => {
      const chunks = output?.stop();
      if (!outcome?.noop || code !== 0 || options.verifyLoad) {
        remove(file);
        trace(`removed ${file}`);
        return;
      }
      if (!eligible || !chunks) return; // a no-op that changed nothing the stamp records: it stays valid
      const result = writeStamp(file, key, sinceNs, chunks, outcome.paths());
      trace(result);
      if (result.startsWith('not written')) remove(file);
    });
  return {
    ran({ report, aborted, graph, targets, repositoryDir }) {
      const noop =
        !aborted &&
        !report.dryRun &&
        report.targets > 0 &&
        report.upToDate === report.targets &&
        report.built === 0 &&
        report.failed === 0 &&
        report.skipped === 0 &&
        (report.unreachable ?? 0) === 0 &&
        (report.unbuildable ?? 0) === 0 &&
        (report.cancelled ?? 0) === 0;
      if (!noop || options.verifyLoad) remove(file);
      outcome = { noop, paths: () => recordedPaths(projectRoot, graph, targets, repositoryDir) };
    },
  };
}

/** Every path the stamp records (see the top of this file). */
function recordedPaths(projectRoot: string, graph: BuildGraph, targets: readonly Target[], repositoryDir: string): Entry[] {
  const root = resolve(projectRoot);
  const kernels = join(root, 'kernels');
  const out: Entry[] = [{ kind: 's', path: kernels }];
  for (const name of readdirSync(kernels).sort()) {
    if (!name.endsWith('.yaml')) continue;
    const path = join(kernels, name);
    out.push({ kind: 's', path });
    if (lstatSync(path).isSymbolicLink()) out.push({ kind: 'l', path });
  }
  out.push({ kind: 's', path: resolve(graph.driversFile) });
  for (const os of graph.oses)
    out.push({ kind: 's', path: join(kernels, `${os}.lock.yaml`) }, { kind: 's', path: join(kernels, `${os}.yaml`) });
  for (const d of graph.drivers) if ('path' in d.source) walkTree(resolve(root, d.source.path), out);
  const repo = resolve(repositoryDir);
  out.push({ kind: 's', path: join(repo, INDEX_FILE) }, { kind: 's', path: join(repo, LOCK_FILE) });
  for (const t of targets) out.push({ kind: 's', path: `${repo}/${t.output}` });
  out.push({ kind: 's', path: join(root, STATE_DIR, 'work') });
  const seen = new Set<string>();
  return out.filter((e) => !seen.has(`${e.kind}${e.path}`) && seen.add(`${e.kind}${e.path}`));
}

/** A driver tree as its tree hash walks it (lstat), folders included; .git is left out (its folder's mtime still moves). */
function walkTree(dir: string, out: Entry[]): void {
  out.push({ kind: 'l', path: dir });
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return; // not a folder: recorded as it is
  }
  for (const name of names.sort()) {
    if (name === '.git') continue;
    const path = join(dir, name);
    if (lstatSync(path).isDirectory()) walkTree(path, out);
    else out.push({ kind: 'l', path });
  }
}

/** A time as GNU find's %T@ prints it: the seconds, a point, nine digits of nanoseconds and a 0 (bin/noop-stamp.js reads the same). */
export function findTime(ns: bigint): string {
  if (ns < 0n) return `-${findTime(-ns)}`;
  return `${ns / 1_000_000_000n}.${String(ns % 1_000_000_000n).padStart(9, '0')}0`;
}

/** A stat as the stamp records it and `find -printf '%D %i %s %T@ %C@\n'` prints it. */
export const statLine = (st: BigIntStats) => `${st.dev} ${st.ino} ${st.size} ${findTime(st.mtimeNs)} ${findTime(st.ctimeNs)}\n`;

/** Whether GNU find, run as the reader runs it, prints exactly these stats for these paths. */
function findAgrees(follow: boolean, paths: Buffer, expected: Buffer): boolean {
  if (expected.length === 0) return true;
  const r = spawnSync('find', findArgs(follow), {
    input: paths,
    env: { LC_ALL: 'C', PATH: process.env['PATH'] ?? '' },
    maxBuffer: expected.length + 65_536,
    timeout: 120_000,
  });
  return r.error === undefined && r.status === 0 && r.stderr.length === 0 && r.stdout.equals(expected);
}

/**
 * Write the stamp; returns why it was not written. A path to be stat'ed
 * that is no symbolic link is recorded with its lstat (the same values; a
 * link put there later has another inode), so that the reader checks most
 * paths with find.
 */
function writeStamp(file: string, key: { key: string; code: string }, sinceNs: bigint, chunks: Chunk[], entries: Entry[]): string {
  const output = replayable(chunks);
  if (typeof output === 'string') return `not written: ${output}`;
  const groups = [
    { paths: [] as string[], stats: [] as string[] },
    { paths: [] as string[], stats: [] as string[] },
  ] as const;
  const absent: string[] = [];
  let newest = 0n;
  for (const { kind, path } of entries) {
    if (/[\n\0]/.test(path)) return `not written: a path holds a newline or NUL: ${JSON.stringify(path)}`;
    let st = lstatSync(path, { bigint: true, throwIfNoEntry: false });
    const follow = kind === 's' && st?.isSymbolicLink() === true;
    if (follow) st = statSync(path, { bigint: true, throwIfNoEntry: false });
    if (st === undefined) {
      if (kind === 's' && !follow) st = statSync(path, { bigint: true, throwIfNoEntry: false }); // gone since its lstat
      if (st === undefined) {
        absent.push(`${kind} ${path}\n`);
        continue;
      }
      return `not written: ${path} changed while the run ended`;
    }
    if (st.mtimeNs >= sinceNs || st.ctimeNs >= sinceNs)
      return `not written: ${path} changed while the run read it (or is newer than its start)`;
    if (st.mtimeNs > newest) newest = st.mtimeNs;
    if (st.ctimeNs > newest) newest = st.ctimeNs;
    const group = groups[follow ? 1 : 0];
    group.paths.push(`${path}\0`);
    group.stats.push(statLine(st));
  }
  const sections = groups.map((g) => ({
    count: g.paths.length,
    paths: Buffer.from(g.paths.join('')),
    stats: Buffer.from(g.stats.join('')),
  }));
  const useFind = sections.every((g, follow) => findAgrees(follow === 1, g.paths, g.stats));
  const absentBytes = Buffer.from(absent.join(''));
  const sizes = sections.flatMap((g) => [g.count, g.paths.length, g.stats.length]);
  const body = Buffer.concat([
    Buffer.from(`${JSON.stringify(output)}\n${[...sizes, absentBytes.length].join(' ')}\n`),
    ...sections.flatMap((g) => [g.paths, g.stats]),
    absentBytes,
  ]);
  const sealed = `${MAGIC}key ${key.key}\ncode ${key.code}\nsince ${sinceNs}\nnewest ${newest}\nfind ${useFind ? 1 : 0}\n`;
  const seal = createHash('sha256').update(sealed).update(body).digest('hex');
  const text = Buffer.concat([Buffer.from(`${sealed}body ${body.length} ${seal}\n\n`), body]);
  const tmp = join(dirname(file), `.noop.stamp.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    mkdirSync(dirname(file), { recursive: true });
    const fd = openSync(tmp, 'w', 0o644);
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (err) {
    remove(tmp);
    return `not written: ${(err as Error).message}`;
  }
  return `written ${file}${useFind ? ' (checked by find)' : ' (checked by stat: find is not there, or did not print the same stats)'}`;
}

type Chunk = [fd: 1 | 2, text: string];

/** Tee everything written to stdout and stderr from now on. */
function captureOutput(): { stop(): Chunk[] } {
  const chunks: Chunk[] = [];
  const streams = [
    [1, process.stdout],
    [2, process.stderr],
  ] as const;
  const originals = streams.map(([fd, stream]) => {
    const original = stream.write;
    stream.write = function (this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]) {
      const encoding = typeof rest[0] === 'string' ? (rest[0] as BufferEncoding) : 'utf8';
      chunks.push([
        fd,
        typeof chunk === 'string' ? Buffer.from(chunk, encoding).toString('utf8') : Buffer.from(chunk as Uint8Array).toString('utf8'),
      ]);
      return (original as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
    } as typeof stream.write;
    return original;
  });
  return {
    stop() {
      streams.forEach(([, stream], i) => {
        stream.write = originals[i]!;
      });
      return chunks;
    },
  };
}

/**
 * The output as the reader replays it ([fd, piece...] with 0 for the
 * elapsed milliseconds of --json and 1 for the summary's elapsed time), or
 * why it is not a no-op's own output.
 */
function replayable(chunks: readonly Chunk[]): (string | number)[][] | string {
  const merged: [1 | 2, string][] = [];
  for (const [fd, text] of chunks) {
    const last = merged[merged.length - 1];
    if (last && last[0] === fd) last[1] += text;
    else merged.push([fd, text]);
  }
  const out: (string | number)[][] = [];
  let summaries = 0;
  let elapsedMs = 0;
  for (const [fd, text] of merged) {
    if (fd === 1) {
      // --json: the report's elapsedMs (the first such member: the report's own, before its results).
      const m = /\n {2}"elapsedMs": (\d+),\n/.exec(text);
      if (m && elapsedMs++ === 0) {
        const at = m.index + m[0].length - m[1]!.length - 2;
        out.push([1, text.slice(0, at), 0, text.slice(at + m[1]!.length)]);
      } else out.push([1, text]);
      continue;
    }
    if (!text.endsWith('\n')) return 'stderr ends without a newline';
    const pieces: (string | number)[] = [2];
    let plain = '';
    for (const line of text.slice(0, -1).split('\n')) {
      const summary = SUMMARY_LINE.exec(line);
      if (summary) {
        summaries++;
        pieces.push(`${plain}${summary[1]}`, 1);
        plain = `${summary[3]}\n`;
      } else if (PLAN_LINE.test(line) || NOTICE_LINE.test(line)) plain += `${line}\n`;
      else return `the run printed more than a no-op does: ${JSON.stringify(line.slice(0, 200))}`;
    }
    if (plain) pieces.push(plain);
    out.push(pieces);
  }
  if (summaries !== 1) return `${summaries} summary lines`;
  return out;
}
