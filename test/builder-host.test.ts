import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { appendFile, cp, lstat, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { checkBpfObject, EM_BPF, ET_REL, readElf, sectionContents } from '../src/builders/elf.js';
import { createHostBuilder } from '../src/builders/host.js';
import type { Builder } from '../src/builders/types.js';
import type { BuilderPin } from '../src/graph/types.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { sha256File } from '../src/util/hash.js';
import { PROJECT_ROOT } from './helpers/cli.js';
import {
  debianTarget,
  exampleDriver,
  extractKernelRoot,
  obtainDebianKernels,
  sharedKernelRoot,
  type DebianKernel,
} from './helpers/kernel-headers.js';
import { skipOrFail } from './helpers/require.js';

// The host builder against real Debian 12 kernel headers (6.1 and 6.12, chosen
// from apt's index), with the real clang, llc, make and kbuild.

const execFileAsync = promisify(execFile);
const EXAMPLE = join(PROJECT_ROOT, 'examples', 'probe');

let skip: string | undefined;
let kernels: DebianKernel[] = [];
let scratch: string;
const roots = new Map<string, string>();
let builder: Builder;
let pin: BuilderPin;
const built = new Map<string, { sha256: string; size: number; ms: number; outFile: string }>();
let refusedOutFile: string | undefined;

before(async () => {
  const r = await obtainDebianKernels();
  if (!r.ok) {
    skip = r.skip;
    return;
  }
  kernels = r.kernels;
  scratch = await mkdtemp(join(tmpdir(), 'falco-probes-host-'));
  for (const k of kernels) roots.set(k.release, await sharedKernelRoot(k));
  builder = createHostBuilder();
  pin = await builder.pin();
});

after(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

let counter = 0;
async function freshDirs(): Promise<{ workDir: string; outFile: string; logFile: string }> {
  const dir = join(scratch, `build-${++counter}`);
  await mkdir(join(dir, 'work'), { recursive: true });
  return { workDir: join(dir, 'work'), outFile: join(dir, 'out', 'probe.o'), logFile: join(dir, 'build.log') };
}

/** Every entry of a tree with its type, mode, size, mtime and link target (find(1): one process, fast). */
async function snapshotTree(root: string): Promise<string> {
  const { stdout } = await execFileAsync('find', [root, '-printf', '%y %m %s %T@ %l %P\\n'], { maxBuffer: 64 * 1024 * 1024 });
  return stdout.split('\n').sort().join('\n');
}

/** Whether a process still runs (a zombie that nobody reaped yet counts as gone). */
async function isRunning(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch {
    return false;
  }
}

/** Whether a process is gone within a second or so (SIGKILL is delivered asynchronously). */
async function isGoneSoon(pid: number): Promise<boolean> {
  for (let i = 0; i < 20; i++) {
    if (!(await isRunning(pid))) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

async function readelfSections(file: string): Promise<string[]> {
  const { stdout } = await execFileAsync('readelf', ['-S', '-W', file], { env: { ...process.env, LC_ALL: 'C' } });
  const names: string[] = [];
  for (const line of stdout.split('\n')) {
    const m = /^\s*\[\s*(\d+)\]\s+(\S+)\s+[A-Z_]+\s/.exec(line);
    if (m && m[1] !== '0') names.push(m[2] as string);
  }
  return names;
}

describe('host builder: pin', () => {
  test('names the host clang by the first line of clang --version', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const { stdout } = await execFileAsync('clang', ['--version']);
    assert.equal(pin.kind, 'host');
    assert.equal(pin.clang, (stdout.split('\n')[0] as string).trim().replace(/\s+/g, ' '));
    assert.match(pin.clang, /clang version \d+\.\d+\.\d+/);
  });
});

describe('host builder: the example probe on real Debian kernels', () => {
  test('builds an ELF BPF object with the expected sections for 6.1 and 6.12, leaving the kernel root untouched', async (t) => {
    if (skip) return skipOrFail(t, skip);
    for (const kernel of kernels) {
      const root = roots.get(kernel.release) as string;
      const before = await snapshotTree(root);
      const dirs = await freshDirs();
      const started = performance.now();
      const result = await builder.build({ target: debianTarget(kernel, pin), kernelRoot: root, driverDir: EXAMPLE, ...dirs });
      const ms = performance.now() - started;
      built.set(kernel.release, { ...result, ms, outFile: dirs.outFile });
      t.diagnostic(`${kernel.release}: ${result.size} bytes, sha256 ${result.sha256}, ${(ms / 1000).toFixed(1)} s`);

      const bytes = await readFile(dirs.outFile);
      assert.deepEqual(await sha256File(dirs.outFile), { sha256: result.sha256, size: result.size });
      const elf = readElf(bytes, dirs.outFile);
      assert.equal(elf.type, ET_REL);
      assert.equal(elf.machine, EM_BPF);
      for (const section of [
        'raw_tracepoint/sys_enter',
        'raw_tracepoint/sched_process_exit',
        '.relraw_tracepoint/sys_enter', // the map relocation a loader needs
        '.maps',
        'license',
        'kernel_version',
        'probe_version',
        '.BTF',
        '.BTF.ext',
        '.symtab',
      ])
        assert.ok(elf.sections.includes(section), `${kernel.release}: section ${section} missing from ${elf.sections.join(' ')}`);
      assert.deepEqual(elf.sections, await readelfSections(dirs.outFile), 'the ELF reader agrees with readelf');
      assert.equal(sectionContents(bytes, elf, 'kernel_version')?.toString('latin1'), `${kernel.release}\0`);
      assert.equal(sectionContents(bytes, elf, 'license')?.toString('latin1'), 'GPL\0');
      assert.equal(sectionContents(bytes, elf, 'probe_version')?.toString('latin1'), '1.0.0\0');

      // Reproducible by construction: no path of this build is in the object.
      const text = bytes.toString('latin1');
      for (const path of [scratch, root, dirs.workDir]) assert.ok(!text.includes(path), `the object records ${path}`);
      assert.ok(
        text.includes('/dev/null/falco-probes/driver/probe.c') || text.includes('falco-probes/driver/probe.c'),
        'debug info names the stable driver path',
      );
      assert.doesNotMatch(
        text,
        /(?<!\/dev\/null\/falco-probes)\/usr\/src\/linux-headers-/,
        'no kernel path is recorded where a machine could hold a file',
      );

      const log = await readFile(dirs.logFile, 'utf8');
      assert.match(log, /make -C \S+ M=\S+ -j1 CLANG=clang LLC=llc KBUILD_EXTRA_CPPFLAGS=-ffile-prefix-map=/);
      assert.match(log, /llc -march=bpf -filetype=obj/);
      assert.deepEqual(await snapshotTree(root), before, 'the build changed the extracted kernel tree');
    }
  });

  test('the same build in other directories, from another extraction, gives the same bytes', async (t) => {
    if (skip) return skipOrFail(t, skip);
    for (const kernel of kernels) {
      const first = built.get(kernel.release);
      assert.ok(first, 'the first build test ran');
      // Another kernel root (a fresh dpkg-deb extraction at a path of another length) and another driver path.
      const otherRoot = await extractKernelRoot(kernel, join(scratch, `another-kernel-root-${kernel.series}-x`));
      const otherDriver = join(scratch, `example-copy-${kernel.series}`);
      await cp(EXAMPLE, otherDriver, { recursive: true });
      const dirs = await freshDirs();
      const again = await builder.build({ target: debianTarget(kernel, pin), kernelRoot: otherRoot, driverDir: otherDriver, ...dirs });
      assert.equal(again.sha256, first.sha256, `${kernel.release}: the probe's bytes depend on where it was built`);
      assert.equal(again.size, first.size);
      t.diagnostic(`${kernel.release}: rebuilt elsewhere, same sha256 ${again.sha256}`);
    }
    const [a, b] = [...built.values()];
    assert.notEqual(a?.sha256, b?.sha256, 'probes for different kernels differ (kernel_version at least)');
  });

  test('the deliberately refused variant (bpfDir refused) compiles too', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const kernel = kernels[0] as DebianKernel;
    const dirs = await freshDirs();
    const target = debianTarget(kernel, pin, exampleDriver({ name: 'example-refused', bpfDir: 'refused' }));
    const result = await builder.build({ target, kernelRoot: roots.get(kernel.release) as string, driverDir: EXAMPLE, ...dirs });
    const elf = checkBpfObject(await readFile(dirs.outFile), dirs.outFile);
    assert.ok(elf.sections.includes('raw_tracepoint/sys_enter'));
    assert.notEqual(result.sha256, built.get(kernel.release)?.sha256);
    refusedOutFile = dirs.outFile;
  });

  // Not a verify-load of the target kernel (that boots it in qemu): the running
  // kernel's verifier, which shows that the example is a real, loadable program
  // and that the refused variant is refused.
  test("the running kernel's verifier loads the example probe and refuses the refused variant (bpftool)", async (t) => {
    if (skip) return skipOrFail(t, skip);
    if (process.getuid?.() !== 0) return skipOrFail(t, 'loading BPF programs needs root');
    const bpftool = await execFileAsync('bpftool', ['version']).then(
      () => 'bpftool',
      () => undefined,
    );
    if (!bpftool) return skipOrFail(t, 'bpftool is not installed (scripts/setup-debian.sh installs it)');
    const fs = join(scratch, 'bpffs');
    await mkdir(fs);
    try {
      await execFileAsync('mount', ['-t', 'bpf', 'bpf', fs]);
    } catch (err) {
      // What the running kernel or its sandbox allows, not a tool setup could install: a skip everywhere.
      return t.skip(`cannot mount a bpf file system here: ${(err as Error).message.split('\n')[0]}`);
    }
    try {
      for (const { outFile } of built.values()) {
        const pins = await mkdtemp(join(fs, 'ok-'));
        await execFileAsync('bpftool', ['prog', 'loadall', outFile, pins], { timeout: 60_000 });
        assert.deepEqual((await readdir(pins)).sort(), ['count_sys_enter', 'forget_exited_process']);
        await rm(pins, { recursive: true });
      }
      assert.ok(refusedOutFile, 'the refused variant was built');
      const pins = await mkdtemp(join(fs, 'refused-'));
      const refused = await execFileAsync('bpftool', ['prog', 'loadall', refusedOutFile, pins], { timeout: 60_000 }).then(
        () => undefined,
        (e: { stderr?: string }) => e.stderr ?? '',
      );
      assert.ok(refused !== undefined, 'the verifier accepted the refused variant');
      assert.match(refused, /invalid mem access 'map_value_or_null'/);
    } finally {
      await execFileAsync('umount', [fs]).catch(() => undefined);
    }
  });
});

describe('host builder: failures', () => {
  test('a broken driver source fails with a build error carrying the log tail, and writes no probe', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const kernel = kernels[0] as DebianKernel;
    const broken = join(scratch, 'broken-probe');
    await cp(EXAMPLE, broken, { recursive: true });
    await appendFile(join(broken, 'probe.c'), '\nint deliberately_broken(void) { return undefined_symbol_here; }\n');
    const dirs = await freshDirs();
    const err = await builder
      .build({ target: debianTarget(kernel, pin), kernelRoot: roots.get(kernel.release) as string, driverDir: broken, ...dirs })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    assert.ok(err instanceof FalcoProbesError, `expected a FalcoProbesError, got ${String(err)}`);
    assert.equal(err.kind, 'build');
    assert.match(err.message, /failed \(make exited with \d+\)/);
    assert.equal(err.location.file, dirs.logFile);
    assert.match(err.details ?? '', /undefined_symbol_here/);
    assert.match(err.details ?? '', /error:/);
    assert.ok((err.details ?? '').split('\n').length <= 30);
    await assert.rejects(lstat(dirs.outFile), { code: 'ENOENT' });
  });

  /** A kbuild directory whose only rule records its shell's pid and sleeps: a build that never ends. */
  async function hangingDriver(name: string): Promise<string> {
    const dir = join(scratch, name);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'Makefile'), 'always-y += probe.o\n\n$(obj)/probe.o:\n\techo $$$$ > $(obj)/sleeper.pid; exec sleep 120\n');
    return dir;
  }

  test('a timeout stops make and everything it started, and fails the build', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const kernel = kernels[0] as DebianKernel;
    const driverDir = await hangingDriver('hanging-timeout');
    const dirs = await freshDirs();
    const started = performance.now();
    const err = await builder
      .build({ target: debianTarget(kernel, pin), kernelRoot: roots.get(kernel.release) as string, driverDir, ...dirs, timeoutMs: 6_000 })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    const elapsed = performance.now() - started;
    assert.ok(err instanceof FalcoProbesError);
    assert.equal(err.kind, 'build');
    assert.match(err.message, /timed out after 6 s/);
    assert.ok(elapsed < 20_000, `the build took ${elapsed} ms to stop`);
    const pidFile = join(dirs.workDir, 'driver', 'sleeper.pid');
    const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
    if (pid > 0) assert.ok(await isGoneSoon(pid), `the rule's process ${pid} outlived the timeout`);
    else t.diagnostic('kbuild had not reached the rule when the timeout fired');
    await assert.rejects(lstat(dirs.outFile), { code: 'ENOENT' });
  });

  test('an abort signal stops a running build at once', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const kernel = kernels[0] as DebianKernel;
    const driverDir = await hangingDriver('hanging-abort');
    const dirs = await freshDirs();
    const controller = new AbortController();
    const pidFile = join(dirs.workDir, 'driver', 'sleeper.pid');
    const building = builder
      .build({
        target: debianTarget(kernel, pin),
        kernelRoot: roots.get(kernel.release) as string,
        driverDir,
        ...dirs,
        signal: controller.signal,
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    let pid = 0;
    for (let i = 0; i < 300 && pid === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
    }
    assert.ok(pid > 0, 'the hanging rule started');
    assert.ok(await isRunning(pid));
    controller.abort(new Error('test cancel'));
    const err = await building;
    assert.ok(err instanceof FalcoProbesError);
    assert.equal(err.kind, 'build');
    assert.match(err.message, /cancelled/);
    assert.ok(await isGoneSoon(pid), `the rule's process ${pid} outlived the cancel`);
  });

  test('a target keyed for another toolchain or architecture is refused before anything runs', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const kernel = kernels[0] as DebianKernel;
    const dirs = await freshDirs();
    const request = { kernelRoot: roots.get(kernel.release) as string, driverDir: EXAMPLE, ...dirs };
    await assert.rejects(
      builder.build({ ...request, target: debianTarget(kernel, { kind: 'host', clang: 'Debian clang version 1.0.0' }) }),
      (e: unknown) => {
        assert.ok(e instanceof FalcoProbesError);
        assert.equal(e.kind, 'build');
        assert.match(e.message, /keyed for builder/);
        return true;
      },
    );
    await assert.rejects(builder.build({ ...request, target: { ...debianTarget(kernel, pin), arch: 'aarch64' } }), /is for aarch64/);
    assert.deepEqual(await readdir(dirs.workDir), []);
  });
});
