// The no-op stamp's fast path (docs/PERFORMANCE.md, "No-op build"): git's
// stat memo applied to the whole `build` command. A `build` whose outcome was
// a complete no-op recorded, in the project's .falco-probes/cache/noop.stamp
// (src/run/noop-stamp.ts writes it), a key of its command line, environment
// and code, the stat of every file and folder whose content could change that
// verdict, and what it printed. When every recorded stat is unchanged and
// none is racy, this prints the same output and the command ends here,
// before any of the tool's modules load. Any difference or doubt: false is
// returned and the normal path runs (it writes the stamp again, or removes
// it). Plain JavaScript with no imports but Node's: it runs before dist/ or
// tsx is loaded.
//
// Format 2:
//
//   falco-probes noop stamp 2
//   key <sha256 of the context: stampContext below>
//   code <sha256 of the code's identity alone, to say why a key differs>
//   since <ns: the writing run's start, less a margin; a recorded time not older is racy>
//   newest <ns: the newest mtime or ctime recorded>
//   find <1 when GNU find gave exactly the recorded stats as the stamp was written, else 0>
//   body <length in bytes> <sha256 of the lines above and the body>
//   <empty line>
//   <body: one line of JSON, the output; a line of section sizes
//    `<nL> <bytes> <bytes> <nS> <bytes> <bytes> <bytes>`; then the sections:
//    the lstat'ed paths, each ended by NUL; their stats, a line each:
//    `<dev> <ino> <size> <mtime> <ctime>` (times as seconds, a point, nine
//    digits of nanoseconds and a 0: GNU find's %T@ and %C@); the stat'ed
//    paths (symbolic links recorded through their target) and their stats,
//    the same way; and `s|l <path>` lines for the paths that did not exist>
//
// The stats are checked by one run of GNU find (`find -P -files0-from -
// -maxdepth 0 -printf ...`, and `-H` for the stat'ed paths) whose output is
// compared whole with the recorded section: C's stat at about 2 us a path
// instead of statSync's 4 to 6. Anything else from find (not there, exit
// status, a line on stderr, other bytes) hands the decision to the same check
// made with statSync and lstatSync, path by path, which is exact on its own.
// A path recorded with lstat is either a symbolic link's own entry or a
// path that was no link (where stat and lstat agree; a link put there later
// has another inode).
//
// The output is a list of [fd, piece...]: text, or 0 for the elapsed
// milliseconds and 1 for the elapsed time as the summary line writes it
// (this run's, not the recorded run's).

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, lstatSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { isatty } from 'node:tty';

/** Where bin/ tells the command which stamp it may write: { key, file } (src/run/noop-stamp.ts reads it). */
export const STAMP_GLOBAL = Symbol.for('falco-probes.noop-stamp');
const HEADER_RE =
  /^falco-probes noop stamp 2\nkey ([0-9a-f]{64})\ncode ([0-9a-f]{64})\nsince (\d{1,24})\nnewest (\d{1,24})\nfind ([01])\n(body (\d{1,12}) ([0-9a-f]{64})\n\n)/;
const SIZES_RE = /^(\d{1,9}) (\d{1,12}) (\d{1,12}) (\d{1,9}) (\d{1,12}) (\d{1,12}) (\d{1,12})$/;
/** GNU find's arguments for the paths read with lstat (-P) or with stat (-H); src/run/noop-stamp.ts runs the same. */
const findArgs = (follow) => [follow ? '-H' : '-P', '-files0-from', '-', '-maxdepth', '0', '-printf', '%D %i %s %T@ %C@\\n'];
/** Variables any part of `build` reads, besides every FALCO_PROBES_* one (src/ holds no other process.env read). */
const ENV = ['CI', 'HOME', 'PATH', 'XDG_CACHE_HOME', 'DOCKER_HOST', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY'];
/** Only prints what the fast path did; never part of the key. */
const TRACE = 'FALCO_PROBES_NOOP_TRACE';

const trace = (line) => {
  if (process.env[TRACE] === '1') process.stderr.write(`noop stamp: ${line}\n`);
};

/**
 * The code that would run: dist/BUILT's code hash when the compiled tool
 * runs, or the stats of every file under src/ when the sources run through
 * tsx (any edit moves one). Undefined when dist/ has no code hash.
 */
function codeIdentity(toolRoot, compiled) {
  if (compiled) {
    const m = /^falco-probes-code ([0-9a-f]{64})$/m.exec(readFileSync(join(toolRoot, 'dist', 'BUILT'), 'utf8'));
    return m ? `dist ${m[1]}` : undefined;
  }
  const h = createHash('sha256');
  const walk = (dir) => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const st = lstatSync(path, { bigint: true });
      h.update(`${path} ${st.mode} ${st.dev} ${st.ino} ${st.size} ${st.mtimeNs} ${st.ctimeNs}\n`);
      if (st.isDirectory()) walk(path);
    }
  };
  walk(join(toolRoot, 'src'));
  return `src ${h.digest('hex')}`;
}

