import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFile, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, withTempDir } from './helpers/cli.js';
import { obtainDebianKernels, loaderFileFor } from './helpers/kernel-headers.js';
import { descriptors, OS, snapshot, spawnCli, startDebMirror, waitFor, writeOs, writeProject } from './build-e2e-project.js';
import { checkBpfObject } from '../src/builders/elf.js';
import { readIndex } from '../src/repository/index-file.js';
import { LOCK_FILE } from '../src/repository/local.js';
import { sha256Hex } from '../src/util/hash.js';
import type { BuildReport } from '../src/run/runner.js';
import { skipOrFail } from './helpers/require.js';

// The main job end to end, with the real binary, real Debian kernel headers
// from a loopback mirror, the real fetcher, extractor and host builder, and
// the example probe. One project is built, rebuilt and disturbed in turn.

const TIMEOUT = 600_000;

function parseReport(stdout: string): BuildReport {
  return JSON.parse(stdout) as BuildReport;
}

const built = (r: BuildReport) => r.results.filter((x) => x.status === 'built').map((x) => x.label);

test('build, no-op rebuild, selective rebuilds, dry-run reasons, byte-identical across directories', { timeout: TIMEOUT }, async (t) => {
  const obtained = await obtainDebianKernels();
  if (!obtained.ok) return skipOrFail(t, obtained.skip);
  const kernels = obtained.kernels;
  assert.ok(kernels.length >= 2);

  await withTempDir(async (dir) => {
    const mirror = await startDebMirror(dir, kernels);
    try {
      const root = join(dir, 'project');
      const cache = join(dir, 'cache');
      await writeProject(root, { kernels: descriptors(kernels), mirrorUrl: mirror.url });
      const build = (...args: string[]) =>
        runCli(['build', '--fetch-via', 'http', '--cache', cache, '--json', ...args], { cwd: root, timeoutMs: TIMEOUT });
      const repo = join(root, 'repository');
      const labels = kernels.map((k) => `//probes/${OS}:${k.release}`);

      // A first build at -j 2; while it holds the lock a second runner fails cleanly on it.
      const first = spawnCli(['build', '-j', '2', '--fetch-via', 'http', '--cache', cache, '--json'], root);
      await waitFor('the first runner to take the repository lock', async () => {
        try {
          return JSON.parse(await readFile(join(repo, LOCK_FILE), 'utf8')) as { pid: number };
        } catch {
          return undefined;
        }
      });
      const second = await build('-j', '1');
      assert.equal(second.code, 1, second.stderr);
      assert.match(second.stderr, new RegExp(`the repository is locked by another runner: pid ${first.child.pid} on `));
      const firstExit = await first.exited;
      assert.equal(firstExit.code, 0, first.stderr());
      const report1 = parseReport(first.stdout());
      assert.deepEqual(built(report1).sort(), [...labels].sort());

      // Falco's layout, ELF BPF objects, an index and SHA256SUMS that agree with the files.
      const index = await readIndex(repo);
      assert.deepEqual(
        index.probes.map((p) => p.file),
        kernels.map((k) => `1.0.0/x86_64/${loaderFileFor(k)}`).sort(),
      );
      for (const p of index.probes) {
        const bytes = await readFile(join(repo, p.file));
        const elf = checkBpfObject(bytes, p.file);
        assert.ok(
          elf.sections.some((s) => s.startsWith('raw_tracepoint/')),
          `${p.file} has its programs`,
        );
        assert.equal(sha256Hex(bytes), p.sha256);
        assert.equal(bytes.length, p.size);
      }
      assert.equal(spawnSync('sha256sum', ['-c', '--quiet', 'SHA256SUMS'], { cwd: repo }).status, 0);
      const requestsAfterFirst = mirror.requests.length;
      // One download per package, whatever the number of targets that need it.
      assert.equal(new Set(mirror.requests).size, mirror.requests.length);

      // Again: nothing rebuilds, nothing in the repository changes (bytes and mtimes), nothing is fetched.
      const before = await snapshot(repo);
      await new Promise((r) => setTimeout(r, 50));
      const again = await build('-j', '2');
      assert.equal(again.code, 0, again.stderr);
      assert.deepEqual([parseReport(again.stdout).built, parseReport(again.stdout).upToDate], [0, kernels.length]);
      assert.deepEqual(await snapshot(repo), before);
      assert.equal(mirror.requests.length, requestsAfterFirst);

      // Dry-run reasons: a missing file, a damaged file, a changed key, and a kernel never built.
      const [a, b] = index.probes;
      await rm(join(repo, a!.file));
      const dry1 = await runCli(['build', '--dry-run', '--explain'], { cwd: root });
      assert.equal(dry1.code, 0, dry1.stderr);
      assert.match(dry1.stdout, /: probe file missing \(/);
      assert.equal(dry1.stdout.trim().split('\n').length, 1);

      // Delete one probe: only it rebuilds, to the same sha256; the other file is untouched.
      const rebuilt = await build('-j', '2');
      assert.equal(rebuilt.code, 0, rebuilt.stderr);
      const report2 = parseReport(rebuilt.stdout);
      assert.equal(report2.built, 1);
      assert.equal(report2.results.find((r) => r.status === 'built')!.publish, 'restored');
      assert.equal(sha256Hex(await readFile(join(repo, a!.file))), a!.sha256);
      assert.deepEqual((await snapshot(repo)).get(b!.file), before.get(b!.file));

      // A damaged probe is rebuilt and restored to its published bytes.
      await appendFile(join(repo, b!.file), 'garbage');
      const dry2 = await runCli(['build', '--dry-run', '--explain'], { cwd: root });
      assert.match(dry2.stdout, /: probe file corrupt \(sha256 differs from the index\)/);
      const restored = await build();
      assert.equal(restored.code, 0, restored.stderr);
      assert.equal(sha256Hex(await readFile(join(repo, b!.file))), b!.sha256);

      // Change one kernel's descriptor (its uname -v): only it rebuilds; same bytes, so only its index key moves.
      const changed = descriptors(kernels);
      changed[1] = { ...changed[1]!, version: `${changed[1]!.version} changed` };
      await writeOs(root, OS, mirror.url, changed);
      const dry3 = await runCli(['build', '--dry-run', '--explain', '--json'], { cwd: root });
      const dryReport = parseReport(dry3.stdout);
      assert.deepEqual(
        dryReport.results.filter((r) => r.status === 'would-build').map((r) => [r.label, r.reason]),
        [[`//probes/${OS}:${kernels[1]!.release}`, 'key-changed']],
      );
      const beforeRekey = await snapshot(repo);
      const rekeyed = await build('-j', '2');
      assert.equal(rekeyed.code, 0, rekeyed.stderr);
      const report3 = parseReport(rekeyed.stdout);
      assert.deepEqual(built(report3), [`//probes/${OS}:${kernels[1]!.release}`]);
      assert.equal(report3.results.find((r) => r.status === 'built')!.publish, 'rekeyed');
      const afterRekey = await snapshot(repo);
      for (const p of index.probes) assert.deepEqual(afterRekey.get(p.file), beforeRekey.get(p.file), `${p.file} untouched`);
      const index3 = await readIndex(repo);
      assert.equal(
        index3.probes.find((p) => p.kernel === kernels[1]!.release)!.key,
        report3.results.find((r) => r.status === 'built')!.key,
      );

      // A new kernel name shows up as "no probe" (dry run only). It is another upload of the package
      // (Debian revision + 1 in uname -v): Falco's loaders name a Debian artifact by that version.
      const extra = {
        ...changed[0]!,
        name: `${changed[0]!.name}-again`,
        version: changed[0]!.version.replace(/(Debian \d+\.\d+\.\d+-)(\d+)/, (_, head: string, rev: string) => `${head}${Number(rev) + 1}`),
      };
      assert.notEqual(extra.version, changed[0]!.version);
      await writeOs(root, OS, mirror.url, [...changed, extra]);
      const dry4 = await runCli(['build', '--dry-run', '--explain'], { cwd: root });
      assert.equal(dry4.code, 0, dry4.stderr);
      assert.match(dry4.stdout, new RegExp(`//probes/${OS}:${extra.name.replace(/[.+]/g, '\\$&')}: no probe in the repository`));
      await writeOs(root, OS, mirror.url, changed);

      // build-probe (what Make and Please recipes call): one target into a file, the repository untouched, the same bytes.
      const beforeProbe = await snapshot(repo);
      const out = join(dir, 'out', 'probe.o');
      const one = await runCli(['build-probe', OS, kernels[0]!.release, '--out', out, '--fetch-via', 'http', '--cache', cache, '--json'], {
        cwd: root,
        timeoutMs: TIMEOUT,
      });
      assert.equal(one.code, 0, one.stderr);
      const oneEntry = index3.probes.find((p) => p.kernel === kernels[0]!.release)!;
      assert.equal(sha256Hex(await readFile(out)), oneEntry.sha256);
      assert.equal((JSON.parse(one.stdout) as { sha256: string }).sha256, oneEntry.sha256);
      assert.deepEqual(await snapshot(repo), beforeProbe);
      // A recipe from stale build files (another key) is refused before anything is fetched.
      const stale = await runCli(['build-probe', OS, kernels[0]!.release, '--out', out], {
        cwd: root,
        env: { FALCO_PROBES_KEY: 'e'.repeat(64) },
      });
      assert.equal(stale.code, 1);
      assert.match(
        stale.stderr,
        /the build file asks for key eeeeeeeeeeee, but the lockfiles and pins give [0-9a-f]{12}[\s\S]*run falco-probes generate/,
      );

      // A clean project in another directory (other work and header paths) builds byte-identical probes,
      // here with its definition's mirror down and the packages coming through --mirror.
      const other = join(dir, 'elsewhere', 'deeper', 'project');
      await writeProject(other, { kernels: changed, mirrorUrl: 'http://127.0.0.1:9/nothing-listens-here' });
      const cleanRun = await runCli(
        [
          'build',
          '-j',
          '2',
          '--fetch-via',
          'http',
          '--mirror',
          `bookworm-security=${mirror.url}`,
          '--cache',
          join(dir, 'cache2'),
          '--json',
        ],
        {
          cwd: other,
          timeoutMs: TIMEOUT,
        },
      );
      assert.equal(cleanRun.code, 0, cleanRun.stderr);
      const otherIndex = await readIndex(join(other, 'repository'));
      assert.deepEqual(
        otherIndex.probes.map((p) => [p.file, p.sha256, p.key]),
        index3.probes.map((p) => [p.file, p.sha256, p.key]),
      );
      await writeFile(join(dir, 'done'), 'ok');
    } finally {
      await mirror.close();
    }
  });
});
