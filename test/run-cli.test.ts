import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { runCli, withTempDir } from './helpers/cli.js';
import { OS, spawnCli, waitFor, writeProject } from './build-e2e-project.js';
import { syntheticKernel } from './build-e2e-project.js';
import { LOCK_FILE } from '../src/repository/local.js';
import type { KernelDescriptor } from '../src/config/types.js';
import type { BuildReport } from '../src/run/runner.js';

// The `build` command's answers that need no compile: dry runs, bad
// patterns and options, a damaged index, the repository lock, an unpinned
// driver. The real binary in a temporary project.

const kernel = syntheticKernel;

const UNPINNED = `  - name: falco
    version: 9.1.0+driver
    source:
      url: https://example.invalid/libs.tar.gz
      strip: 1
    recipe: falco-libs
    bpfDir: driver/bpf
    object: probe.o
    kinds: [bpf]
`;

async function project(dir: string, kernels: KernelDescriptor[]): Promise<string> {
  const root = join(dir, 'project');
  // Nothing here compiles, so the builder pin need not be this host's.
  await writeProject(root, { kernels, mirrorUrl: 'http://127.0.0.1:9/none', builderClang: '14.0.6', extraDrivers: UNPINNED });
  return root;
}

test('--dry-run lists what would build, with --explain the reason, with --json a report; nothing is locked or written', async () => {
  await withTempDir(async (dir) => {
    const root = await project(dir, [kernel('6.1.0-1-amd64'), kernel('6.1.0-2-amd64')]);
    const plain = await runCli(['build', '--dry-run'], { cwd: root });
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout, `//probes/${OS}:6.1.0-1-amd64-example-1.0.0\n//probes/${OS}:6.1.0-2-amd64-example-1.0.0\n`);
    assert.match(plain.stderr, /2 targets: 2 would build, 0 up to date \(dry run\)/);
    const explained = await runCli(['build', '-n', '--explain', `//probes/${OS}:6.1.0-2-amd64`], { cwd: root });
    assert.equal(explained.stdout, `//probes/${OS}:6.1.0-2-amd64-example-1.0.0: no probe in the repository\n`);
    const json = await runCli(['build', '--dry-run', '--json', '--label', 'driver=example'], { cwd: root });
    const report = JSON.parse(json.stdout) as BuildReport;
    assert.deepEqual(
      report.results.map((r) => [r.status, r.reason]),
      [
        ['would-build', 'no-probe'],
        ['would-build', 'no-probe'],
      ],
    );
    const { readdir } = await import('node:fs/promises');
    assert.ok(!(await readdir(root)).includes('repository'), 'a dry run creates no repository');
  });
});

test('bad patterns, labels and options are usage errors (exit 2) with near matches', async () => {
  await withTempDir(async (dir) => {
    const root = await project(dir, [kernel('6.1.0-1-amd64')]);
    const os = await runCli(['build', '-n', '//probes/testdbe/...'], { cwd: root });
    assert.equal(os.code, 2);
    assert.match(os.stderr, /unknown OS "testdbe"\nhint: did you mean: testdeb/);
    const k = await runCli(['build', '-n', `//probes/${OS}:6.1.0-1-amd`], { cwd: root });
    assert.equal(k.code, 2);
    assert.match(k.stderr, /unknown kernel "6\.1\.0-1-amd" in testdeb\nhint: did you mean: 6\.1\.0-1-amd64/);
    for (const args of [['-j', '0'], ['--fetch-via', 'ftp'], ['--label', 'colour=red'], ['//probes'], ['--mirror', 'nourl']]) {
      const r = await runCli(['build', '-n', ...args], { cwd: root });
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    }
  });
});

test('an unpinned remote driver is refused by name, with the command that pins it', async () => {
  await withTempDir(async (dir) => {
    const root = await project(dir, [kernel('6.1.0-1-amd64')]);
    for (const args of [['--label', 'driver=falco'], [`//probes/${OS}:6.1.0-1-amd64-falco-9.1.0+driver`]]) {
      const r = await runCli(['build', ...args], { cwd: root });
      assert.equal(r.code, 2, r.stderr);
      assert.match(
        r.stderr,
        /driver falco 9\.1\.0\+driver is a remote tarball without a sha256 pin; refusing to build from unverified source\nhint: run `falco-probes pin falco`/,
      );
    }
  });
});

test('a damaged index stops the run with the file, line and column; nothing is written', async () => {
  await withTempDir(async (dir) => {
    const root = await project(dir, [kernel('6.1.0-1-amd64')]);
    await mkdir(join(root, 'repository'));
    await writeFile(join(root, 'repository', 'index.json'), '{\n  "version": 1,\n  "probes": [\n    {"file": 12}\n  ]\n}\n');
    const r = await runCli(['build'], { cwd: root });
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`${join(root, 'repository', 'index.json')}:4:\\d+: malformed repository index`));
  });
});

test('a live runner holds the lock: the second fails naming it; with --wait-lock it waits, then breaks the lock once the holder is gone', async () => {
  await withTempDir(async (dir) => {
    // No kernels: a run takes the lock, finds nothing to build and ends.
    const root = await project(dir, []);
    await mkdir(join(root, 'repository'));
    const holder = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      await writeFile(
        join(root, 'repository', LOCK_FILE),
        JSON.stringify({ pid: holder.pid, host: hostname(), since: 'now', command: 'falco-probes build' }),
      );
      const refused = await runCli(['build'], { cwd: root });
      assert.equal(refused.code, 1);
      assert.match(
        refused.stderr,
        new RegExp(`the repository is locked by another runner: pid ${holder.pid} on ${hostname()} \\(falco-probes build\\)`),
      );
      assert.match(refused.stderr, /hint: wait for it to finish, or run with --wait-lock/);

      const waiting = spawnCli(['build', '--wait-lock'], root, 60_000);
      await waitFor(
        'the second runner to wait',
        async () => (/waiting for the repository lock/.test(waiting.stderr()) ? true : undefined),
        60_000,
      );
      assert.match(waiting.stderr(), new RegExp(`waiting for the repository lock held by pid ${holder.pid} on `));
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(waiting.child.exitCode, null, 'still waiting');
      holder.kill('SIGKILL');
      const exit = await waiting.exited;
      assert.equal(exit.code, 0, waiting.stderr());
      assert.match(waiting.stderr(), /0 targets: 0 built, 0 up to date/);
    } finally {
      holder.kill('SIGKILL');
    }
  });
});