/**
 * The stamp a `build` command line may use and write, or undefined when
 * it is not one (another command, --help, --dry-run, --verify-all,
 * --verify-load, FALCO_PROBES_NOOP_STAMP=0) or the code has no identity.
 * The key covers everything outside the recorded files that a no-op's
 * verdict or output depends on.
 */
export function stampContext(argv, toolRoot, compiled) {
  let root;
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--root') {
      root = argv[++i];
      if (root === undefined) return undefined;
    } else if (a.startsWith('--root=')) root = a.slice('--root='.length);
    else rest.push(a);
  }
  if (rest[0] !== 'build' || process.env.FALCO_PROBES_NOOP_STAMP === '0') return undefined;
  for (const a of rest)
    if (
      ['--help', '-h', '--dry-run', '-n', '--verify-load', '--load-test'].includes(a) ||
      a.startsWith('--verify-all') ||
      /^-[a-z]*n/.test(a)
    )
      return undefined;
  const code = codeIdentity(toolRoot, compiled);
  if (code === undefined) return undefined;
  const projectRoot = resolve(root ?? process.env.FALCO_PROBES_ROOT ?? process.cwd());
  const env = Object.keys(process.env)
    .filter((k) => (k.startsWith('FALCO_PROBES_') && k !== TRACE) || ENV.includes(k.toUpperCase()))
    .sort()
    .map((k) => [k, process.env[k]]);
  const context = [
    2,
    code,
    argv,
    process.cwd(),
    projectRoot,
    env,
    availableParallelism(),
    isatty(1),
    isatty(2),
    process.version,
    process.platform,
    process.arch,
    process.getuid?.() ?? -1,
  ];
  return {
    key: createHash('sha256').update(JSON.stringify(context)).digest('hex'),
    code: createHash('sha256').update(code).digest('hex'),
    file: join(projectRoot, '.falco-probes', 'cache', 'noop.stamp'),
  };
}

/**
 * The elapsed time as the summary line writes it: src/run/progress.ts's
 * formatDuration, written again here because this file loads nothing of the
 * tool (test/run-progress.test.ts holds the two equal).
 */
