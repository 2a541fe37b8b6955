import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { createHostBuilder } from '../src/builders/host.js';
import { loadBuildGraph } from '../src/graph/load.js';
import { readIndex } from '../src/repository/index-file.js';
import { LocalRepository } from '../src/repository/local.js';
import { shardOf } from '../src/repository/shard.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { sha256File, sha256Hex } from '../src/util/hash.js';
import { hasPvhEntryNote, elfInterpreter } from '../src/verify/elf-program.js';
import { buildInitramfs, findGuestTools, parseLdd, readProbeObject } from '../src/verify/initramfs.js';
import { createKernelImageCache, type KernelImage } from '../src/verify/kernel-image.js';
import { kvmDeviceUsable } from '../src/verify/qemu.js';
import { HOST_RESERVE_MIB, imagePackageOf, QEMU_OVERHEAD_MIB, vmSlots } from '../src/verify/verifier.js';
import type { Target } from '../src/graph/types.js';
import { loadRecord, verifyLoad, MAX_RECORDED_MESSAGE } from '../src/verify/verify-load.js';
import type { VerifyReport } from '../src/verify/run.js';
import { classify, readConsole } from '../src/verify/verdict.js';
import { descriptors, OS, REPOSITORY_NAME, startDebMirror, writeProject } from './build-e2e-project.js';
import { PROJECT_ROOT, runCli } from './helpers/cli.js';
import { kernel as graphKernel } from './helpers/graph-project.js';
import { sharedKernelRoot } from './helpers/kernel-headers.js';
import { extractVmlinuzWithDpkg, obtainDebianKernelImage, type DebianKernelImage } from './helpers/kernel-image.js';
import { skipOrFail } from './helpers/require.js';

// verify-load with the real thing: qemu-system-x86_64, a real Debian 12
// kernel image (apt-get download), Debian's busybox-static and bpftool, the
// example probe built by the host builder against the matching real headers,
// and examples/refused, which the verifier must refuse. Boots are the cost
// (5 to 30 s each under software emulation): the file boots four kernels.

const execFileAsync = promisify(execFile);
const REFUSED_SOURCE = join(PROJECT_ROOT, 'examples', 'refused', 'probe.c');

