import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chmod, cp, mkdir, readFile, rename, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { PROJECT_ROOT, withTempDir, type RunResult } from './helpers/cli.js';
import { driversText, kernel, makeProject, writeLockfileFor, writePublishedProbes } from './helpers/graph-project.js';
import { loadBuildGraph } from '../src/graph/load.js';
import { repositoryMemoPath } from '../src/repository/memo.js';
import { graphCachePath } from '../src/graph/graph-cache.js';
import { noopStampPath } from '../src/run/noop-stamp.js';

// The no-op stamp (src/run/noop-stamp.ts writes it, bin/noop-stamp.js
// replays it), through the real CLI with real files. The fast path is told
// apart by what it does not do: it loads none of the tool, so the memos of
// the graph and of the repository, removed before each run, are written
// again only by the normal path (FALCO_PROBES_NOOP_TRACE's line says the
// same). Each change to a recorded input must take the normal path and give
// its answer: the kernels are of the other architecture, so an out-of-date
// target is reported `unbuildable` (--skip-unbuildable) instead of built.
// The tool runs from a copy of bin/ and src/ taken when the test starts: an
// edit of the sources is a change of the code, which the stamp's key holds.

/** Whether this machine's find reads its start points from stdin (GNU findutils 4.9 or later): the replay checks stats with it. */
function findWorks(): boolean {
  try {
    return (
      execFileSync('find', ['-P', '-files0-from', '-', '-maxdepth', '0', '-printf', '%i\\n'], { input: '/\0', stdio: 'pipe' }).length > 0
    );
  } catch {
    return false;
  }
}
const BY_FIND = findWorks() ? /checked by find\)/ : /checked by stat\)/;

const FOREIGN = process.arch === 'arm64' ? 'x86_64' : 'aarch64';
const ARGS = ['build', '--json', '--skip-unbuildable'];

interface Report {
  results: { file: string; status: string; reason?: string }[];
}

/** A checkout of this tool's bin/ and src/ as they are now (its dependencies linked), run from its sources. */
async function snapshotTool(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const name of ['bin', 'src']) await cp(join(PROJECT_ROOT, name), join(dir, name), { recursive: true });
  for (const name of ['node_modules', 'package.json', 'tsconfig.json']) await symlink(join(PROJECT_ROOT, name), join(dir, name));
  return join(dir, 'bin', 'falco-probes.js');
}

function runTool(bin: string, args: string[], cwd: string, env: Record<string, string>): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      cwd,
      env: { ...process.env, CI: 'true', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
  });
}

