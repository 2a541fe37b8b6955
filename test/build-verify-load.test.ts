import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { cp, mkdir, readFile, symlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import type { KernelDescriptor } from '../src/config/types.js';
import { loadBuildGraph } from '../src/graph/load.js';
import { readIndex } from '../src/repository/index-file.js';
import { LocalRepository } from '../src/repository/local.js';
import { shardOf } from '../src/repository/shard.js';
import type { BuildReport } from '../src/run/runner.js';
import { sha256File } from '../src/util/hash.js';
import type { VerifyReport } from '../src/verify/run.js';
import { descriptors, REPOSITORY_NAME, startDebMirror, syntheticKernel, writeProject } from './build-e2e-project.js';
import { PROJECT_ROOT, runCli, withTempDir } from './helpers/cli.js';
import { obtainDebianKernelImage } from './helpers/kernel-image.js';
import { skipOrFail } from './helpers/require.js';

// `build --verify-load` through the real binary: the verify step gets the
// build's own targets (its shard), prints one JSON document with the build
// report, fails the run on a probe its kernel refuses (naming the target),
// keeps that verdict for later runs and for plan, and leaves kernels no VM
// here can boot (aarch64) unverified rather than failed.

const execFileAsync = promisify(execFile);
const TIMEOUT = 300_000;

type BuildVerifyReport = BuildReport & { verify: Omit<VerifyReport, 'problems'> | null };

/** The whole of stdout as one JSON document (two documents, or none, throw). */
function parseOne(stdout: string): BuildVerifyReport {
  return JSON.parse(stdout) as BuildVerifyReport;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.+*?^$()[\]{}|\\]/g, '\\$&');
}

const REFUSED_DRIVER = `  - name: refused
    version: 0.1.0
    source:
      path: examples/refused
    recipe: kbuild
    bpfDir: .
    object: probe.o
    kinds: [bpf]
`;

/** A kernel no VM here can boot: its probe (already published) is left unverified, not failed. */
async function unbootable(
  kernel: KernelDescriptor,
  reasonFor: (target: { os: string; kernel: KernelDescriptor }) => string,
): Promise<void> {
  await withTempDir(async (dir) => {
    const root = join(dir, 'project');
    // Nothing is fetched (the probe is already in the repository for its key): the mirror URL is never asked.
    await writeProject(root, { kernels: [kernel], mirrorUrl: 'http://127.0.0.1:9/', extraDrivers: REFUSED_DRIVER });
    await cp(join(PROJECT_ROOT, 'examples', 'refused'), join(root, 'examples', 'refused'), { recursive: true });
    const graph = await loadBuildGraph(root);
    const target = graph.targets.find((x) => x.driver.name === 'refused')!;
    assert.equal(target.arch, kernel.machine);
    // A BPF object is the same for every machine: examples/refused needs no headers, so the repository gets a real one.
    const object = join(dir, 'probe.o');
    await execFileAsync('clang', ['-O2', '-g', '-target', 'bpf', '-c', join(root, 'examples', 'refused', 'probe.c'), '-o', object], {
      timeout: 60_000,
    });
    const repo = await LocalRepository.openForWrite(join(root, 'repository'));
    try {
      assert.equal((await repo.publish(target, object, await sha256File(object))).status, 'published');
    } finally {
      await repo.close();
    }
    const reason = reasonFor(target);
    const build = (...args: string[]) =>
      runCli(['build', target.label, '--verify-load', '--json', ...args], { cwd: root, timeoutMs: 60_000 });

    const allowed = await build('--allow-unverified');
    assert.equal(allowed.code, 0, allowed.stderr);
    const report = parseOne(allowed.stdout);
    assert.deepEqual(
      report.results.map((r) => r.status),
      ['up-to-date'],
    );
    assert.ok(report.verify);
    assert.deepEqual(
      report.verify.results.map((r) => [r.label, r.status, r.message]),
      [[target.label, 'unverified', reason]],
    );
    assert.equal(report.verify.counts.unverified, 1);
    assert.equal(report.verify.counts.failed, 0, 'unverified is not failed');
    assert.equal(report.verify.accelerator, undefined, 'no VM was started');
    assert.match(allowed.stderr, new RegExp(`warning: ${escapeRegExp(target.label)}: the probe was not verified: ${escapeRegExp(reason)}`));

    const strict = await build();
    assert.equal(strict.code, 1, strict.stderr);
    assert.equal(parseOne(strict.stdout).verify!.results[0]!.status, 'unverified');
    assert.match(strict.stderr, new RegExp(`error: ${escapeRegExp(target.label)}: the probe was not verified: ${escapeRegExp(reason)}`));
    assert.match(
      strict.stderr,
      /1 unverified \(no VM here can boot their kernel\).*; 1 probe remains unverified \(--allow-unverified accepts them\)/,
    );

    // verify-load itself says the same; nothing is recorded in the index (no kernel judged the probe).
    const verify = await runCli(['verify-load', '--json'], { cwd: root, timeoutMs: 60_000 });
    assert.equal(verify.code, 1, verify.stderr);
    const verifyReport = JSON.parse(verify.stdout) as VerifyReport;
    assert.equal(verifyReport.results.find((r) => r.label === target.label)!.status, 'unverified');
    assert.equal((await readIndex(join(root, 'repository'))).probes[0]!.load, undefined);
  });
}