function qemuLeft(marker: string): string {
  // pgrep exits 1 when nothing matches.
  const r = spawnSync('pgrep', ['-a', '-f', `qemu-system.*${marker}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout : '';
}

async function compileRefused(out: string): Promise<string> {
  await mkdir(dirname(out), { recursive: true });
  await execFileAsync('clang', ['-O2', '-g', '-target', 'bpf', '-Wall', '-Werror', '-c', REFUSED_SOURCE, '-o', out], { timeout: 60_000 });
  return out;
}

describe('verify-load', { timeout: 900_000 }, () => {
  let skip: string | undefined;
  let image: DebianKernelImage;
  let scratch: string;
  let prepared: KernelImage;

  before(async () => {
    const r = await obtainDebianKernelImage(REPOSITORY_NAME);
    if (!r.ok) {
      skip = r.skip;
      return;
    }
    image = r.image;
    const missing = ['qemu-system-x86_64', 'bpftool', 'busybox', 'clang'].filter(
      (cmd) => spawnSync('sh', ['-c', `command -v ${cmd} || test -x /usr/sbin/${cmd}`]).status !== 0,
    );
    if (missing.length) {
      skip = `not installed: ${missing.join(', ')} (scripts/setup-debian.sh installs them)`;
      return;
    }
    scratch = await mkdtemp(join(tmpdir(), 'falco-probes-verify-'));
  });

  after(async () => {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  test('the initramfs: reproducible newc cpio that GNU cpio reads back, with static busybox, bpftool with its libraries and loader, and /dev/console', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const tools = await findGuestTools();
    assert.equal(elfInterpreter(tools.busybox.data), undefined, 'busybox is static');
    const probe = await readProbeObject(await compileRefused(join(scratch, 'refused', 'probe.o')));
    assert.equal(probe.legacyMaps, false);
    const a = buildInitramfs(tools, probe);
    const b = buildInitramfs(tools, probe);
    assert.equal(sha256Hex(a), sha256Hex(b), 'same inputs, same bytes');

    const cpioFile = join(scratch, 'initramfs.cpio');
    await writeFile(cpioFile, gunzipSync(a));
    const listing = spawnSync('cpio', ['-itv', '--quiet', '-F', cpioFile], { encoding: 'utf8' });
    assert.equal(listing.status, 0, listing.stderr);
    assert.match(listing.stdout, /^crw------- .* 5, +1 .* dev\/console$/m);
    const tree = join(scratch, 'tree');
    await mkdir(tree);
    const extracted = spawnSync('cpio', ['-idm', '--quiet', '--no-absolute-filenames', '-F', cpioFile], { cwd: tree, encoding: 'utf8' });
    assert.equal(extracted.status, 0, extracted.stderr);
    assert.equal((await sha256File(join(tree, 'bin/busybox'))).sha256, sha256Hex(tools.busybox.data));
    assert.equal((await sha256File(join(tree, 'bin/bpftool'))).sha256, sha256Hex(tools.bpftool.data));
    assert.equal((await sha256File(join(tree, 'probe.o'))).sha256, sha256Hex(probe.data));
    // Every library the host's loader resolves for bpftool, and the loader itself, at the same path in the guest.
    const ldd = await execFileAsync('ldd', [tools.bpftool.hostPath]);
    const needed = parseLdd(ldd.stdout, tools.bpftool.hostPath);
    assert.ok(
      needed.some((p) => /libbpf|libelf/.test(p)),
      `bpftool's libraries: ${needed.join(' ')}`,
    );
    assert.ok(needed.includes(elfInterpreter(tools.bpftool.data)!), 'the loader is listed');
    for (const p of needed) assert.equal((await sha256File(join(tree, p))).sha256, (await sha256File(p)).sha256, p);
    const init = await readFile(join(tree, 'init'), 'utf8');
    assert.ok(((await stat(join(tree, 'init'))).mode & 0o111) !== 0, '/init is executable');
    assert.match(init, /^#!\/bin\/busybox sh\n/);
    assert.match(init, /\/bin\/bpftool prog loadall \/probe\.o \/sys\/fs\/bpf\/p/);
    assert.match(init, /mount -t bpf bpf \/sys\/fs\/bpf/);
    assert.match(init, /poweroff -f/);

    // A legacy `maps` section (Falco's legacy probe) makes bpftool run with --legacy.
    const legacySource = join(scratch, 'legacy.c');
    await writeFile(
      legacySource,
      'struct bpf_map_def { unsigned int type, key_size, value_size, max_entries, map_flags; };\n' +
        'struct bpf_map_def __attribute__((section("maps"), used)) counts = { 2, 4, 8, 1, 0 };\n' +
        'int __attribute__((section("raw_tracepoint/sys_enter"), used)) prog(void *ctx) { return 0; }\n' +
        'char __attribute__((section("license"), used)) license_text[] = "GPL";\n',
    );
    await execFileAsync('clang', ['-O2', '-target', 'bpf', '-c', legacySource, '-o', join(scratch, 'legacy.o')]);
    const legacy = await readProbeObject(join(scratch, 'legacy.o'));
    assert.equal(legacy.legacyMaps, true);
    const legacyTree = gunzipSync(buildInitramfs(tools, legacy)).toString('latin1');
    assert.match(legacyTree, /\/bin\/bpftool --legacy prog loadall/);

    // Not a BPF object: refused before any VM starts, naming the file.
    await assert.rejects(readProbeObject(tools.busybox.hostPath), (err: unknown) => {
      assert.ok(err instanceof FalcoProbesError);
      assert.equal(err.location.file, tools.busybox.hostPath);
      assert.match(err.message, /not a BPF object/);
      return true;
    });
  });

  test('the kernel image: only the bzImage is read from the package (the bytes dpkg extracts), its uncompressed form has a PVH entry, unpacked once', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const cache = createKernelImageCache(join(scratch, 'kernel-images'));
    const t0 = performance.now();
    prepared = await cache.prepare(image.ref, image.debPath);
    const firstMs = performance.now() - t0;
    const byDpkg = await extractVmlinuzWithDpkg(image, join(scratch, 'dpkg'));
    assert.equal(prepared.sha256, (await sha256File(byDpkg)).sha256);
    assert.equal((await sha256File(prepared.vmlinuz)).sha256, prepared.sha256);
    assert.equal(prepared.release, image.kernel.release);
    assert.ok(prepared.vmlinux, 'an uncompressed kernel was made');
    const vmlinux = await readFile(prepared.vmlinux);
    assert.equal(vmlinux.subarray(0, 4).toString('latin1'), '\x7fELF');
    assert.ok(hasPvhEntryNote(vmlinux));
    t.diagnostic(
      `image unpacked in ${Math.round(firstMs)} ms (bzImage ${(await stat(prepared.vmlinuz)).size} bytes, vmlinux ${vmlinux.length} bytes)`,
    );

    // Again: the cache answers, nothing is rewritten.
    const mtime = (await stat(prepared.vmlinux)).mtimeMs;
    const again = await cache.prepare(image.ref, image.debPath);
    assert.deepEqual(again, prepared);
    assert.equal((await stat(prepared.vmlinux)).mtimeMs, mtime);

    // A package without a kernel image is refused with the package named.
    const headers = image.kernel.packages.find((p) => p.role === 'headers')!;
    await assert.rejects(
      cache.prepare(
        { ...image.ref, name: headers.name, path: headers.filename, sha256: headers.sha256, size: headers.size },
        headers.debPath,
      ),
      (err: unknown) => {
        assert.ok(err instanceof FalcoProbesError);
        assert.equal(err.location.file, headers.debPath);
        assert.match(err.message, /holds no kernel image/);
        return true;
      },
    );
  });

  test('a kernel that does not boot: a truncated image, and a boot cut off by the timeout, give no-boot in time and leave no qemu', async (t) => {
    if (skip) return skipOrFail(t, skip);
    assert.ok(prepared, 'the kernel image test ran first');
    const probe = await compileRefused(join(scratch, 'nb', 'probe.o'));

    const truncated = join(scratch, 'nb', 'vmlinuz-truncated');
    const bz = await readFile(prepared.vmlinuz);
    await writeFile(truncated, bz.subarray(0, Math.floor(bz.length / 3)));
    const work1 = join(scratch, 'nb', 'work-truncated');
    const t0 = performance.now();
    const v1 = await verifyLoad({ probeFile: probe, kernelImage: truncated, workDir: work1, timeoutMs: 60_000, accelerator: 'tcg' });
    const ms1 = performance.now() - t0;
    assert.equal(v1.verdict, 'no-boot', v1.message);
    assert.match(v1.message, /^the kernel did not boot: /);
    assert.equal(v1.kernelImageSha256, (await sha256File(truncated)).sha256);
    assert.ok(ms1 < 60_000, `took ${ms1} ms`);
    assert.equal(qemuLeft(work1), '');
    t.diagnostic(`truncated image: ${v1.message} (${Math.round(ms1)} ms)`);

    // A good kernel given too little time: killed at the timeout, before /init.
    const work2 = join(scratch, 'nb', 'work-timeout');
    const timeoutMs = 1_500;
    const t1 = performance.now();
    const v2 = await verifyLoad({
      probeFile: probe,
      kernelImage: prepared,
      workDir: work2,
      timeoutMs,
      accelerator: 'tcg',
      consoleLog: join(work2, 'console.log'),
    });
    const ms2 = performance.now() - t1;
    assert.equal(v2.verdict, 'no-boot', v2.message);
    assert.match(v2.message, /no output from \/init within 2 s/);
    assert.equal(v2.kernelImageSha256, prepared.sha256, 'the verdict names the bzImage even when vmlinux was booted');
    assert.ok(ms2 < timeoutMs + 10_000, `took ${ms2} ms`);
    assert.equal(qemuLeft(work2), '');
    assert.match(await readFile(join(work2, 'console.log'), 'utf8'), /-kernel \S+vmlinux .*-accel tcg|-accel tcg .*-kernel \S+vmlinux/);
    // The record for the index: the message, then the console's end, within the schema's limit.
    const record = loadRecord(v2);
    assert.equal(record.verdict, 'no-boot');
    assert.ok(record.message!.length <= MAX_RECORDED_MESSAGE);
  });

  test("verify-load end to end: the example probe built for the real headers loads, examples/refused is refused with the verifier's reason, verdicts land in the index", async (t) => {
    if (skip) return skipOrFail(t, skip);
    const kernel = image.kernel;
    const root = join(scratch, 'project');
    const cache = join(scratch, 'cache');
    const repositoryDir = join(root, 'repository');
    const mirror = await startDebMirror(scratch, [kernel]);
    try {
      // The mirror also serves the image package; the lockfile lists it with role image.
      const at = join(scratch, 'mirror', image.filename);
      await mkdir(dirname(at), { recursive: true });
      await symlink(image.debPath, at);
      const [descriptor] = descriptors([kernel]);
      descriptor!.packages.push(image.ref);
      const builder = createHostBuilder();
      const pin = await builder.pin();
      await writeProject(root, {
        kernels: [descriptor!],
        mirrorUrl: mirror.url,
        // verify-load reads the keys from the graph and never compiles: the pin only has to be a valid one.
        builderClang: /\d+\.\d+\.\d+/.exec(pin.kind === 'host' ? pin.clang : '')?.[0] ?? '14.0.6',
        extraDrivers: `  - name: refused
    version: 0.1.0
    source:
      path: examples/refused
    recipe: kbuild
    bpfDir: .
    object: probe.o
    kinds: [bpf]
`,
      });
      await cp(join(PROJECT_ROOT, 'examples', 'refused'), join(root, 'examples', 'refused'), { recursive: true });
      const fetchArgs = ['--fetch-via', 'http', '--cache', cache];
      const verify = (...args: string[]) => runCli(['verify-load', ...fetchArgs, '--json', ...args], { cwd: root, timeoutMs: 600_000 });

      // Nothing built yet: nothing to boot, nothing fails.
      const early = await verify();
      assert.equal(early.code, 0, early.stderr);
      const earlyReport = JSON.parse(early.stdout) as VerifyReport;
      assert.deepEqual(
        earlyReport.results.map((r) => r.status),
        ['not-built', 'not-built'],
      );

      // Both probes built for the kernel's own headers by the host builder (kbuild), published as build publishes.
      const graph = await loadBuildGraph(root);
      assert.equal(graph.targets.length, 2);
      const kernelRoot = await sharedKernelRoot(kernel);
      const repo = await LocalRepository.openForWrite(repositoryDir);
      try {
        for (const target of graph.targets) {
          const workDir = join(scratch, 'build', target.driver.name);
          await mkdir(workDir, { recursive: true });
          const outFile = join(scratch, 'built', target.probeFile.replace(/\.o$/, `-${target.driver.name}.o`));
          const source = target.driver.source as { path: string };
          const built = await builder.build({
            target: { ...target, builder: pin },
            kernelRoot,
            driverDir: join(root, source.path),
            workDir,
            outFile,
            logFile: join(scratch, `${target.driver.name}.log`),
          });
          assert.equal((await repo.publish(target, outFile, built)).status, 'published');
        }
      } finally {
        await repo.close();
      }
      const index0 = await readIndex(repositoryDir);
      assert.equal(index0.probes.length, 2);
      assert.ok(index0.probes.every((p) => p.load === undefined));

      const t0 = performance.now();
      const run = await verify('-j', '2', '--timeout', '300');
      const ms = performance.now() - t0;
      assert.equal(run.code, 1, `a refused probe fails the run\n${run.stderr}`);
      const report = JSON.parse(run.stdout) as VerifyReport;
      t.diagnostic(
        `verify-load of 2 probes at -j 2: ${Math.round(ms)} ms; ${report.accelerator?.accelerator} (${report.accelerator?.reason})`,
      );
      const example = report.results.find((r) => r.file.startsWith('1.0.0/'))!;
      const refused = report.results.find((r) => r.file.startsWith('0.1.0/'))!;
      assert.equal(example.status, 'verified');
      assert.equal(example.verdict, 'loaded', example.message);
      assert.equal(example.message, 'loaded 2 programs');
      assert.equal(example.guestRelease, kernel.release, "the VM ran the target's kernel");
      assert.equal(refused.verdict, 'refused', refused.message);
      assert.match(refused.message!, /prog 'read_past_value': invalid access to map value, value_size=8 off=8 size=8/);
      // The refusal is reported as the target's failure (unverifiedProbeError), at the console log it came from.
      assert.match(
        run.stderr,
        new RegExp(
          `error: \\S+\\.verify-load\\.log: ${refused.label.replace(/[.+]/g, '\\$&')}: the probe did not load into its kernel \\(refused\\): prog 'read_past_value'`,
        ),
      );
      // The accelerator is said, and agrees with this host's /dev/kvm.
      const kvm = await kvmDeviceUsable();
      assert.ok(report.accelerator);
      if (!kvm.ok) assert.deepEqual([report.accelerator.accelerator, report.accelerator.reason], ['tcg', kvm.reason]);
      assert.equal(qemuLeft(root), '');

      // The index records both verdicts against the kernel image's sha256.
      const bzSha = (await sha256File(await extractVmlinuzWithDpkg(image, join(scratch, 'dpkg-e2e')))).sha256;
      const index1 = await readIndex(repositoryDir);
      const byFile = new Map(index1.probes.map((p) => [p.file, p]));
      assert.deepEqual(byFile.get(example.file)!.load, { verdict: 'loaded', kernelImageSha256: bzSha, message: 'loaded 2 programs' });
      const refusedLoad = byFile.get(refused.file)!.load!;
      assert.equal(refusedLoad.verdict, 'refused');
      assert.equal(refusedLoad.kernelImageSha256, bzSha);
      assert.match(refusedLoad.message!, /invalid access to map value[\s\S]*--- log ---[\s\S]*processed \d+ insns/);
      // Everything else in the entries is as build left it.
      for (const p of index0.probes) assert.deepEqual({ ...byFile.get(p.file)!, load: undefined }, { ...p, load: undefined });
      const consoleLog = await readFile(join(root, '.falco-probes', 'logs', OS, `${example.label.split(':')[1]}.verify-load.log`), 'utf8');
      assert.match(consoleLog, /^FALCO-PROBES-VERDICT \{"bpftool_exit":0,"programs":2,"bpffs":1\}$/m);
      // The same console cut off after /init started, as a load that hangs would leave it: timeout, not no-boot.
      const upToInit = consoleLog.slice(0, consoleLog.indexOf('\n', consoleLog.indexOf('FALCO-PROBES-INIT')) + 1);
      const hung = classify(
        {
          argv: [],
          console: upToInit,
          stderr: '',
          code: null,
          signal: 'SIGKILL',
          timedOut: true,
          aborted: false,
          killedAfterFinish: false,
          ms: 300_000,
        },
        readConsole(upToInit),
        300_000,
      );
      assert.equal(hung.verdict, 'timeout');
      assert.match(hung.message, /booted but loading the probe did not finish within 300 s/);

      // Again: the verdicts are known, no VM boots; --allow-unverified lets the refused probe pass.
      const indexBytes = await readFile(join(root, 'repository', 'index.json'));
      const again = await verify('--allow-unverified');
      assert.equal(again.code, 0, again.stderr);
      const againReport = JSON.parse(again.stdout) as VerifyReport;
      assert.deepEqual(
        againReport.results.map((r) => [r.status, r.verdict]),
        report.results.map((r) => ['recorded', r.verdict]),
      );
      assert.equal(againReport.accelerator, undefined, 'no VM was started');
      assert.deepEqual(await readFile(join(root, 'repository', 'index.json')), indexBytes);
      const onlyExample = await verify(example.label);
      assert.equal(onlyExample.code, 0, onlyExample.stderr);
      // --shard i/N: only the shard's targets, split as plan and build --shard split them.
      const byLabelKey = new Map(graph.targets.map((x) => [x.label, x.key]));
      const exampleKey = byLabelKey.get(example.label)!;
      const refusedKey = byLabelKey.get(refused.label)!;
      let shards = 2;
      while (shardOf(exampleKey, shards) === shardOf(refusedKey, shards)) shards++;
      const sharded = await verify('--shard', `${shardOf(exampleKey, shards)}/${shards}`);
      assert.equal(sharded.code, 0, sharded.stderr);
      assert.deepEqual(
        (JSON.parse(sharded.stdout) as VerifyReport).results.map((r) => [r.label, r.status, r.verdict]),
        [[example.label, 'recorded', 'loaded']],
      );
      const refusedShard = await verify('--shard', `${shardOf(refusedKey, shards)}/${shards}`);
      assert.equal(refusedShard.code, 1, 'the recorded refusal still fails the run');
      assert.match(refusedShard.stderr, /recorded by an earlier verify-load of this build; --force boots it again/);
    } finally {
      await mirror.close();
    }
  });
});

