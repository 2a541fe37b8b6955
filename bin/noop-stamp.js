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
// tsx is loaded. CommonJS (bin/package.json), as bin/falco-probes.js is: a
// CommonJS entry and require() of Node's modules start a few milliseconds
// sooner than ES modules, and child_process and crypto are required only
// when a stamp is there to check.
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
// The stats are checked by GNU find (`find -P -files0-from LIST -maxdepth 0
// -printf ...`, and `-H` for the stat'ed paths), one process per core, each
// on a run of the recorded paths, started as soon as bin/ has read the stamp
// and before it checks anything else; their outputs, read in order, are
// compared whole with the recorded section: C's stat at about 2 us a path
// instead of statSync's 4 to 6, and on both cores. Anything else from find
// (not there, exit status, a line on stderr, other bytes) hands the decision
// to the same check made with statSync and lstatSync, path by path, which is
// exact on its own.
// A path recorded with lstat is either a symbolic link's own entry or a
// path that was no link (where stat and lstat agree; a link put there later
// has another inode).
//
// The output is a list of [fd, piece...]: text, or 0 for the elapsed
// milliseconds and 1 for the elapsed time as the summary line writes it
// (this run's, not the recorded run's).

'use strict';
const {
  closeSync,
  fstatSync,
  lstatSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  statSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} = require('node:fs');
const { availableParallelism } = require('node:os');
const { join, resolve } = require('node:path');
const sha256 = (...parts) => {
  const h = require('node:crypto').createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
};

/** Where bin/ tells the command which stamp it may write: { key, code, file } (src/run/noop-stamp.ts reads it). */
const STAMP_GLOBAL = Symbol.for('falco-probes.noop-stamp');
const HEADER_RE =
  /^falco-probes noop stamp 2\nkey ([0-9a-f]{64})\ncode ([0-9a-f]{64})\nsince (\d{1,24})\nnewest (\d{1,24})\nfind ([01])\n(body (\d{1,12}) ([0-9a-f]{64})\n\n)/;
const SIZES_RE = /^(\d{1,9}) (\d{1,12}) (\d{1,12}) (\d{1,9}) (\d{1,12}) (\d{1,12}) (\d{1,12})$/;
/** GNU find's arguments for the paths (in `list`, NUL-ended) read with lstat (-P) or with stat (-H); src/run/noop-stamp.ts runs the same on its stdin. */
const findArgs = (follow, list) => [follow ? '-H' : '-P', '-files0-from', list, '-maxdepth', '0', '-printf', '%D %i %s %T@ %C@\\n'];
/** Variables any part of `build` reads, besides every FALCO_PROBES_* one (src/ holds no other process.env read). */
const ENV = ['CI', 'HOME', 'PATH', 'XDG_CACHE_HOME', 'DOCKER_HOST', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY'];
/** Only prints what the fast path did; never part of the key. */
const TRACE = 'FALCO_PROBES_NOOP_TRACE';

const trace = (line) => {
  if (process.env[TRACE] === '1') new Output().write(2, `noop stamp: ${line}\n`);
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
  const lines = [];
  const walk = (dir) => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const st = lstatSync(path, { bigint: true });
      lines.push(`${path} ${st.mode} ${st.dev} ${st.ino} ${st.size} ${st.mtimeNs} ${st.ctimeNs}\n`);
      if (st.isDirectory()) walk(path);
    }
  };
  walk(join(toolRoot, 'src'));
  return `src ${sha256(lines.join(''))}`;
}

/**
 * What a `build` command line's stamp needs before the code is known: its
 * project, its file and the environment, or undefined when it is not one
 * that may use a stamp (another command, --help, --dry-run, --verify-all,
 * --load-test, FALCO_PROBES_NOOP_STAMP=0).
 */
function stampTarget(argv) {
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
  const projectRoot = resolve(root ?? process.env.FALCO_PROBES_ROOT ?? process.cwd());
  const env = Object.keys(process.env)
    .filter((k) => (k.startsWith('FALCO_PROBES_') && k !== TRACE) || ENV.includes(k.toUpperCase()))
    .sort()
    .map((k) => [k, process.env[k]]);
  // Copies: the key may be taken later, after the command has started (when there was no stamp to check).
  return { argv: [...argv], projectRoot, env, cwd: process.cwd(), file: join(projectRoot, '.falco-probes', 'cache', 'noop.stamp') };
}

/**
 * Start a replay as early as bin/ can: the stamp is read and its finds
 * started before bin/ checks which code would run, and while the rest of
 * the stamp is checked (replayNoop). Undefined when the command line may
 * not use a stamp.
 */
function startReplay(argv) {
  const target = stampTarget(argv);
  if (target) target.pending = readAndStart(target.file);
  return target;
}

/** Give up a started replay: its finds killed, their files removed. */
function cancelReplay(target) {
  for (const f of target?.pending?.finds ?? []) f.cancel();
}

/**
 * The stamp this command may use and write: { key, code, file }, or
 * undefined when the code has no identity. The key covers everything
 * outside the recorded files that a no-op's verdict or output depends on.
 */