test('an aarch64 kernel: its probe is left unverified (no guest), not failed; --allow-unverified passes, without it the run fails naming it', {
  timeout: 120_000,
}, async (t) => {
  if (spawnSync('sh', ['-c', 'command -v clang']).status !== 0)
    return skipOrFail(t, 'clang is not installed (scripts/setup-debian.sh installs it)');
  await unbootable(
    { ...syntheticKernel('6.1.0-1-arm64'), machine: 'aarch64' },
    () => 'no aarch64 guest: qemu-system-aarch64 and an aarch64 busybox/bpftool are needed',
  );
});

test('a kernel whose lockfile entry has no image package (as COS kernels): unverified the same way, the message says what to add', {
  timeout: 120_000,
}, async (t) => {
  if (spawnSync('sh', ['-c', 'command -v clang']).status !== 0)
    return skipOrFail(t, 'clang is not installed (scripts/setup-debian.sh installs it)');
  const kernel = syntheticKernel('6.1.0-2-amd64');
  assert.ok(!kernel.packages.some((p) => p.role === 'image'));
  await unbootable(
    kernel,
    (target) =>
      `no kernel image to boot: kernels/${target.os}.lock.yaml lists no package with role "image" for ${target.kernel.name} (add the image to kernels/${target.os}.yaml and resolve again; COS publishes no image package)`,
  );
});

