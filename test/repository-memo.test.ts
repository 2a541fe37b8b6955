import { test } from 'node:test';
import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { withTempDir } from './helpers/cli.js';
import { sha256Hex } from '../src/util/hash.js';
import { LocalRepository } from '../src/repository/local.js';
import { readRepositoryMemo, repositoryMemoPath, serializeRepositoryMemo } from '../src/repository/memo.js';
import { serializeIndex } from '../src/repository/index-file.js';
import { planTargets } from '../src/run/plan.js';
import type { Target } from '../src/graph/types.js';

// The repository's stat memo (src/repository/memo.ts), with real files: a
// file whose stat is unchanged since it was found to hold the index's bytes
// is not read again, unless it is racy (git's rule) or --verify-all asks;
// a file changed with its size and mtime put back is still read (ctime); a
// damaged memo is ignored and rewritten; index.json's entries come from the
// memo only while index.json is unchanged.

function target(name: string, key = sha256Hex(name)): Target {
  return {
    label: `//probes/testos:${name}`,
    name,
    os: 'testos',
    kernel: { name, release: name, version: '#1', machine: 'x86_64', kernelVersion: '1', targetId: 'testos', packages: [] },
    osRelease: { ID: 'testos' },
    driver: {
      name: 'example',
      version: '1.0.0',
      source: { path: 'x' },
      recipe: 'kbuild',
      bpfDir: '.',
      kinds: ['bpf'],
      object: 'probe.o',
      sourceSha256: '0'.repeat(64),
    },
    builder: { kind: 'host', clang: '14.0.6' },
    kind: 'bpf',
    arch: 'x86_64',
    key,
    probeFile: `falco_testos_${name}_1.o`,
    output: `1.0.0/x86_64/falco_testos_${name}_1.o`,
  };
}

const NAMES = ['a', 'b', 'c'];
/** Where a project in `dir` keeps the memo of the repository `<dir>/repo`. */
const memoOf = (root: string) => repositoryMemoPath(join(root, '..', '.falco-probes'), root);
const TARGETS = NAMES.map((n) => target(n));

/** A repository with three published probes, planned once with the lock (so its memo records their stats). */
async function published(dir: string): Promise<string> {
  const root = join(dir, 'repo');
  const repo = await LocalRepository.openForWrite(root, { memo: memoOf(root) });
  for (const t of TARGETS) {
    const file = join(dir, `${t.name}.o`);
    await writeFile(file, `probe ${t.name}`);
    await repo.publish(t, file, { sha256: sha256Hex(`probe ${t.name}`), size: `probe ${t.name}`.length });
  }
  await repo.close();
  await plannedWithLock(root);
  return root;
}

const path = (root: string, name: string) => join(root, target(name).output);

/** The memo's own time set `seconds` from now: in the future, every entry is older than it (not racy); in the past, every entry is racy. */
async function memoTime(root: string, seconds: number): Promise<void> {
  const at = new Date(Date.now() + seconds * 1000);
  await utimes(memoOf(root), at, at);
}

async function plannedWithLock(root: string, options: { verifyAll?: boolean } = {}) {
  const repo = await LocalRepository.openForWrite(root, { ...options, memo: memoOf(root) });
  try {
    return (await planTargets(TARGETS, repo)).map((p) => p.reason ?? 'ok');
  } finally {
    await repo.close();
  }
}

const planned = async (root: string, options: { verifyAll?: boolean } = {}) =>
  (await planTargets(TARGETS, await LocalRepository.read(root, { ...options, memo: memoOf(root) }))).map((p) => p.reason ?? 'ok');

/**
 * Change a's bytes behind the memo's back and record, in a memo sealed as
 * the tool seals it, the stat it now has: proof of what the memo decides,
 * since only a memo that is trusted can make the damaged file look fine.
 */