function stampContext(target, toolRoot, compiled) {
  const code = codeIdentity(toolRoot, compiled);
  if (code === undefined) return undefined;
  const { argv, projectRoot, env, cwd } = target;
  // The hashes are taken when first asked for: the replay starts its finds before.
  let key;
  let codeKey;
  return {
    get key() {
      if (key === undefined) {
        const { isatty } = require('node:tty');
        const context = [
          2,
          code,
          argv,
          cwd,
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
        key = sha256(JSON.stringify(context));
      }
      return key;
    },
    get code() {
      codeKey ??= sha256(code);
      return codeKey;
    },
    file: target.file,
  };
}

/**
 * The elapsed time as the summary line writes it: src/run/progress.ts's
 * formatDuration, written again here because this file loads nothing of the
 * tool (test/run-progress.test.ts holds the two equal).
 */
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

/** A time as GNU find's %T@ prints it: the seconds, a point, nine digits of nanoseconds and a 0 (src/run/noop-stamp.ts writes the same). */
function findTime(ns) {
  if (ns < 0n) return `-${findTime(-ns)}`;
  return `${ns / 1_000_000_000n}.${String(ns % 1_000_000_000n).padStart(9, '0')}0`;
}

/** A stat as the stamp records it and find prints it. */
const statLine = (st) => `${st.dev} ${st.ino} ${st.size} ${findTime(st.mtimeNs)} ${findTime(st.ctimeNs)}\n`;

/**
 * Start GNU find on these paths (NUL-ended) in `parts` processes at once,
 * each on a run of whole paths, so the stats are taken on every core. Each
 * reads its paths from a file and writes stdout and stderr to another, next
 * to the stamp (`<stamp>.find.<pid>.<group>.<n>` and `.out`, removed when
 * done): no pipe, so Node loads none of its stream classes, and no long
 * argument list, which makes a spawn slow. `done` resolves true when every
 * one exited 0 and, read in order, their outputs hold exactly the recorded
 * stats (a line on stderr is other bytes); `cancel()` kills them and
 * removes the files.
 */
function startFind(follow, paths, expected, parts, scratch) {
  const { spawn } = require('node:child_process');
  const children = [];
  const files = [];
  const removeFiles = () => {
    for (const f of files.splice(0)) {
      try {
        unlinkSync(f);
      } catch {}
    }
  };
  const outputs = [];
  const runs = [];
  let from = 0;
  try {
    for (let i = 0; i < parts && from < paths.length; i++) {
      // Cut after the NUL nearest the next share of the bytes: runs of whole paths.
      const cut = i === parts - 1 ? paths.length : paths.indexOf(0, Math.max(from, Math.floor(((i + 1) * paths.length) / parts) - 1)) + 1;
      if (cut === 0) break;
      const list = `${scratch}.${i}`;
      files.push(list);
      writeFileSync(list, paths.subarray(from, cut), { mode: 0o600 });
      from = cut;
      const out = `${list}.out`;
      files.push(out);
      outputs.push(out);
      const fd = openSync(out, 'w', 0o600);
      try {
        const child = spawn('find', findArgs(follow, list), {
          env: { LC_ALL: 'C', PATH: process.env.PATH ?? '' },
          stdio: ['ignore', fd, fd],
        });
        children.push(child);
        runs.push(
          new Promise((done) => {
            // Not spawn's `timeout`: its timer outlives a child that failed to start, and then signals pid 0.
            const timer = setTimeout(() => {
              kill(child);
              done(false);
            }, 120_000);
            timer.unref();
            const end = (ok) => {
              clearTimeout(timer);
              done(ok);
            };
            child.on('error', () => end(false));
            child.on('close', (code) => end(code === 0));
          }),
        );
      } finally {
        closeSync(fd);
      }
    }
  } catch {
    runs.push(Promise.resolve(false));
  }
  if (from !== paths.length) runs.push(Promise.resolve(false));
  return {
    done: Promise.all(runs).then((answers) => {
      try {
        return answers.every(Boolean) && Buffer.concat(outputs.map((f) => readFileSync(f))).equals(expected);
      } catch {
        return false;
      } finally {
        removeFiles();
      }
    }),
    cancel() {
      for (const c of children) kill(c);
      removeFiles();
    },
  };
}

/** Kill a find that started and still runs: one whose spawn failed has no pid, and its kill() would signal pid 0, this process group. */
function kill(child) {
  if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) child.kill();
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
 * Read the stamp and start its finds as soon as the recorded paths are
 * known: { why } when it is missing or damaged, else what replayNoop checks.
 */
function readAndStart(file) {
  const stamp = readStamp(file);
  if (!stamp) return { why: 'no stamp' };
  const bytes = stamp.bytes;
  const head = HEADER_RE.exec(bytes.toString('latin1', 0, Math.min(bytes.length, 400)));
  if (!head) return { why: 'damaged header' };
  const start = head[0].length;
  if (start + Number(head[7]) !== bytes.length) return { why: 'damaged: length' };
  const first = bytes.indexOf(10, start);
  const second = first < 0 ? -1 : bytes.indexOf(10, first + 1);
  if (second < 0) return { why: 'damaged: no output' };
  const sizes = SIZES_RE.exec(bytes.toString('latin1', first + 1, second));
  if (!sizes) return { why: 'damaged: sizes' };
  const n = sizes.slice(1).map(Number);
  let at = second + 1;
  const take = (length) => bytes.subarray(at, (at += length));
  const groups = [
    { follow: false, count: n[0], paths: take(n[1]), stats: take(n[2]) },
    { follow: true, count: n[3], paths: take(n[4]), stats: take(n[5]) },
  ].filter((g) => g.count > 0);
  const absent = take(n[6]).toString('utf8');
  if (at !== bytes.length || (absent !== '' && !absent.endsWith('\n'))) return { why: 'damaged: sizes' };
  // Up to one find per core (each on at least 1,000 paths): stat is system time, which spreads.
  const total = groups.reduce((sum, g) => sum + g.count, 0);
  const cores = Math.max(1, Math.min(availableParallelism(), 8, Math.floor(total / 1000)));
  const finds =
    head[5] === '1'
      ? groups.map((g, i) =>
          startFind(g.follow, g.paths, g.stats, Math.max(1, Math.round((cores * g.count) / total)), `${file}.find.${process.pid}.${i}`),
        )
      : [];
  return { bytes, head, start, first, mtimeNs: stamp.mtimeNs, absent, groups, finds };
}

/**
 * Print the recorded output and resolve true when the stamp holds for this
 * context: same key, sealed stamp intact, every recorded path with the same
 * stat (or still absent), and none racy (its mtime or ctime not older than
 * the writing run's start, or than the stamp's own mtime: git's rule; the
 * stats being the recorded ones, so is their newest time).
 */
async function replayNoop(context, target) {
  const pending = target.pending;
  if (pending.why !== undefined) return miss(pending.why);
  const verdict = await checkStamp(context, pending);
  if (typeof verdict === 'string') {
    cancelReplay(target);
    return miss(verdict);
  }
  const { bytes, start, first } = pending;
  const output = JSON.parse(bytes.toString('utf8', start, first));
  const ms = performance.now();
  const out = new Output();
  for (const [fd, ...pieces] of output) {
    out.write(fd === 1 ? 1 : 2, pieces.map((p) => (p === 0 ? String(Math.round(ms)) : p === 1 ? duration(ms) : p)).join(''));
  }
  trace(`replayed ${context.file} (${verdict.checked} paths unchanged, checked by ${verdict.how || 'nothing'})`);
  return true;
}

/** The rest of the replay's checks, while the finds run: a reason the stamp does not hold, or how it was checked. */
async function checkStamp(context, { bytes, head, start, mtimeNs, absent, groups, finds }) {
  if (head[1] !== context.key) return head[2] !== context.code ? 'other code' : 'another command line or environment';
  const seal = sha256(bytes.subarray(0, start - head[6].length), bytes.subarray(start));
  if (seal !== head[8]) return 'damaged: sha256';
  const since = BigInt(head[3]);
  const boundary = since < mtimeNs ? since : mtimeNs;
  if (BigInt(head[4]) >= boundary) return 'a recorded time is racy (not older than the stamp, or than the run that wrote it)';
  let checked = 0;
  for (const line of absent === '' ? [] : absent.slice(0, -1).split('\n')) {
    if ((line[0] !== 's' && line[0] !== 'l') || line[1] !== ' ') return 'damaged: entry';
    const path = line.slice(2);
    const st = (line[0] === 's' ? statSync : lstatSync)(path, { bigint: true, throwIfNoEntry: false });
    if (st !== undefined) return `${path} appeared`;
    checked++;
  }
  const how = new Set();
  for (const [i, g] of groups.entries()) {
    checked += g.count;
    if (finds[i] !== undefined && (await finds[i].done)) {
      how.add('find');
      continue;
    }
    const why = statsDiffer(g.follow, g.paths, g.stats, g.count);
    if (why !== undefined) return why;
    how.add('stat');
  }
  return { checked, how: [...how].join(' and ') };
}

/**
 * The replay's output, written with writeSync: process.stdout and
 * process.stderr would load Node's stream classes (several milliseconds on a
 * pipe). Never throws. A descriptor that is non-blocking and full (EAGAIN)
 * hands this and every later piece to the streams, which keep the order of
 * each stream; a closed one (EPIPE) takes nothing more, as the command's own
 * output would not.
 */
class Output {
  streams = false;
  closed = new Set();
  write(fd, text) {
    if (this.closed.has(fd)) return;
    const bytes = Buffer.from(text);
    let at = 0;
    while (!this.streams && at < bytes.length) {
      try {
        at += writeSync(fd, bytes, at);
      } catch (e) {
        if (e.code === 'EAGAIN') this.streams = true;
        else {
          this.closed.add(fd);
          return;
        }
      }
    }
    if (at < bytes.length) (fd === 1 ? process.stdout : process.stderr).write(bytes.subarray(at));
  }
}

function miss(why) {
  trace(`not used: ${why}`);
  return false;
}

module.exports = { STAMP_GLOBAL, cancelReplay, duration, replayNoop, stampContext, startFind, startReplay };
