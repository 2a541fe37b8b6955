import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { createHostBuilder } from '../src/builders/host.js';
import type { ResolvedDriver, Target } from '../src/graph/types.js';
import { readIndex, writeIndex } from '../src/repository/index-file.js';
import { INDEX_VERSION } from '../src/repository/types.js';
import { sha256Hex } from '../src/util/hash.js';
import { buildKmodInitramfs, findGuestBusybox, readKernelModule } from '../src/verify/initramfs.js';
import { createKernelImageCache, type KernelImage } from '../src/verify/kernel-image.js';
import type { VmOutcome } from '../src/verify/qemu.js';
import { classify, readConsole, readRecord, summarizeModuleRefusal } from '../src/verify/verdict.js';
import { loadRecord, verifyLoad } from '../src/verify/verify-load.js';
import { PROJECT_ROOT } from './helpers/cli.js';
import { debianTarget, obtainDebianKernels, sharedKernelRoot, type DebianKernel } from './helpers/kernel-headers.js';
import { imagePackage } from './helpers/kernel-image.js';
import { skipOrFail } from './helpers/require.js';

// verify-load of kernel modules, and verdicts that count only when the
// guest's record arrived whole, with the real thing: a tiny kbuild module
// (a misc device, /dev/tiny) built by the host builder with the real gcc
// against real Debian 12 headers of 6.1, booted under qemu (TCG) in the real
// 6.1 kernel (loads) and the real 6.12 kernel (refused by the kernel); the
// real consoles cut inside their record or changed in one byte (unknown,
// never refused); and a real eBPF boot whose console is cut where a flaky
// line once cut it, which is booted once more. Four to five boots of about
// 4 to 6 s each.

const execFileAsync = promisify(execFile);

const TINY_C = `// SPDX-License-Identifier: GPL-2.0-only
#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>

static const struct file_operations tiny_fops = { .owner = THIS_MODULE };
static struct miscdevice tiny_device = { .minor = MISC_DYNAMIC_MINOR, .name = "tiny", .fops = &tiny_fops };

static int __init tiny_init(void)
{
	int err = misc_register(&tiny_device);

	if (err == 0)
		pr_info("tiny: ready\\n");
	return err;
}

static void __exit tiny_exit(void)
{
	misc_deregister(&tiny_device);
}

module_init(tiny_init);
module_exit(tiny_exit);
MODULE_LICENSE("GPL");
`;

function tinyDriver(): ResolvedDriver {
  return {
    name: 'tiny',
    version: '0.0.1',
    source: { path: 'tiny' },
    recipe: 'kbuild',
    kmodDir: '.',
    module: 'tiny.ko',
    kinds: ['kmod'],
    sourceSha256: sha256Hex('tiny module'),
  };
}

/** The console of boot `n` in a console log that holds several (each under `# <qemu argv>` and `# attempt n: ...`). */
function attemptConsole(log: string, n: number): string {
  const header = log.search(new RegExp(`^# attempt ${n}: `, 'm'));
  assert.ok(header >= 0, `the console log has attempt ${n}`);
  const start = log.indexOf('\n', header) + 1;
  const next = log.search(new RegExp(`^# attempt ${n + 1}: `, 'm'));
  // Boots are joined by a line end, before the next boot's argv line.
  return next < 0 ? log.slice(start) : log.slice(start, log.lastIndexOf('\n# ', next - 2));
}

function vmOf(console: string, over: Partial<VmOutcome> = {}): VmOutcome {
  return {
    argv: [],
    console,
    stderr: '',
    code: 0,
    signal: null,
    timedOut: false,
    aborted: false,
    killedAfterFinish: false,
    ms: 4000,
    ...over,
  };
}

/** A console cut at `at` (a string in it, kept up to and including `keep` of it). */
function cutAt(console: string, at: string, keep = at.length): string {
  const i = console.indexOf(at);
  assert.ok(i >= 0, `the console holds ${JSON.stringify(at)}`);
  return console.slice(0, i + keep);
}