async function forgeUnchanged(root: string): Promise<void> {
  await writeFile(path(root, 'a'), 'probe X'); // same size, other bytes
  const st = await stat(path(root, 'a'), { bigint: true });
  const memo = readRepositoryMemo(memoOf(root))!;
  const a = memo.entries.get(target('a').output)!;
  memo.entries.set(a.file, { ...a, stat: `${st.dev} ${st.ino} ${st.size} ${st.mtimeNs} ${st.ctimeNs}` });
  await writeFile(memoOf(root), serializeRepositoryMemo({ ...memo, entries: memo.entries.values() }));
}

test('every file is read once and its stat recorded; then an unchanged stat is trusted, --verify-all reads every file', async () => {
  await withTempDir(async (dir) => {
    const root = await published(dir);
    const memo = readRepositoryMemo(memoOf(root))!;
    assert.ok(memo, 'the memo was written');
    assert.deepEqual(
      TARGETS.map((t) => memo.entries.get(t.output)?.stat !== undefined),
      [true, true, true],
      'each file that held its index bytes has its stat',
    );
    assert.deepEqual(await planned(root), ['ok', 'ok', 'ok']);

    await forgeUnchanged(root);
    await memoTime(root, 60);
    assert.deepEqual(await planned(root), ['ok', 'ok', 'ok'], 'the memo decided: the file was not read');
    assert.deepEqual(await planned(root, { verifyAll: true }), ['file-corrupt', 'ok', 'ok'], '--verify-all reads every file');
  });
});

test('a file changed with its size and mtime put back is read again (its ctime moved)', async () => {
  await withTempDir(async (dir) => {
    const root = await published(dir);
    await memoTime(root, 60); // every entry is older than the memo: only the stat can say a file changed
    const before = await stat(path(root, 'b'), { bigint: true });
    // touch -r copies times to the nanosecond: keep b's on a reference file, change b in place, put them back.
    execFileSync('touch', ['-r', path(root, 'b'), join(dir, 'times')]);
    await writeFile(path(root, 'b'), 'probe Y'); // same size, same inode
    execFileSync('touch', ['-r', join(dir, 'times'), path(root, 'b')]);
    const after = await stat(path(root, 'b'), { bigint: true });
    assert.deepEqual(
      [after.dev, after.ino, after.size, after.mtimeNs],
      [before.dev, before.ino, before.size, before.mtimeNs],
      'only the ctime tells',
    );
    assert.notEqual(after.ctimeNs, before.ctimeNs);
    assert.deepEqual(await planned(root), ['ok', 'file-corrupt', 'ok']);
  });
});

test("racy entries (not older than the memo's own write) are read again", async () => {
  await withTempDir(async (dir) => {
    const root = await published(dir);
    await forgeUnchanged(root);
    await memoTime(root, 60);
    assert.deepEqual(await planned(root), ['ok', 'ok', 'ok'], 'not racy: trusted');
    await memoTime(root, -3600); // the memo is now older than every file
    assert.deepEqual(await planned(root), ['file-corrupt', 'ok', 'ok'], 'racy: read again');
  });
});

test('a damaged memo is ignored, never trusted, and a writer replaces it', async () => {
  await withTempDir(async (dir) => {
    const root = await published(dir);
    await forgeUnchanged(root);
    await memoTime(root, 60);
    const text = await readFile(memoOf(root), 'utf8');
    // One bit of the section (a size digit of c's line) flipped: the section's sha256 no longer holds.
    const at = text.lastIndexOf(' 7 ') + 1;
    const damaged = `${text.slice(0, at)}${String.fromCharCode(text.charCodeAt(at) ^ 1)}${text.slice(at + 1)}`;
    for (const bad of [damaged, text.slice(0, text.length - 10), '', 'falco-probes repository memo 1\n']) {
      await writeFile(memoOf(root), bad);
      assert.equal(readRepositoryMemo(memoOf(root)), undefined);
      assert.deepEqual(await planned(root), ['file-corrupt', 'ok', 'ok'], JSON.stringify(bad.slice(0, 40)));
    }
    assert.deepEqual(await plannedWithLock(root), ['file-corrupt', 'ok', 'ok']);
    const rewritten = readRepositoryMemo(memoOf(root));
    assert.ok(rewritten, 'rewritten whole by the writer');
    assert.equal(rewritten.entries.get(target('a').output)?.stat, undefined, 'no stat for a file that does not hold its index bytes');
    assert.ok(rewritten.entries.get(target('b').output)?.stat, 'a good file keeps its stat');
  });
});