export function duration(ms) {
  const s = Math.round(ms / 1000);
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)}s`;
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

function readStamp(file) {
  let fd;
  try {
    fd = openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd, { bigint: true });
    if (!st.isFile() || st.size > 1n << 30n) return undefined;
    const bytes = Buffer.allocUnsafe(Number(st.size));
    let at = 0;
    while (at < bytes.length) {
      const n = readSync(fd, bytes, at, bytes.length - at, at);
      if (n === 0) return undefined;
      at += n;
    }
    return { bytes, mtimeNs: st.mtimeNs };
  } finally {
    closeSync(fd);
  }
}

/** A time as GNU find's %T@ prints it: the seconds, a point, nine digits of nanoseconds and a 0 (src/run/noop-stamp.ts writes the same). */
function findTime(ns) {
  if (ns < 0n) return `-${findTime(-ns)}`;
  return `${ns / 1_000_000_000n}.${String(ns % 1_000_000_000n).padStart(9, '0')}0`;
}

/** A stat as the stamp records it and find prints it. */
const statLine = (st) => `${st.dev} ${st.ino} ${st.size} ${findTime(st.mtimeNs)} ${findTime(st.ctimeNs)}\n`;

/** Whether one run of GNU find prints exactly the recorded stats of these paths (NUL-ended), and nothing else. */
function findAgrees(follow, paths, expected) {
  const r = spawnSync('find', findArgs(follow), {
    input: paths,
    env: { LC_ALL: 'C', PATH: process.env.PATH ?? '' },
    maxBuffer: expected.length + 65_536,
    timeout: 120_000,
  });
  return r.error === undefined && r.status === 0 && r.stderr.length === 0 && r.stdout.equals(expected);
}

/** The same check path by path with statSync (follow) or lstatSync: why a path differs, or undefined when none does. */
function statsDiffer(follow, pathBytes, statBytes, count) {
  const paths = pathBytes.toString('utf8').split('\0');
  const lines = statBytes.toString('latin1').split('\n');
  if (paths.length !== count + 1 || lines.length !== count + 1 || paths[count] !== '' || lines[count] !== '') return 'damaged: entries';
  const stat = follow ? statSync : lstatSync;
  for (let i = 0; i < count; i++) {
    const st = stat(paths[i], { bigint: true, throwIfNoEntry: false });
    if (st === undefined) return `${paths[i]} is gone`;
    if (statLine(st) !== `${lines[i]}\n`) return `${paths[i]} changed`;
  }
  return undefined;
}

/**
 * Print the recorded output and return true when the stamp holds for this
 * context: same key, sealed stamp intact, every recorded path with the same
 * stat (or still absent), and none racy (its mtime or ctime not older than
 * the writing run's start, or than the stamp's own mtime: git's rule; the
 * stats being the recorded ones, so is their newest time).
 */
export function replayNoop(context) {
  const stamp = readStamp(context.file);
  if (!stamp) return miss('no stamp');
  const bytes = stamp.bytes;
  const head = HEADER_RE.exec(bytes.toString('latin1', 0, Math.min(bytes.length, 400)));
  if (!head) return miss('damaged header');
  if (head[1] !== context.key) return miss(head[2] !== context.code ? 'other code' : 'another command line or environment');
  const start = head[0].length;
  if (start + Number(head[7]) !== bytes.length) return miss('damaged: length');
  const seal = createHash('sha256')
    .update(bytes.subarray(0, start - head[6].length))
    .update(bytes.subarray(start))
    .digest('hex');
  if (seal !== head[8]) return miss('damaged: sha256');
  const since = BigInt(head[3]);
  const boundary = since < stamp.mtimeNs ? since : stamp.mtimeNs;
  if (BigInt(head[4]) >= boundary) return miss('a recorded time is racy (not older than the stamp, or than the run that wrote it)');
  const first = bytes.indexOf(10, start);
  const second = first < 0 ? -1 : bytes.indexOf(10, first + 1);
  if (second < 0) return miss('damaged: no output');
  const sizes = SIZES_RE.exec(bytes.toString('latin1', first + 1, second));
  if (!sizes) return miss('damaged: sizes');
  const n = sizes.slice(1).map(Number);
  let at = second + 1;
  const take = (length) => bytes.subarray(at, (at += length));
  const groups = [
    [false, n[0], take(n[1]), take(n[2])],
    [true, n[3], take(n[4]), take(n[5])],
  ];
  const absent = take(n[6]).toString('utf8');
  if (at !== bytes.length || (absent !== '' && !absent.endsWith('\n'))) return miss('damaged: sizes');
  let checked = 0;
  for (const line of absent === '' ? [] : absent.slice(0, -1).split('\n')) {
    if ((line[0] !== 's' && line[0] !== 'l') || line[1] !== ' ') return miss('damaged: entry');
    const path = line.slice(2);
    const st = (line[0] === 's' ? statSync : lstatSync)(path, { bigint: true, throwIfNoEntry: false });
    if (st !== undefined) return miss(`${path} appeared`);
    checked++;
  }
  const how = new Set();
  for (const [follow, count, paths, stats] of groups) {
    if (count === 0) continue;
    checked += count;
    if (head[5] === '1' && findAgrees(follow, paths, stats)) {
      how.add('find');
      continue;
    }
    const why = statsDiffer(follow, paths, stats, count);
    if (why !== undefined) return miss(why);
    how.add('stat');
  }
  const output = JSON.parse(bytes.toString('utf8', start, first));
  const ms = performance.now();
  for (const [fd, ...pieces] of output) {
    const text = pieces.map((p) => (p === 0 ? String(Math.round(ms)) : p === 1 ? duration(ms) : p)).join('');
    (fd === 1 ? process.stdout : process.stderr).write(text);
  }
  trace(`replayed ${context.file} (${checked} paths unchanged, checked by ${[...how].join(' and ') || 'nothing'})`);
  return true;
}

function miss(why) {
  trace(`not used: ${why}`);
  return false;
}
