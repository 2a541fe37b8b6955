import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { checkKernelModule, moduleInfo, readElf } from '../src/builders/elf.js';
import { createHostBuilder } from '../src/builders/host.js';
import { readKernelCompiler } from '../src/builders/kernel-compiler.js';
import type { Builder } from '../src/builders/types.js';
import type { BuilderPin, ResolvedDriver, Target } from '../src/graph/types.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { sha256Hex } from '../src/util/hash.js';
import { PROJECT_ROOT } from './helpers/cli.js';
import { debianTarget, obtainDebianKernels, sharedKernelRoot, type DebianKernel } from './helpers/kernel-headers.js';
import { FALCO_LIBS, haveFalcoLibs, skipOrFail } from './helpers/require.js';

// Kernel modules (kind kmod) through the host builder, with the real gcc,
// make and kbuild against real Debian 12 headers (6.1 and 6.12): the
// example module for both kernels, the compiler rule (a kernel built by
// another gcc is refused with that compiler named, before make runs), and
// Falco's own drivers through the falco-libs recipe when ../shared/falco-libs
// holds their sources.

const execFileAsync = promisify(execFile);

let skip: string | undefined;
let kernels: DebianKernel[] = [];
let scratch: string;
const roots = new Map<string, string>();
let builder: Builder;
let pin: BuilderPin;

before(async () => {
  const r = await obtainDebianKernels();
  if (!r.ok) {
    skip = r.skip;
    return;
  }
  kernels = r.kernels;
  scratch = await mkdtemp(join(tmpdir(), 'falco-probes-kmod-'));
  for (const k of kernels) roots.set(k.release, await sharedKernelRoot(k));
  builder = createHostBuilder();
  pin = await builder.pin();
  if (pin.gcc === undefined) skip = 'gcc is not installed (scripts/setup-debian.sh installs it)';
});

