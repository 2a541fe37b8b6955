// The no-op stamp's fast path (docs/PERFORMANCE.md, "No-op build"): git's
// stat memo applied to the whole `build` command. A `build` whose outcome was
// a complete no-op recorded, in the project's .falco-probes/cache/noop.stamp
// (src/run/noop-stamp.ts writes it), a key of its command line, environment
// and code, the stat of every file and folder whose content could change that
// verdict, and what it printed. When every recorded stat is unchanged and
// none is racy, this prints the same output and the command ends here,
// before any of the tool's modules load. Any difference or doubt: undefined
// is returned and the normal path runs (it writes the stamp again, or
// removes it). Plain JavaScript with no imports but Node's: it runs before
// dist/ or tsx is loaded.
//
// Format 1:
//
//   falco-probes noop stamp 1
//   key <sha256 of the context: stampContext below>
//   code <sha256 of the code's identity alone, to say why a key differs>
//   since <ns: the writing run's start, less a margin; a recorded time not older is racy>
//   body <length in bytes> <sha256 of the body>
//   <empty line>
//   <body: one line of JSON, the output, then one line per recorded path:
//    `s|l <dev> <ino> <size> <mtime_ns> <ctime_ns> <absolute path>` (stat or lstat),
//    or `s|l - <absolute path>` for a path that did not exist>
//
// The output is a list of [fd, piece...]: text, or 0 for the elapsed
// milliseconds and 1 for the elapsed time as the summary line writes it
// (this run's, not the recorded run's).

import { createHash } from 'node:crypto';
import { closeSync, fstatSync, lstatSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { isatty } from 'node:tty';

/** Where bin/ tells the command which stamp it may write: { key, file } (src/run/noop-stamp.ts reads it). */
export const STAMP_GLOBAL = Symbol.for('falco-probes.noop-stamp');
const HEADER_RE =
  /^falco-probes noop stamp 1\nkey ([0-9a-f]{64})\ncode ([0-9a-f]{64})\nsince (\d{1,24})\nbody (\d{1,12}) ([0-9a-f]{64})\n\n/;
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
    1,
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

/** The elapsed time as the summary line writes it (src/run/progress.ts formatDuration). */
function duration(ms) {
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

/**
 * Print the recorded output and return true when the stamp holds for this
 * context: same key, sealed body intact, every recorded path with the same
 * stat (or still absent), and none racy (its mtime or ctime not older than
 * the writing run's start, or than the stamp's own mtime: git's rule).
 */
export function replayNoop(context) {
  const stamp = readStamp(context.file);
  if (!stamp) return miss('no stamp');
  const head = HEADER_RE.exec(stamp.bytes.toString('latin1', 0, Math.min(stamp.bytes.length, 300)));
  if (!head) return miss('damaged header');
  if (head[1] !== context.key) return miss(head[2] !== context.code ? 'other code' : 'another command line or environment');
  const start = head[0].length;
  if (start + Number(head[4]) !== stamp.bytes.length) return miss('damaged: length');
  const sealed = stamp.bytes.subarray(start);
  if (createHash('sha256').update(sealed).digest('hex') !== head[5]) return miss('damaged: sha256');
  const since = BigInt(head[3]);
  const boundary = since < stamp.mtimeNs ? since : stamp.mtimeNs;
  const body = sealed.toString('utf8');
  const first = body.indexOf('\n');
  if (first < 0) return miss('damaged: no output');
  let checked = 0;
  for (let at = first + 1; at < body.length; ) {
    const end = body.indexOf('\n', at);
    const kind = body[at];
    if (end < 0 || (kind !== 's' && kind !== 'l') || body[at + 1] !== ' ') return miss('damaged: entry');
    const absent = body[at + 2] === '-';
    let path;
    let recorded;
    if (absent) path = body.slice(at + 4, end);
    else {
      let space = at + 1;
      for (let k = 0; k < 5 && space >= 0; k++) space = body.indexOf(' ', space + 1);
      if (space < 0 || space > end) return miss('damaged: entry');
      recorded = body.slice(at + 2, space);
      path = body.slice(space + 1, end);
    }
    at = end + 1;
    const st =
      kind === 's' ? statSync(path, { bigint: true, throwIfNoEntry: false }) : lstatSync(path, { bigint: true, throwIfNoEntry: false });
    checked++;
    if (absent) {
      if (st !== undefined) return miss(`${path} appeared`);
      continue;
    }
    if (st === undefined) return miss(`${path} is gone`);
    if (`${st.dev} ${st.ino} ${st.size} ${st.mtimeNs} ${st.ctimeNs}` !== recorded) return miss(`${path} changed`);
    if (st.mtimeNs >= boundary || st.ctimeNs >= boundary) return miss(`${path} is racy`);
  }
  const output = JSON.parse(body.slice(0, first));
  const ms = performance.now();
  for (const [fd, ...pieces] of output) {
    const text = pieces.map((p) => (p === 0 ? String(Math.round(ms)) : p === 1 ? duration(ms) : p)).join('');
    (fd === 1 ? process.stdout : process.stderr).write(text);
  }
  trace(`replayed ${context.file} (${checked} paths unchanged)`);
  return true;
}

function miss(why) {
  trace(`not used: ${why}`);
  return false;
}