test('VMs at once: bounded by jobs and by available memory', () => {
  const perVm = 512 + QEMU_OVERHEAD_MIB;
  assert.equal(vmSlots(8, 512, HOST_RESERVE_MIB + 3 * perVm + perVm - 1), 3);
  assert.equal(vmSlots(2, 512, HOST_RESERVE_MIB + 10 * perVm), 2);
  assert.throws(
    () => vmSlots(4, 512, HOST_RESERVE_MIB + perVm - 1),
    (err: unknown) => err instanceof FalcoProbesError && /not enough free memory for one VM of 512 MiB/.test(err.message),
  );
});

test('bad input: options are checked before anything runs; a kernel without an image package is named with what to fix', async () => {
  const cwd = await mkdtemp(join(tmpdir(), 'falco-probes-verify-usage-'));
  try {
    for (const [args, pattern] of [
      [['--accel', 'fast'], /--accel expects kvm, tcg or auto, got "fast"/],
      [['--memory', '0'], /--memory expects a positive whole number/],
      [['--timeout', 'soon'], /--timeout expects a positive whole number/],
      [['--shard', '3/2'], /--shard 3\/2: the shard number must be between 1 and 2/],
    ] as const) {
      const r = await runCli(['verify-load', ...args], { cwd, timeoutMs: 60_000 });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, pattern);
    }
  } finally {
    await rm(cwd, { recursive: true, force: true });
  }
  const target = { label: '//probes/debian12:6.1.0-1-amd64', os: 'debian12', kernel: graphKernel('6.1.0-1-amd64') } as unknown as Target;
  assert.throws(
    () => imagePackageOf(target),
    (err: unknown) => {
      assert.ok(err instanceof FalcoProbesError);
      assert.equal(err.kind, 'config');
      assert.equal(err.location.file, 'kernels/debian12.lock.yaml');
      assert.match(err.message, /names no bootable image \(a package with role "image"\)/);
      assert.match(err.hint ?? '', /kernels\/debian12\.yaml .*falco-probes resolve debian12/);
      return true;
    },
  );
});