after(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

function moduleDriver(overrides: Partial<ResolvedDriver> = {}): ResolvedDriver {
  return {
    name: 'example',
    version: '1.0.0',
    source: { path: 'examples/module' },
    recipe: 'kbuild',
    kmodDir: '.',
    module: 'example.ko',
    kinds: ['kmod'],
    sourceSha256: sha256Hex('example module'),
    ...overrides,
  };
}

function kmodTarget(kernel: DebianKernel, driver: ResolvedDriver, builderPin: BuilderPin = pin): Target {
  const t = debianTarget(kernel, builderPin, driver);
  return { ...t, kind: 'kmod', label: `${t.label}-kmod` };
}

let counter = 0;
async function build(target: Target, driverDir: string, kernelRoot = roots.get(target.kernel.release)!) {
  const dir = join(scratch, `b${++counter}`);
  await mkdir(join(dir, 'work'), { recursive: true });
  const outFile = join(dir, 'out.ko');
  const logFile = join(dir, 'build.log');
  const result = await builder.build({ target, kernelRoot, driverDir, workDir: join(dir, 'work'), outFile, logFile });
  return { ...result, outFile, logFile, workDir: join(dir, 'work') };
}

test("the example module builds for 6.1 and 6.12 with each kernel's own gcc, same bytes from another work directory", async (t) => {
  if (skip) return skipOrFail(t, skip);
  for (const kernel of kernels) {
    const cc = await readKernelCompiler(join(roots.get(kernel.release)!, 'usr', 'src', `linux-headers-${kernel.release}`));
    const a = await build(kmodTarget(kernel, moduleDriver()), join(PROJECT_ROOT, 'examples', 'module'));
    const bytes = await readFile(a.outFile);
    checkKernelModule(bytes, a.outFile, kernel.release);
    const info = moduleInfo(bytes, readElf(bytes, a.outFile));
    assert.match(info.get('vermagic')![0]!, new RegExp(`^${kernel.release.replace(/[.+]/g, '\\$&')} SMP`));
    assert.deepEqual(info.get('name'), ['example']);
    const log = await readFile(a.logFile, 'utf8');
    // The program the kernel names (gcc-12 for 6.1, x86_64-linux-gnu-gcc-12 for 6.12) is CC.
    assert.match(log, new RegExp(`CC=${cc.program.replace(/[.+]/g, '\\$&')} `));
    assert.ok(!bytes.includes(Buffer.from(a.workDir)), 'the work directory is not recorded in the module');
    const b = await build(kmodTarget(kernel, moduleDriver()), join(PROJECT_ROOT, 'examples', 'module'));
    assert.equal(b.sha256, a.sha256, `${kernel.release}: two builds in two work directories give the same module`);
  }
});

test('a kernel built by another gcc is refused, naming that compiler, and make never runs', async (t) => {
  if (skip) return skipOrFail(t, skip);
  const kernel = kernels[0]!;
  // A copy of the real kernel root whose headers say Debian 13's compiler.
  const root = join(scratch, 'gcc14-root');
  // Hard links: a copy in a second; the one file edited is replaced, never written through.
  await execFileAsync('cp', ['-al', roots.get(kernel.release)!, root]);
  const config = join(root, 'usr', 'src', `linux-headers-${kernel.release}`, '.config');
  const text = await readFile(config, 'utf8');
  const gcc14 = 'x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0';
  await rm(config);
  await writeFile(config, text.replace(/^CONFIG_CC_VERSION_TEXT=.*$/m, `CONFIG_CC_VERSION_TEXT="${gcc14}"`));
  const dir = join(scratch, 'gcc14');
  await mkdir(join(dir, 'work'), { recursive: true });
  await assert.rejects(
    builder.build({
      target: kmodTarget(kernel, moduleDriver()),
      kernelRoot: root,
      driverDir: join(PROJECT_ROOT, 'examples', 'module'),
      workDir: join(dir, 'work'),
      outFile: join(dir, 'out.ko'),
      logFile: join(dir, 'build.log'),
    }),
    (err: unknown) => {
      assert.ok(err instanceof FalcoProbesError);
      assert.equal(err.kind, 'build');
      assert.match(err.message, /was built with `x86_64-linux-gnu-gcc-14 \(Debian 14\.2\.0-19\) 14\.2\.0`/);
      assert.match(err.hint ?? '', /\(Debian 14\.2\.0-19\) 14\.2\.0/);
      return true;
    },
  );
  const log = await readFile(join(dir, 'build.log'), 'utf8');
  assert.doesNotMatch(log, /# make -C/, 'no make command was run');
  await assert.rejects(access(join(dir, 'out.ko')));
});

test("a target keyed for another gcc than this host's is refused before anything runs", async (t) => {
  if (skip) return skipOrFail(t, skip);
  const other: BuilderPin = { ...pin, gcc: 'gcc (Debian 14.2.0-19) 14.2.0' };
  await assert.rejects(
    build(kmodTarget(kernels[0]!, moduleDriver(), other), join(PROJECT_ROOT, 'examples', 'module')),
    /keyed for gcc "gcc \(Debian 14\.2\.0-19\) 14\.2\.0"/,
  );
});

async function unpackLibs(tarball: string, name: string): Promise<string> {
  const dir = join(scratch, name);
  await mkdir(dir, { recursive: true });
  await execFileAsync('tar', ['-xzf', tarball, '-C', dir, '--strip-components=1']);
  return dir;
}

const FALCO_TARBALLS = ['libs-10.2.0-driver.tar.gz', 'libs-9.1.0-driver.tar.gz'];

function falcoDriver(version: string, overrides: Partial<ResolvedDriver> = {}): ResolvedDriver {
  return {
    name: 'falco',
    version,
    source: { url: `https://github.com/falcosecurity/libs/archive/refs/tags/${version.replace('+', '%2B')}.tar.gz`, strip: 1 },
    recipe: 'falco-libs',
    kmodDir: 'driver',
    module: 'falco.ko',
    kinds: ['kmod'],
    sourceSha256: sha256Hex(`falco ${version}`),
    ...overrides,
  };
}

// Falco 10.2.0+driver's module is built end to end through the CLI (test/build-e2e-real-drivers.test.ts).
test('Falco 10.2.0+driver (Falco 0.44) has no legacy probe: asking the falco-libs recipe for one says so, before make', async (t) => {
  if (skip) return skipOrFail(t, skip);
  if (!haveFalcoLibs(t, FALCO_TARBALLS)) return;
  const src = await unpackLibs(join(FALCO_LIBS, 'libs-10.2.0-driver.tar.gz'), 'libs-10');
  const probe = {
    ...debianTarget(kernels[0]!, pin, falcoDriver('10.2.0+driver', { bpfDir: 'driver/bpf', object: 'probe.o', kinds: ['bpf'] })),
    kind: 'bpf' as const,
  };
  await assert.rejects(build(probe, src), /has no legacy eBPF probe: driver\/bpf is not in its source/);
});

test('Falco 9.1.0+driver (Falco 0.43): falco.ko and the legacy probe through the falco-libs recipe', async (t) => {
  if (skip) return skipOrFail(t, skip);
  if (!haveFalcoLibs(t, FALCO_TARBALLS)) return;
  const src = await unpackLibs(join(FALCO_LIBS, 'libs-9.1.0-driver.tar.gz'), 'libs-9');
  const kernel = kernels[0]!;
  const driver = falcoDriver('9.1.0+driver', { bpfDir: 'driver/bpf', object: 'probe.o', kinds: ['kmod', 'bpf'] });
  const ko = await build(kmodTarget(kernel, driver), src);
  const bytes = await readFile(ko.outFile);
  const info = moduleInfo(bytes, checkKernelModule(bytes, ko.outFile, kernel.release));
  assert.deepEqual(info.get('version'), ['9.1.0+driver']);
  const probe = await build({ ...debianTarget(kernel, pin, driver), kind: 'bpf' }, src);
  const elf = readElf(await readFile(probe.outFile), probe.outFile);
  assert.ok(elf.sections.filter((s) => s.startsWith('raw_tracepoint/filler/')).length > 100, 'the legacy probe has its filler programs');
  assert.ok(elf.sections.includes('maps'));
});
