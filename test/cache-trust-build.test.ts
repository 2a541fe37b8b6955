import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, mkdir, open, readdir, readFile, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, withTempDir } from './helpers/cli.js';
import { obtainDebianKernels } from './helpers/kernel-headers.js';
import { descriptors, snapshot, spawnCli, startDebMirror, waitFor, writeProject } from './build-e2e-project.js';
import { cachePath } from '../src/fetch/cache.js';
import type { BuildReport } from '../src/run/runner.js';
import { skipOrFail } from './helpers/require.js';

// Issue 14, the rows that build (one real Debian 6.1 kernel, the example
// probe, one cache shared by every step): a cached package, an unpacked tree
// and a kernel root that changed on disk are found, removed with a warning
// naming them, and made again; temporaries of dead processes are swept; a
// SIGINT cancels, removes its work and exits 130. Every repaired run gives
// the same bytes as the first.

const TIMEOUT = 600_000;
/** Above Linux's largest pid_max (2^22): never a live process. */
const DEAD = 2 ** 22 + 1;

test('damaged caches are found and remade; temporaries of dead runs swept; SIGINT cancels', { timeout: TIMEOUT }, async (t) => {
  const obtained = await obtainDebianKernels();
  if (!obtained.ok) return skipOrFail(t, obtained.skip);
  const k = obtained.kernels.find((x) => x.series === '6.1') ?? obtained.kernels[0]!;
  await withTempDir(async (dir) => {
    const mirror = await startDebMirror(dir, [k]);
    try {
      const root = join(dir, 'project');
      const cache = join(dir, 'cache');
      const repo = join(root, 'repository');
      await writeProject(root, { kernels: descriptors([k]), mirrorUrl: mirror.url });
      const build = async () => {
        await rm(repo, { recursive: true, force: true });
        const r = await runCli(['build', '--fetch-via', 'http', '--cache', cache, '--json'], { cwd: root, timeoutMs: TIMEOUT });
        assert.equal(r.code, 0, r.stderr);
        assert.equal((JSON.parse(r.stdout) as BuildReport).built, 1);
        return r;
      };
      await build();
      const reference = [...(await snapshot(repo))].map(([f, v]) => [f, v.sha256]);
      const same = async (what: string) =>
        assert.deepEqual(
          [...(await snapshot(repo))].map(([f, v]) => [f, v.sha256]),
          reference,
          what,
        );
      const [rootId] = (await readdir(join(cache, 'kernel-roots'))).filter((n) => !n.startsWith('.'));
      const kernelRoot = join(cache, 'kernel-roots', rootId!);
      const headers = k.packages.find((p) => p.role === 'headers')!;
      const uts = `usr/src/linux-headers-${k.release}/include/generated/utsrelease.h`;

      // A cached package with one byte flipped (same size): found by sha256 on first use, removed, fetched again.
      const cached = cachePath(cache, headers.sha256);
      const fh = await open(cached, 'r+');
      const byte = Buffer.alloc(1);
      await fh.read(byte, 0, 1, 1000);
      await fh.write(Buffer.from([byte[0]! ^ 1]), 0, 1, 1000);
      await fh.close();
      const requests = mirror.requests.length;
      let r = await build();
      assert.match(r.stderr, new RegExp(`cached ${headers.name} at ${cached} is corrupt \\(sha256 `));
      assert.equal(mirror.requests.length, requests + 1, 'fetched again');
      await same('a corrupt cached package');

      // A file of the unpacked tree edited (through its hard link in the kernel root): both found, remade.
      await appendFile(join(kernelRoot, uts), '#define EDITED 1\n');
      r = await build();
      assert.match(r.stderr, new RegExp(`kernel root ${kernelRoot} does not match its manifest \\(${uts.replace(/[.+]/g, '\\$&')}: `));
      assert.match(r.stderr, new RegExp(`unpacked package tree ${join(cache, 'trees', headers.sha256)} does not match its manifest`));
      assert.doesNotMatch(await readFile(join(kernelRoot, uts), 'utf8'), /EDITED/);
      await same('an edited tree');

      // One file deleted in the kernel root: found before the build, recomposed.
      await unlink(join(kernelRoot, uts));
      r = await build();
      assert.match(
        r.stderr,
        new RegExp(`kernel root ${kernelRoot} does not match its manifest \\(${uts.replace(/[.+]/g, '\\$&')}: missing`),
      );
      await same('a deleted file');

      // An edit that keeps size and time passes the stat check; the build fails, the full check finds it, the root is remade and built again.
      const makefile = join(kernelRoot, `usr/src/linux-headers-${k.release}/Makefile`);
      const before = await stat(makefile);
      await writeFile(makefile, 'x'.repeat(before.size));
      await utimes(makefile, before.atime, before.mtime);
      r = await build();
      assert.match(r.stderr, /does not match its manifest \(.*Makefile: its sha256 differs/);
      await same('a same-size edit');

      // Temporaries of every form, of a process that is gone: a full run sweeps them all.
      const temps = [
        join(cache, 'trees', `.${headers.sha256}.${DEAD}.0badc0de.tmp`),
        join(cache, 'trees', `..${headers.sha256}.${DEAD}.0badc0de.tmp.extract-${DEAD}-AbCdEf`),
        join(cache, 'kernel-roots', `.${rootId}.${DEAD}.0badc0de.tmp`),
        join(cache, 'sha256', headers.sha256.slice(0, 2), `.${headers.sha256}.${DEAD}.0badc0de.part`),
        join(root, '.falco-probes', 'cache', `.graph.json.${DEAD}.0badc0de.tmp`),
        join(root, '.falco-probes', 'work', `${'e'.repeat(64)}-${DEAD}`),
      ];
      for (const p of temps) {
        if (p.endsWith('.part') || p.includes('graph.json')) await writeFile(p, 'partial');
        else await mkdir(join(p, 'usr', 'include'), { recursive: true });
      }
      await build();
      for (const p of temps) await assert.rejects(stat(p), { code: 'ENOENT' }, p);

      // SIGINT while the target builds: cancelled (not FAILED, no log dump), its work directory removed, exit 130.
      await rm(repo, { recursive: true, force: true });
      const run = spawnCli(['build', '--fetch-via', 'http', '--cache', cache, '--json'], root);
      await waitFor(
        'the build to start',
        async () => ((await readdir(join(root, '.falco-probes', 'work')).catch(() => [])).length ? true : undefined),
        120_000,
        20,
      );
      run.child.kill('SIGINT');
      const exit = await run.exited;
      const report = JSON.parse(run.stdout()) as BuildReport;
      if (report.built === 0) {
        assert.equal(exit.code, 130, run.stderr());
        assert.equal(report.results[0]!.status, 'cancelled', run.stderr());
        assert.doesNotMatch(run.stderr(), /FAILED|last lines of|kept for inspection/);
        assert.deepEqual(await readdir(join(root, '.falco-probes', 'work')), []);
      } else t.diagnostic('the build finished before SIGINT arrived: nothing to cancel');
    } finally {
      await mirror.close();
    }
  });
});
