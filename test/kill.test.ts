import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, withTempDir } from './helpers/cli.js';
import { obtainDebianKernels } from './helpers/kernel-headers.js';
import { descriptors, OS, spawnCli, startDebMirror, waitFor, writeProject } from './build-e2e-project.js';
import { readIndex } from '../src/repository/index-file.js';
import { LOCK_FILE } from '../src/repository/local.js';
import { sha256Hex } from '../src/util/hash.js';
import type { BuildReport } from '../src/run/runner.js';
import { skipOrFail } from './helpers/require.js';

// kill -9 of the runner while a build runs, for real: the repository keeps
// only complete, indexed probes, its index stays valid, the dead runner's
// lock does not block the next run, and that run builds exactly what is
// missing.

const TIMEOUT = 600_000;

/** Compilers the killed runner started run on in their own process groups; find them by their work directory and stop them. */
async function killOrphans(underDir: string): Promise<number> {
  let killed = 0;
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let cmdline: string;
    try {
      cmdline = (await readFile(`/proc/${name}/cmdline`, 'utf8')).replace(/\0/g, ' ');
    } catch {
      continue;
    }
    if (!cmdline.includes(underDir)) continue;
    try {
      process.kill(Number(name), 'SIGKILL');
      killed++;
    } catch {
      /* already gone */
    }
  }
  return killed;
}

test('Ctrl-C and kill -9 during builds leave a valid repository and the next run builds exactly the missing targets', {
  timeout: TIMEOUT,
}, async (t) => {
  const obtained = await obtainDebianKernels();
  if (!obtained.ok) return skipOrFail(t, obtained.skip);
  const kernels = obtained.kernels;

  await withTempDir(async (dir) => {
    const mirror = await startDebMirror(dir, kernels);
    const root = join(dir, 'project');
    try {
      await writeProject(root, { kernels: descriptors(kernels), mirrorUrl: mirror.url });
      const repo = join(root, 'repository');
      const args = ['build', '-j', '1', '--fetch-via', 'http', '--cache', join(dir, 'cache'), '--json'];

      const secondLog = join(root, '.falco-probes', 'logs', OS, `${kernels[1]!.release}.log`);
      const secondCompiling = async () => {
        const index = await readIndex(repo).catch(() => undefined);
        if (!index || index.probes.length < 1) return undefined;
        const log = await readFile(secondLog, 'utf8').catch(() => '');
        return /^clang /m.test(log) ? true : undefined;
      };

      // First Ctrl-C (SIGINT): -j 1, the first target is published, the second one is compiling.
      // The run cancels the compile, releases the lock and exits 130; the index keeps the first probe.
      const interrupted = spawnCli(args, root, TIMEOUT);
      await waitFor('the first probe to be published and the second to be compiling', secondCompiling, TIMEOUT, 50);
      interrupted.child.kill('SIGINT');
      const intExit = await interrupted.exited;
      assert.equal(intExit.code, 130, interrupted.stderr());
      assert.match(interrupted.stderr(), /SIGINT: stopping/);
      await assert.rejects(readFile(join(repo, LOCK_FILE)), { code: 'ENOENT' });
      assert.equal((await readIndex(repo)).probes.length, 1);
      await rm(secondLog);

      // Then kill -9 while the second target compiles again.
      const run = spawnCli(args, root, TIMEOUT);
      await waitFor('the second target to be compiling again', secondCompiling, TIMEOUT, 50);
      run.child.kill('SIGKILL');
      const exit = await run.exited;
      assert.equal(exit.signal, 'SIGKILL');
      await killOrphans(root);

      // Only complete, indexed probes in the repository; the index is valid and agrees with the files.
      const index = await readIndex(repo);
      assert.equal(index.probes.length, 1);
      const visible: string[] = [];
      const walk = async (rel: string): Promise<void> => {
        for (const e of await readdir(join(repo, rel), { withFileTypes: true })) {
          if (e.name.startsWith('.')) continue;
          const r = rel ? `${rel}/${e.name}` : e.name;
          if (e.isDirectory()) await walk(r);
          else visible.push(r);
        }
      };
      await walk('');
      assert.deepEqual(visible.sort(), ['SHA256SUMS', 'index.json', ...index.probes.map((p) => p.file)].sort());
      for (const p of index.probes) assert.equal(sha256Hex(await readFile(join(repo, p.file))), p.sha256);
      // The dead runner's lock is still there; it must not stop the next run.
      assert.equal(JSON.parse(await readFile(join(repo, LOCK_FILE), 'utf8')).pid, run.child.pid);

      const next = await runCli(args, { cwd: root, timeoutMs: TIMEOUT });
      assert.equal(next.code, 0, next.stderr);
      const report = JSON.parse(next.stdout) as BuildReport;
      assert.deepEqual(
        report.results.filter((r) => r.status === 'built').map((r) => r.label),
        [`//probes/${OS}:${kernels[1]!.release}`],
      );
      assert.equal(report.upToDate, 1);
      const after = await readIndex(repo);
      assert.equal(after.probes.length, 2);
      assert.deepEqual(
        after.probes.find((p) => p.file === index.probes[0]!.file),
        index.probes[0],
      );
      // Nothing of the killed run is left in the repository's hidden temporary folder or beside the index.
      assert.deepEqual(
        (await readdir(repo)).filter((n) => n.startsWith('.') && n !== LOCK_FILE),
        [],
      );
    } finally {
      await killOrphans(root);
      await mirror.close();
    }
  });
});