test('build --verify-load with a real Debian kernel: a shard verifies only its targets, one JSON document, a refused probe fails the run and stays refused for later runs and plan', {
  timeout: TIMEOUT,
}, async (t) => {
  const obtained = await obtainDebianKernelImage(REPOSITORY_NAME);
  if (!obtained.ok) return skipOrFail(t, obtained.skip);
  const missing = ['qemu-system-x86_64', 'bpftool', 'busybox', 'clang'].filter(
    (cmd) => spawnSync('sh', ['-c', `command -v ${cmd} || test -x /usr/sbin/${cmd}`]).status !== 0,
  );
  if (missing.length) return skipOrFail(t, `not installed: ${missing.join(', ')} (scripts/setup-debian.sh installs them)`);
  const image = obtained.image;

  await withTempDir(async (dir) => {
    const mirror = await startDebMirror(dir, [image.kernel]);
    try {
      // The mirror also serves the image package; the lockfile lists it with role image.
      const at = join(dir, 'mirror', image.filename);
      await mkdir(dirname(at), { recursive: true });
      await symlink(image.debPath, at);
      const [descriptor] = descriptors([image.kernel]);
      descriptor!.packages.push(image.ref);
      const root = join(dir, 'project');
      const cache = join(dir, 'cache');
      await writeProject(root, { kernels: [descriptor!], mirrorUrl: mirror.url, extraDrivers: REFUSED_DRIVER });
      await cp(join(PROJECT_ROOT, 'examples', 'refused'), join(root, 'examples', 'refused'), { recursive: true });
      const repositoryDir = join(root, 'repository');

      // Two targets of one kernel; a shard count that puts them in different shards.
      const graph = await loadBuildGraph(root);
      const example = graph.targets.find((x) => x.driver.name === 'example')!;
      const refused = graph.targets.find((x) => x.driver.name === 'refused')!;
      let count = 2;
      while (shardOf(example.key, count) === shardOf(refused.key, count)) count++;
      const shardFor = (key: string) => `${shardOf(key, count)}/${count}`;
      const cli = (args: string[]) => runCli([...args, '--fetch-via', 'http', '--cache', cache], { cwd: root, timeoutMs: TIMEOUT });
      const timings: string[] = [];
      const timed = async (what: string, args: string[]) => {
        const t0 = performance.now();
        const r = await cli(args);
        timings.push(`${what} ${Math.round(performance.now() - t0)} ms`);
        return r;
      };

      // The example's shard: it alone is built, and it alone is booted (the other shard's target is not even "not built").
      const first = await timed('shard of example (build + boot)', [
        'build',
        '--verify-load',
        '--json',
        '-j',
        '2',
        '--shard',
        shardFor(example.key),
      ]);
      assert.equal(first.code, 0, first.stderr);
      const firstReport = parseOne(first.stdout);
      assert.deepEqual(
        firstReport.results.map((r) => [r.label, r.status]),
        [[example.label, 'built']],
      );
      assert.ok(firstReport.verify);
      assert.equal(firstReport.verify.targets, 1);
      assert.deepEqual(
        firstReport.verify.results.map((r) => [r.label, r.status, r.verdict, r.message]),
        [[example.label, 'verified', 'loaded', 'loaded 2 programs']],
      );
      assert.equal(firstReport.verify.results[0]!.guestRelease, image.kernel.release, "the VM ran the target's kernel");
      assert.equal(firstReport.verify.passed, true);
      assert.equal(firstReport.verify.accelerator?.accelerator !== undefined, true);
      const index1 = await readIndex(repositoryDir);
      assert.deepEqual(
        index1.probes.map((p) => [p.file, p.load?.verdict]),
        [[example.output, 'loaded']],
      );

      // The refused probe's shard: built, booted, refused; the run fails with the error naming the target.
      const second = await timed('shard of refused (build + boot)', ['build', '--verify-load', '--json', '--shard', shardFor(refused.key)]);
      assert.equal(second.code, 1, second.stderr);
      const secondReport = parseOne(second.stdout);
      assert.deepEqual(
        secondReport.results.map((r) => [r.label, r.status]),
        [[refused.label, 'built']],
      );
      assert.deepEqual(
        secondReport.verify!.results.map((r) => [r.label, r.verdict]),
        [[refused.label, 'refused']],
      );
      const refusal = new RegExp(
        `error: \\S+\\.verify-load\\.log: ${escapeRegExp(refused.label)}: the probe did not load into its kernel \\(refused\\): prog 'read_past_value': invalid access to map value, value_size=8 off=8 size=8`,
      );
      assert.match(second.stderr, refusal);
      assert.match(second.stderr, /hint: the verifier of this kernel refuses the probe/);
      const refusedEntry = (await readIndex(repositoryDir)).probes.find((p) => p.file === refused.output)!;
      assert.equal(refusedEntry.load?.verdict, 'refused');
      assert.equal(refusedEntry.load?.kernelImageSha256, firstReport.verify.results[0]!.kernelImageSha256);

      // Later runs see the recorded verdict: nothing is built or booted, the refused probe still fails the run.
      const indexBytes = await readFile(join(repositoryDir, 'index.json'));
      const again = await timed('everything again (no build, no boot)', ['build', '--verify-load', '--json']);
      assert.equal(again.code, 1, again.stderr);
      const againReport = parseOne(again.stdout);
      assert.deepEqual(
        againReport.results.map((r) => r.status),
        ['up-to-date', 'up-to-date'],
      );
      assert.deepEqual(
        againReport.verify!.results.map((r) => [r.label, r.status, r.verdict]).sort(),
        [
          [example.label, 'recorded', 'loaded'],
          [refused.label, 'recorded', 'refused'],
        ].sort(),
      );
      assert.equal(againReport.verify!.accelerator, undefined, 'no VM was started');
      assert.match(
        again.stderr,
        new RegExp(
          `error: ${escapeRegExp(refused.label)}: the probe did not load into its kernel \\(refused\\): prog 'read_past_value'.*recorded by an earlier verify-load`,
        ),
      );
      const allowed = await timed('with --allow-unverified', ['build', '--verify-load', '--allow-unverified']);
      assert.equal(allowed.code, 0, allowed.stderr);
      assert.match(
        allowed.stderr,
        new RegExp(`warning: ${escapeRegExp(refused.label)}: the probe did not load into its kernel \\(refused\\)`),
      );
      assert.deepEqual(await readFile(join(repositoryDir, 'index.json')), indexBytes, 'the index is as the verify left it');

      // plan lists no work (both are up to date) and names the probe that does not load.
      const plan = await runCli(['plan', '--shards', '1', '--format', 'json'], { cwd: root, timeoutMs: 60_000 });
      assert.equal(plan.code, 0, plan.stderr);
      assert.equal((JSON.parse(plan.stdout) as { outOfDate: number }).outOfDate, 0);
      assert.match(
        plan.stderr,
        new RegExp(`1 up-to-date probe\\(s\\) did not load into their kernel .*: ${escapeRegExp(refused.label)} \\(refused\\)`),
      );
      t.diagnostic(timings.join('; '));
    } finally {
      await mirror.close();
    }
  });
});