describe('verify-load of kernel modules', { timeout: 600_000 }, () => {
  let skip: string | undefined;
  let scratch: string;
  let k61: DebianKernel;
  let images: Map<string, KernelImage>;
  let module61: string;
  let buildMs = 0;
  const consoles = new Map<string, string>();

  before(async () => {
    const missing = ['qemu-system-x86_64', 'busybox', 'gcc', 'make'].filter(
      (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status !== 0,
    );
    if (missing.length) {
      skip = `not installed: ${missing.join(', ')} (scripts/setup-debian.sh installs them)`;
      return;
    }
    const r = await obtainDebianKernels();
    if (!r.ok) {
      skip = r.skip;
      return;
    }
    const k612 = r.kernels.find((k) => k.series === '6.12');
    k61 = r.kernels.find((k) => k.series === '6.1')!;
    if (!k61 || !k612) {
      skip = 'no Debian 6.1 and 6.12 kernels';
      return;
    }
    scratch = await mkdtemp(join(tmpdir(), 'falco-probes-verify-kmod-'));
    const cache = createKernelImageCache(join(scratch, 'kernel-images'));
    images = new Map();
    for (const k of [k61, k612]) {
      const pkg = await imagePackage(k);
      if ('skip' in pkg) {
        skip = pkg.skip;
        return;
      }
      images.set(k.series, await cache.prepare(pkg.ref, pkg.debPath));
    }
    // The tiny module, built for 6.1 by the host builder with the kernel's own gcc.
    const builder = createHostBuilder();
    const pin = await builder.pin();
    if (pin.gcc === undefined) {
      skip = 'the host builder found no gcc';
      return;
    }
    const source = join(scratch, 'tiny');
    await mkdir(source, { recursive: true });
    await writeFile(join(source, 'Makefile'), 'obj-m += tiny.o\n');
    await writeFile(join(source, 'tiny.c'), TINY_C);
    const base = debianTarget(k61, pin, tinyDriver());
    const target: Target = {
      ...base,
      kind: 'kmod',
      probeFile: base.probeFile.replace(/\.o$/, '.ko'),
      output: base.output.replace(/\.o$/, '.ko'),
    };
    await mkdir(join(scratch, 'build'), { recursive: true });
    module61 = join(scratch, 'tiny-6.1.ko');
    const kernelRoot = await sharedKernelRoot(k61);
    const t0 = performance.now();
    await builder.build({
      target,
      kernelRoot,
      driverDir: source,
      workDir: join(scratch, 'build'),
      outFile: module61,
      logFile: join(scratch, 'build.log'),
    });
    buildMs = performance.now() - t0;
  });

  after(async () => {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  test('a module built for 6.1 loads into the 6.1 kernel: loaded, /dev/tiny seen, rmmod exit 0; its initramfs has busybox and no bpftool', async (t) => {
    if (skip) return skipOrFail(t, skip);
    t.diagnostic(`tiny.ko built for ${k61.release} by the host builder in ${(buildMs / 1000).toFixed(1)} s`);
    const module = await readKernelModule(module61);
    assert.equal(module.name, 'tiny');
    assert.match(module.vermagic ?? '', new RegExp(`^${k61.release.replace(/[.+]/g, '\\$&')} SMP`));
    const listing = join(scratch, 'kmod.cpio');
    await writeFile(listing, gunzipSync(buildKmodInitramfs(await findGuestBusybox(), module, ['tiny'])));
    const files = spawnSync('cpio', ['-it', '--quiet', '-F', listing], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).sort();
    assert.deepEqual(files, ['bin', 'bin/busybox', 'dev', 'dev/console', 'driver.ko', 'init', 'proc', 'sys', 'tmp']);

    const workDir = join(scratch, 'load-6.1');
    const consoleLog = join(workDir, 'console.log');
    const v = await verifyLoad({
      probeFile: module61,
      kernelImage: images.get('6.1')!,
      workDir,
      accelerator: 'tcg',
      timeoutMs: 120_000,
      consoleLog,
    });
    t.diagnostic(`6.1: ${v.verdict} in ${(v.ms / 1000).toFixed(1)} s: ${v.message}`);
    assert.equal(v.verdict, 'loaded', `${v.message}\n${v.detail ?? ''}`);
    assert.equal(v.kind, 'kmod');
    assert.equal(v.attempts, 1);
    assert.equal(v.module, 'tiny');
    assert.equal(v.guestRelease, k61.release);
    assert.deepEqual(v.devices, ['/dev/tiny']);
    assert.equal(v.message, 'loaded module tiny (devices: /dev/tiny; rmmod: exit 0)');
    const console = await readFile(consoleLog, 'utf8');
    assert.match(console, /^FALCO-PROBES-VERDICT \{"insmod_exit":0,"listed":1,"devices":1,"rmmod_exit":0,"unloaded":1\}$/m);
    assert.match(console, /^\[ *\d+\.\d+\] tiny: ready$/m, "the kernel's messages about the module are in the record");
    assert.match(console, /^FALCO-PROBES-RECORD-END \d+ [0-9a-f]{64}$/m);
    consoles.set('loaded', console);
    assert.deepEqual(loadRecord(v), { verdict: 'loaded', kernelImageSha256: images.get('6.1')!.sha256, message: v.message });
  });

  test("the same module booted in the 6.12 kernel is refused with the kernel's reason (invalid module format)", async (t) => {
    if (skip) return skipOrFail(t, skip);
    const workDir = join(scratch, 'load-6.12');
    const consoleLog = join(workDir, 'console.log');
    const v = await verifyLoad({
      probeFile: module61,
      kind: 'kmod',
      devicePrefixes: ['tiny'],
      kernelImage: images.get('6.12')!,
      workDir,
      accelerator: 'tcg',
      timeoutMs: 120_000,
      consoleLog,
    });
    t.diagnostic(`6.12: ${v.verdict} in ${(v.ms / 1000).toFixed(1)} s: ${v.message}`);
    assert.equal(v.verdict, 'refused', v.message);
    assert.equal(v.attempts, 1);
    assert.match(v.guestRelease ?? '', /^6\.12\./);
    // The kernel says why (a struct module of another size, a vermagic or symbol version mismatch), and insmod says what errno that was.
    assert.match(v.message, /^insmod failed \(exit \d+\): /);
    assert.match(
      v.message,
      /module tiny: \.gnu\.linkonce\.this_module section size must match|version magic '[^']*' should be '[^']*'|disagrees about version of symbol/,
    );
    assert.match(v.message, /insmod: can't insert '\/driver\.ko': invalid module format/);
    assert.deepEqual(v.devices, []);
    const record = loadRecord(v);
    assert.equal(record.verdict, 'refused');
    assert.match(record.message!, /--- log ---\nFALCO-PROBES-PART insmod\n/);
    consoles.set('refused', await readFile(consoleLog, 'utf8'));
  });

  test('a console cut inside the record, or with one byte changed, gives unknown, never refused; unknown is kept in the index', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const refused = consoles.get('refused');
    const loaded = consoles.get('loaded');
    assert.ok(refused && loaded, 'the two boots above ran');
    // The whole transcripts are read as they were.
    assert.equal(classify(vmOf(refused), readConsole(refused), 120_000).verdict, 'refused');
    assert.equal(classify(vmOf(loaded), readConsole(loaded), 120_000).verdict, 'loaded');

    const cuts: [string, string][] = [
      ['in the verdict line', cutAt(refused, 'FALCO-PROBES-VERDICT {"insmod_exit":', 'FALCO-PROBES-VERDICT {"insmod_exit":'.length + 2)],
      ['in the insmod part', cutAt(refused, "insmod: can't insert", 10)],
      ['after the verdict line, before the end line', cutAt(refused, 'FALCO-PROBES-RECORD-END', 0)],
      ['in the end line', cutAt(refused, 'FALCO-PROBES-RECORD-END', 'FALCO-PROBES-RECORD-END'.length + 8)],
      ['in the loaded record', cutAt(loaded, 'FALCO-PROBES-PART devices', 12)],
    ];
    for (const [where, console] of cuts) {
      const report = readConsole(console);
      assert.equal(report.verdict, undefined, where);
      assert.equal(report.record.state, 'damaged', where);
      // However the VM ended: it powered off, it was killed, or it ran out of time.
      for (const vm of [
        vmOf(console),
        vmOf(console, { code: null, signal: 'SIGKILL' }),
        vmOf(console, { code: null, signal: 'SIGKILL', timedOut: true }),
      ]) {
        const c = classify(vm, report, 120_000, { subject: 'module' });
        assert.equal(c.verdict, 'unknown', `${where}: ${c.message}`);
        assert.match(c.message, /^the guest's record was not read whole: /);
      }
    }
    // One byte changed inside the record: the sha256 differs; one byte more or less: the length differs.
    const changed = refused.replace("can't insert", "can't insurt");
    const changedState = readRecord(changed).state;
    assert.match(
      changedState.state === 'damaged' ? changedState.why : changedState.state,
      /the record's sha256 is [0-9a-f]{12}\.\.\., its end line says/,
    );
    assert.equal(classify(vmOf(changed), readConsole(changed), 120_000).verdict, 'unknown');
    const longer = refused.replace('FALCO-PROBES-PART modules\n', 'FALCO-PROBES-PART modules\n\n');
    const longerState = readRecord(longer).state;
    assert.match(longerState.state === 'damaged' ? longerState.why : longerState.state, /the record has \d+ bytes, its end line says \d+/);
    assert.equal(classify(vmOf(longer), readConsole(longer), 120_000).verdict, 'unknown');
    // No record begun: /init ran and the machine stopped: unknown (it was "refused" before records).
    const upToInit = cutAt(
      refused,
      'FALCO-PROBES-INIT',
      refused.indexOf('\n', refused.indexOf('FALCO-PROBES-INIT')) - refused.indexOf('FALCO-PROBES-INIT') + 1,
    );
    assert.equal(classify(vmOf(upToInit), readConsole(upToInit), 120_000).verdict, 'unknown');

    // The index keeps an unknown verdict (schema) as loadRecord writes it.
    const unknown = classify(vmOf(cuts[0]![1]), readConsole(cuts[0]![1]), 120_000, { subject: 'module' });
    const repo = join(scratch, 'repository');
    await mkdir(repo, { recursive: true });
    const record = loadRecord({ ...unknown, kernelImageSha256: images.get('6.12')!.sha256 });
    await writeIndex(repo, {
      version: INDEX_VERSION,
      probes: [
        {
          file: '0.0.1/x86_64/tiny.ko',
          key: sha256Hex('k'),
          sha256: sha256Hex('b'),
          size: 1,
          os: 'debian12',
          kernel: k61.release,
          driver: 'tiny',
          driverVersion: '0.0.1',
          arch: 'x86_64',
          kind: 'kmod',
          load: record,
        },
      ],
    });
    assert.equal((await readIndex(repo)).probes[0]!.load!.verdict, 'unknown');
    assert.match(
      record.message!,
      /^the guest's record was not read whole: the console ends inside the record \(no end line\)\n--- console ---\n/,
    );
  });

  test("eBPF: a console cut in the verdict line is unknown and booted once more; the second boot gives the verifier's refusal", async (t) => {
    if (skip) return skipOrFail(t, skip);
    const noBpf = ['bpftool', 'clang'].filter(
      (cmd) => spawnSync('sh', ['-c', `command -v ${cmd} || test -x /usr/sbin/${cmd}`]).status !== 0,
    );
    if (noBpf.length) return skipOrFail(t, `not installed: ${noBpf.join(', ')}`);
    const probe = join(scratch, 'refused.o');
    await execFileAsync(
      'clang',
      ['-O2', '-g', '-target', 'bpf', '-Wall', '-Werror', '-c', join(PROJECT_ROOT, 'examples', 'refused', 'probe.c'), '-o', probe],
      { timeout: 60_000 },
    );
    // The real qemu, whose console the first time loses everything after `{"bpftool_exit":255,`
    // (as a flaky line once did): sed passes the console until the verdict line, cuts it, and stops reading.
    const marker = join(scratch, 'first-boot-done');
    const wrapper = join(scratch, 'qemu-cut-once');
    await writeFile(
      wrapper,
      `#!/bin/sh\nif [ -e ${marker} ]; then exec qemu-system-x86_64 "$@"; fi\n: >${marker}\nqemu-system-x86_64 "$@" | sed -n '/FALCO-PROBES-VERDICT/{s/,.*/,/;p;q;};p'\n`,
    );
    await chmod(wrapper, 0o755);
    const workDir = join(scratch, 'bpf');
    const consoleLog = join(workDir, 'console.log');
    const v = await verifyLoad({
      probeFile: probe,
      kernelImage: images.get('6.1')!,
      workDir,
      accelerator: 'tcg',
      timeoutMs: 120_000,
      consoleLog,
      qemu: wrapper,
    });
    t.diagnostic(`eBPF, cut once: ${v.verdict} after ${v.attempts} boots, ${(v.ms / 1000).toFixed(1)} s in all: ${v.message}`);
    assert.equal(v.kind, 'bpf');
    assert.equal(v.attempts, 2);
    assert.equal(v.verdict, 'refused', v.message);
    assert.match(v.message, /prog 'read_past_value': invalid access to map value/);
    const log = await readFile(consoleLog, 'utf8');
    assert.match(log, /^# attempt 1: /m);
    assert.match(log, /^# attempt 2: /m);
    const first = attemptConsole(log, 1);
    assert.match(first, /^FALCO-PROBES-VERDICT \{"bpftool_exit":255,$/m);
    assert.doesNotMatch(first, /FALCO-PROBES-RECORD-END/);
    const report = readConsole(first);
    assert.equal(report.initSeen, true);
    assert.equal(report.verdict, undefined);
    const c = classify(vmOf(first), report, 120_000);
    assert.equal(c.verdict, 'unknown', c.message);
    assert.match(c.message, /no end line/);
    assert.equal(readConsole(attemptConsole(log, 2)).record.state, 'complete');
    assert.ok((await stat(marker)).isFile());
  });
});

test("a module's refusal in the kernel's words: version magic, symbol versions, unknown symbols, else the kernel's line and insmod's", () => {
  // The kernel's formats (kernel/module/main.c, version.c); busybox insmod's line.
  const insmod = (what: string) => `insmod: can't insert '/driver.ko': ${what}\n`;
  assert.equal(
    summarizeModuleRefusal(
      insmod('invalid module format'),
      "[    2.1] scap: version magic '6.1.0-57-amd64 SMP mod_unload ' should be '6.1.0-57-amd64 SMP preempt mod_unload modversions '\n",
    ),
    "scap: version magic '6.1.0-57-amd64 SMP mod_unload ' should be '6.1.0-57-amd64 SMP preempt mod_unload modversions '; insmod: can't insert '/driver.ko': invalid module format",
  );
  assert.equal(
    summarizeModuleRefusal(
      insmod('invalid module format'),
      ['a', 'b', 'c', 'd', 'b'].map((s) => `[    3.2] falco: disagrees about version of symbol ${s}`).join('\n'),
    ),
    "disagrees about version of symbol a, b, c and 1 more; insmod: can't insert '/driver.ko': invalid module format",
  );
  assert.equal(
    summarizeModuleRefusal(
      insmod('unknown symbol in module, or unknown parameter'),
      '[    1.0] scap: loading out-of-tree module taints kernel.\n[    1.1] scap: Unknown symbol tracepoint_probe_register (err -2)\n',
    ),
    "Unknown symbol tracepoint_probe_register; insmod: can't insert '/driver.ko': unknown symbol in module, or unknown parameter",
  );
  assert.equal(
    summarizeModuleRefusal(
      insmod('invalid module format'),
      "[    3.3] module scap: .gnu.linkonce.this_module section size must match the kernel's built struct module size at run time\n",
    ),
    "module scap: .gnu.linkonce.this_module section size must match the kernel's built struct module size at run time; insmod: can't insert '/driver.ko': invalid module format",
  );
  assert.equal(
    summarizeModuleRefusal(insmod('Operation not permitted'), '[    1.0] scap: loading out-of-tree module taints kernel.\n'),
    "insmod: can't insert '/driver.ko': Operation not permitted",
  );
});