test('build: a complete no-op is replayed from its stamp until a recorded input changes', { timeout: 600_000 }, async () => {
  await withTempDir(async (dir) => {
    const bin = await snapshotTool(join(dir, 'tool'));
    const root = join(dir, 'project');
    const k = (release: string) => kernel(release, { machine: FOREIGN, flavour: FOREIGN === 'aarch64' ? 'arm64' : 'amd64' });
    await makeProject(root, {
      oses: { debian12: [k('6.1.0-50-arm64'), k('6.12.9+deb12-arm64')] },
      drivers: driversText({ remote: 'none' }),
    });
    // A finished build's repository: a probe per target and the index.
    const graph = await loadBuildGraph(root, { remember: false });
    assert.equal(graph.targets.length, 2);
    const repo = join(root, 'repository');
    await writePublishedProbes(repo, graph.targets);
    const files = graph.targets.map((t) => t.output);
    const stampFile = noopStampPath(root);
    const memos = [graphCachePath(root), repositoryMemoPath(join(root, '.falco-probes'), repo)];

    /** Run with the memos removed first; whether the fast path ran, by behaviour and by its trace. */
    const build = async (args = ARGS, env: Record<string, string> = {}) => {
      for (const m of memos) await rm(m, { force: true });
      const r = await runTool(bin, args, root, { FALCO_PROBES_NOOP_TRACE: '1', ...env });
      assert.equal(r.code, 0, r.stderr);
      const memosWritten = memos.map((m) => existsSync(m));
      const fast = r.stderr.includes('noop stamp: replayed ');
      const scratch = readdirSync(dirname(stampFile)).filter((n) => n.includes('.find.'));
      assert.deepEqual(scratch, [], "the replay's find lists and outputs are removed, whatever it decided");
      assert.deepEqual(memosWritten, [!fast, !fast], `the memos are written by the normal path only (fast: ${fast})\n${r.stderr}`);
      return { ...r, fast, statuses: (JSON.parse(r.stdout) as Report).results.map((x) => x.status) };
    };
    const upToDate = ['up-to-date', 'up-to-date'];
    /** The normal path, giving `statuses`. */
    const slow = async (statuses: string[], why: RegExp, args = ARGS, env: Record<string, string> = {}) => {
      const r = await build(args, env);
      assert.equal(r.fast, false, `the normal path ran\n${r.stderr}`);
      assert.match(r.stderr, why);
      assert.deepEqual(r.statuses, statuses);
      return r;
    };
    const fast = async (args = ARGS, env: Record<string, string> = {}, how = BY_FIND) => {
      const r = await build(args, env);
      assert.equal(r.fast, true, `the stamp was replayed\n${r.stderr}`);
      assert.match(r.stderr, new RegExp(`noop stamp: replayed .*${how.source}`), 'checked as the stamp says');
      assert.deepEqual(r.statuses, upToDate);
      return r;
    };
    /** Back to a written stamp: the normal path's no-op writes it, the next run replays it. */
    const settle = async (env: Record<string, string> = {}, how = BY_FIND) => {
      const r = await slow(upToDate, /noop stamp: not used: /, ARGS, env);
      assert.match(r.stderr, /noop stamp: written /);
      await fast(ARGS, env, how);
    };
    /** Edit a file in place keeping its size and (with touch -r) its mtime to the nanosecond: only its ctime says. */
    const sameSizeEdit = async (path: string, edit: (text: string) => string) => {
      const before = await stat(path, { bigint: true });
      const text = await readFile(path, 'utf8');
      const changed = edit(text);
      assert.notEqual(changed, text);
      assert.equal(Buffer.byteLength(changed), Buffer.byteLength(text));
      // The reference file lives outside every recorded folder.
      const ref = join(root, 'mtime.ref');
      execFileSync('touch', ['-r', path, ref]);
      await writeFile(path, changed);
      execFileSync('touch', ['-r', ref, path]);
      await rm(ref);
      const after = await stat(path, { bigint: true });
      assert.equal(after.mtimeNs, before.mtimeNs, 'mtime put back');
      assert.equal(after.size, before.size);
      assert.equal(after.ino, before.ino);
      return () => writeFile(path, text);
    };

    // The first no-op writes the stamp; the second is the stamp, with the same output.
    const first = await slow(upToDate, /noop stamp: not used: no stamp/);
    assert.match(first.stderr, /noop stamp: written /);
    assert.ok(existsSync(stampFile));
    const second = await fast();
    const plain = (r: RunResult) => ({
      stdout: r.stdout.replace(/"elapsedMs": \d+/, '"elapsedMs": 0'),
      stderr: r.stderr
        .split('\n')
        .filter((l) => !l.startsWith('noop stamp: '))
        .join('\n')
        .replace(/ in [0-9.]+s; /, ' in 0s; '),
    });
    assert.deepEqual(plain(second), plain(first), 'the same output');
    assert.match(
      second.stderr,
      /^2 targets: 2 up to date, 0 to build with -j \d+\n2 targets: 0 built, 2 up to date in [0-9.]+s; repository /,
    );
    await fast();

    // A lockfile edited in place, same size, mtime put back: its ctime moved. The kernel's key changed.
    const lockfile = join(root, 'kernels', 'debian12.lock.yaml');
    let restore = await sameSizeEdit(lockfile, (t) => {
      // The last package's sha256 (the first sha256 is the definition's).
      const at = t.lastIndexOf('sha256: ') + 'sha256: '.length;
      return `${t.slice(0, at)}${t[at] === '0' ? '1' : '0'}${t.slice(at + 1)}`;
    });
    let r = await slow(['up-to-date', 'unbuildable'], /noop stamp: not used: .*debian12\.lock\.yaml changed/);
    assert.match(r.stderr, /noop stamp: removed /);
    assert.equal(existsSync(stampFile), false, 'a run that is not a no-op removes the stamp');
    await restore();
    await settle();

    // kernels/drivers.yaml: another clang pins every key.
    restore = await sameSizeEdit(join(root, 'kernels', 'drivers.yaml'), (t) => t.replace('14.0.6', '14.0.7'));
    await slow(['unbuildable', 'unbuildable'], /drivers\.yaml changed/);
    await restore();
    await settle();

    // drivers.yaml as a symbolic link: its target checked through stat (find -H), the link through lstat.
    const driversFile = join(root, 'kernels', 'drivers.yaml');
    const driversTarget = join(root, 'drivers.target.yaml');
    await rename(driversFile, driversTarget);
    await symlink(driversTarget, driversFile);
    await settle();
    restore = await sameSizeEdit(driversTarget, (t) => t.replace('14.0.6', '14.0.7'));
    await slow(['unbuildable', 'unbuildable'], /drivers\.yaml changed/);
    await restore();
    await settle();
    await rm(driversFile);
    await rename(driversTarget, driversFile);
    await settle();

    // A file of the local driver's tree: its tree hash is in every key.
    restore = await sameSizeEdit(join(root, 'drivers', 'example', 'probe.c'), (t) => t.replace('a probe', 'A probe'));
    await slow(['unbuildable', 'unbuildable'], /probe\.c changed/);
    await restore();
    await settle();

    // A file added to the driver's tree (its folder's mtime moves).
    await writeFile(join(root, 'drivers', 'example', 'extra.h'), '/* more */\n');
    await slow(['unbuildable', 'unbuildable'], /drivers\/example changed/);
    await rm(join(root, 'drivers', 'example', 'extra.h'));
    await settle();

    // A published file removed, then one changed in place (same size, mtime put back).
    const published = join(repo, files[0]!);
    const bytes = await readFile(published);
    await rm(published);
    r = await slow(['unbuildable', 'up-to-date'], /is gone/);
    await writeFile(published, bytes);
    await settle();
    restore = await sameSizeEdit(join(repo, files[1]!), (t) => t.replace('probe', 'PROBE'));
    r = await slow(['up-to-date', 'unbuildable'], /changed/);
    await restore();
    await settle();

    // A new lockfile (kernels/ lists another file): its kernel has no probe.
    await writeLockfileFor(root, 'other', [k('6.1.0-51-arm64')]);
    r = await slow(['up-to-date', 'up-to-date', 'unbuildable'], /kernels changed/);
    await rm(join(root, 'kernels', 'other.lock.yaml'));
    await rm(join(root, 'kernels', 'other.yaml'));
    await settle();

    // A path recorded as absent appearing: another run's work folder.
    const work = join(root, '.falco-probes', 'work');
    assert.equal(existsSync(work), false);
    await mkdir(work);
    await slow(upToDate, /\.falco-probes\/work appeared/);
    await fast();
    await rm(work, { recursive: true });
    await settle();

    // Another command line or environment: the normal path (and a stamp for it); --verify-all never replays and keeps the stamp.
    const label = [...ARGS, '--label', `arch=${FOREIGN}`];
    await slow(upToDate, /another command line or environment/, label);
    await fast(label);
    await slow(upToDate, /another command line or environment/);
    await fast();
    await slow(upToDate, /another command line or environment/, ARGS, { XDG_CACHE_HOME: join(root, 'xdg') });
    await settle();
    r = await slow(upToDate, /2 targets: 0 built/, [...ARGS, '--verify-all']);
    assert.doesNotMatch(r.stderr, /noop stamp: (removed|written)/);
    await fast();

    // Other code: any file of the sources edited or added.
    await writeFile(join(dir, 'tool', 'src', 'util', 'noop-stamp-test.ts'), 'export {};\n');
    await slow(upToDate, /other code/);
    await fast();

    // A racy stamp: entries not older than the stamp's own mtime are not trusted.
    const past = new Date(Date.now() - 3600_000);
    await utimes(stampFile, past, past);
    await slow(upToDate, /is racy/);
    await fast();

    // A damaged stamp (one byte of its body) is never trusted.
    const text = await readFile(stampFile, 'utf8');
    await writeFile(stampFile, text.replace(/ up to date in /, ' up to dote in '));
    await slow(upToDate, /damaged: sha256/);
    await fast();

    // Without find on PATH (PATH is in the key: the normal path writes a stamp checked by statSync), find gone
    // after the stamp was written, and a find that prints other stats: the stats decide, path by path.
    const noFind = join(dir, 'no-find');
    await mkdir(noFind);
    await slow(upToDate, /another command line or environment/, ARGS, { PATH: noFind });
    await fast(ARGS, { PATH: noFind }, /checked by stat\)/);
    restore = await sameSizeEdit(join(repo, files[1]!), (t) => t.replace('probe', 'PROBE'));
    await slow(['up-to-date', 'unbuildable'], /changed/, ARGS, { PATH: noFind });
    await restore();
    await settle({ PATH: noFind }, /checked by stat\)/);
    const someFind = join(dir, 'some-find');
    await mkdir(someFind);
    const findPath = execFileSync('sh', ['-c', 'command -v find'], { encoding: 'utf8' }).trim();
    await symlink(findPath, join(someFind, 'find'));
    await settle({ PATH: someFind });
    await rm(join(someFind, 'find'));
    await fast(ARGS, { PATH: someFind }, /checked by stat\)/);
    await writeFile(join(someFind, 'find'), '#!/bin/sh\ncat >/dev/null\necho 1 2 3 4.0000000000 5.0000000000\n');
    await chmod(join(someFind, 'find'), 0o755);
    await fast(ARGS, { PATH: someFind }, /checked by stat\)/);
    restore = await sameSizeEdit(join(root, 'drivers', 'example', 'probe.c'), (t) => t.replace('a probe', 'A probe'));
    await slow(['unbuildable', 'unbuildable'], /probe\.c changed/, ARGS, { PATH: someFind });
    await restore();
    // A stamp written while find prints other stats records that: its replays check by statSync alone.
    r = await slow(upToDate, /no stamp/, ARGS, { PATH: someFind });
    assert.match(r.stderr, /noop stamp: written .*checked by stat: find is not there/);
    await rm(join(someFind, 'find'));
    await symlink(findPath, join(someFind, 'find'));
    await fast(ARGS, { PATH: someFind }, /checked by stat\)/);
    await settle();

    // A run that also printed something else (it swept a dead run's temporary) writes no stamp.
    await writeFile(join(root, '.falco-probes', 'cache', '.x.999999999.0123abcd.tmp'), '');
    await rm(stampFile);
    r = await slow(upToDate, /no stamp/);
    assert.match(r.stderr, /removed 1 work directory/);
    assert.match(r.stderr, /noop stamp: not written: the run printed more than a no-op does/);
    assert.equal(existsSync(stampFile), false);
    await settle();
  }, 'falco-probes-noop-stamp-');
});