test('index.json: the memo stands for it only while it is unchanged; an edited index is read (same size, mtime put back)', async () => {
  await withTempDir(async (dir) => {
    const root = await published(dir);
    await memoTime(root, 60);
    const indexFile = join(root, 'index.json');
    const text = await readFile(indexFile, 'utf8');
    execFileSync('touch', ['-r', indexFile, join(dir, 'times')]);
    // Rekey c in the index by hand: same length, mtime put back.
    const oldKey = target('c').key;
    const edited = text.replace(oldKey, 'e'.repeat(64));
    assert.equal(edited.length, text.length);
    await writeFile(indexFile, edited);
    execFileSync('touch', ['-r', join(dir, 'times'), indexFile]);
    assert.deepEqual(await planned(root), ['ok', 'ok', 'key-changed']);
    // A malformed index.json is an error whatever the memo says.
    await writeFile(indexFile, text.replace('"version": 1', '"version": 7'));
    await assert.rejects(LocalRepository.read(root), /version/);
    // Restored byte for byte (a new stat, the recorded sha256): the memo's entries serve again.
    await writeFile(indexFile, serializeIndex(JSON.parse(text)));
    assert.deepEqual(await planned(root), ['ok', 'ok', 'ok']);
  });
});

test('build: a no-op records the stats in the project (never in the repository), the next trusts them, --verify-all reads every file', async () => {
  const { makeProject, kernel, driversText, writePublishedProbes } = await import('./helpers/graph-project.js');
  const { runCli } = await import('./helpers/cli.js');
  const { loadBuildGraph } = await import('../src/graph/load.js');
  const { readdir } = await import('node:fs/promises');
  await withTempDir(async (root) => {
    await makeProject(root, {
      oses: { debian12: [kernel('6.1.0-50-amd64'), kernel('6.12.9+deb12-amd64')] },
      drivers: driversText({ remote: 'none' }),
    });
    // A finished build's repository: a probe per target and the index.
    const graph = await loadBuildGraph(root);
    const repo = join(root, 'repository');
    await writePublishedProbes(repo, graph.targets);
    const build = async (...args: string[]) => {
      const r = await runCli(['build', '--json', ...args], { cwd: root });
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as { results: { file: string; status: string }[] }).results.map((x) => x.status);
    };
    const all = graph.targets.map(() => 'up-to-date');
    assert.deepEqual(await build(), all);
    const memo = repositoryMemoPath(join(root, '.falco-probes'), repo);
    assert.ok(readRepositoryMemo(memo), 'the memo is in .falco-probes/cache/');
    assert.deepEqual(
      (await readdir(repo)).filter((n) => n.startsWith('.')),
      [],
      'nothing of it in the repository',
    );

    // Damage one probe behind the memo's back and record its new stat, as a trusted memo would hold it.
    const damaged = graph.targets[0]!.output;
    await writeFile(join(repo, damaged), `probe ${'x'.repeat(64)}`); // same size
    const st = await stat(join(repo, damaged), { bigint: true });
    const m = readRepositoryMemo(memo)!;
    m.entries.set(damaged, { ...m.entries.get(damaged)!, stat: `${st.dev} ${st.ino} ${st.size} ${st.mtimeNs} ${st.ctimeNs}` });
    await writeFile(memo, serializeRepositoryMemo({ ...m, entries: m.entries.values() }));
    const future = new Date(Date.now() + 60_000);
    await utimes(memo, future, future);
    assert.deepEqual(await build('--dry-run'), all, 'the stat memo decides');
    assert.deepEqual(await build('--dry-run', '--verify-all'), ['would-build', ...all.slice(1)], '--verify-all reads every file');
  }, 'falco-probes-repository-memo-');
});