test("the replay's finds: the paths in runs over several processes, their outputs read in order; a changed file, a missing find", async () => {
  const bin: string = '../bin/noop-stamp.js'; // plain JavaScript without declarations
  type Find = { done: Promise<boolean>; cancel(): void };
  const { startFind } = (await import(bin)) as {
    startFind: (follow: boolean, paths: Buffer, expected: Buffer, parts: number, scratch: string) => Find;
  };
  await withTempDir(async (dir) => {
    const files = Array.from({ length: 2500 }, (_, i) => join(dir, 'tree', `d${i % 7}`, `f${i}`));
    for (let d = 0; d < 7; d++) await mkdir(join(dir, 'tree', `d${d}`), { recursive: true });
    for (const [i, f] of files.entries()) await writeFile(f, 'x'.repeat(i % 13));
    const paths = Buffer.from(files.map((f) => `${f}\0`).join(''));
    const stats = () =>
      execFileSync('find', ['-P', '-files0-from', '-', '-maxdepth', '0', '-printf', '%D %i %s %T@ %C@\\n'], {
        input: paths,
        env: { LC_ALL: 'C', PATH: process.env['PATH'] ?? '' },
      });
    const expected = stats();
    const scratch = join(dir, 'noop.stamp.find.1.0');
    const leftovers = () => readdirSync(dir).filter((n) => n.startsWith('noop.stamp.find.'));
    for (const parts of [1, 2, 3, 7]) {
      assert.equal(await startFind(false, paths, expected, parts, scratch).done, true, `${parts} parts`);
      assert.deepEqual(leftovers(), []);
    }
    // Other stats for one file (its size changed), or the same stats in another order: not the recorded bytes.
    await writeFile(files[1234]!, 'changed');
    assert.equal(await startFind(false, paths, expected, 3, scratch).done, false, 'a changed file');
    assert.equal(await startFind(false, paths, stats(), 3, scratch).done, true, 'its new stats');
    const swapped = Buffer.from([files[1], files[0], ...files.slice(2)].map((f) => `${f}\0`).join(''));
    assert.equal(await startFind(false, swapped, stats(), 2, scratch).done, false, 'another order');
    // No find on PATH: no answer, nothing left behind, and cancelling signals nobody (a failed spawn has no pid:
    // its kill() would signal this whole process group).
    const now = stats();
    const path = process.env['PATH'];
    process.env['PATH'] = join(dir, 'tree', 'd0');
    try {
      const f = startFind(false, paths, now, 2, scratch);
      f.cancel();
      assert.equal(await f.done, false);
      assert.equal(await startFind(false, paths, now, 2, scratch).done, false, 'find not there');
    } finally {
      process.env['PATH'] = path;
    }
    assert.deepEqual(leftovers(), []);
  }, 'falco-probes-noop-find-');
});
