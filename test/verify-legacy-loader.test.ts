import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { createHostBuilder } from '../src/builders/host.js';
import { loadDrivers } from '../src/config/drivers.js';
import { extractPackage } from '../src/fetch/extract.js';
import { resolveDriverIdentities } from '../src/graph/driver-identity.js';
import type { BuilderPin, ResolvedDriver } from '../src/graph/types.js';
import { createDriverSources } from '../src/fetch/driver-source.js';
import { sha256Hex } from '../src/util/hash.js';
import { buildLegacyInitramfs, findGuestBusybox, readProbeObject } from '../src/verify/initramfs.js';
import { createKernelImageCache, type KernelImage } from '../src/verify/kernel-image.js';
import { LEGACY_LOADER_SOURCE, obtainLegacyLoader, staticX86Problem } from '../src/verify/legacy-loader.js';
import { summarizeLegacyRefusal } from '../src/verify/verdict.js';
import { unverifiedProbeError } from '../src/verify/verifier.js';
import { loadRecord, verifyLoad } from '../src/verify/verify-load.js';
import { PROJECT_ROOT } from './helpers/cli.js';
import { debianTarget, sharedKernelRoot, type DebianKernel } from './helpers/kernel-headers.js';
import { obtainDebianKernelImage } from './helpers/kernel-image.js';
import { skipOrFail } from './helpers/require.js';

// The legacy eBPF loader (builder/legacy-loader) with the real thing: compiled
// statically by the host's gcc into the cache; legacy probes (a `maps` section
// of struct bpf_map_def, as Falco's driver/bpf) built by the host builder
// against the real Debian 12 headers of 6.1 and booted under qemu (TCG) in
// the real 6.1 kernel: one whose program reads past its map value (refused by
// the verifier, with its reason), the same fixed (loaded), an object the
// loader cannot relocate (no verdict of the kernel: unknown, booted once), and
// Debian's real scap 0.23.2 probe (Falco's 9.1.0+driver driver/bpf), whose
// verdict is reported as the kernel gives it.

const execFileAsync = promisify(execFile);

const HEADER = `// SPDX-License-Identifier: GPL-2.0-only
#include <generated/utsrelease.h>
#include <linux/types.h>
#include <uapi/linux/bpf.h>

#define __bpf_section(NAME) __attribute__((section(NAME), used))

/* Falco's legacy map definition (driver/bpf/maps.h). */
struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
	unsigned int inner_map_idx;
	unsigned int numa_node;
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, unsigned long long flags) = (void *)BPF_FUNC_map_update_elem;
static unsigned long long (*bpf_get_current_pid_tgid)(void) = (void *)BPF_FUNC_get_current_pid_tgid;
static long (*bpf_tail_call)(void *ctx, void *map, __u32 index) = (void *)BPF_FUNC_tail_call;
`;

/** A legacy probe like Falco's: a hash map, a per-CPU scratch array (max_entries 0), a tail-call table, a sys_enter program and a "filler". */
function legacyProbeSource(refused: boolean): string {
  return `${HEADER}
struct bpf_map_def __bpf_section("maps") counts = {
	.type = BPF_MAP_TYPE_HASH, .key_size = sizeof(__u32), .value_size = sizeof(__u64), .max_entries = 1024,
};
/* max_entries 0: one entry per CPU, as Falco's frame_scratch_map (the loader fills it in). */
struct bpf_map_def __bpf_section("maps") scratch = {
	.type = BPF_MAP_TYPE_ARRAY, .key_size = sizeof(__u32), .value_size = sizeof(__u64), .max_entries = 0,
};
struct bpf_map_def __bpf_section("maps") tail_map = {
	.type = BPF_MAP_TYPE_PROG_ARRAY, .key_size = sizeof(__u32), .value_size = sizeof(__u32), .max_entries = 4,
};

__bpf_section("raw_tracepoint/sys_enter")
int count_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 one = 1, *count;

	count = bpf_map_lookup_elem(&counts, &tgid);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&counts, &tgid, &one, BPF_NOEXIST);
	bpf_tail_call(ctx, &tail_map, 0);
	return 0;
}

__bpf_section("raw_tracepoint/filler/read_value")
int read_value(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 key = 0;
	__u64 *value = bpf_map_lookup_elem(&scratch, &key);

	if (!value)
		return 0;
${refused ? '\t/* Deliberately wrong: the value has 8 bytes, this reads the 8 after them. */\n\treturn value[1];' : '\treturn value[0];'}
}

char kernel_ver[] __bpf_section("kernel_version") = UTS_RELEASE;
char __license[] __bpf_section("license") = "GPL";
`;
}

// A kbuild Makefile like examples/probe/Makefile: the kernel's flags to LLVM IR, llc to BPF.
const MAKEFILE = `always-y += probe.o
always = $(always-y)
LLC ?= llc
CLANG ?= clang
ifneq ($(KERNELRELEASE),)
$(obj)/probe.o: $(src)/probe.c
\t$(CLANG) $(LINUXINCLUDE) $(KBUILD_CPPFLAGS) $(KBUILD_EXTRA_CPPFLAGS) -D__KERNEL__ -D__BPF_TRACING__ \\
\t\t-Wno-gnu-variable-sized-type-not-at-end -Wno-address-of-packed-member -Wno-tautological-compare \\
\t\t-Wno-unknown-attributes -fno-jump-tables -fno-stack-protector -O2 -g -emit-llvm -c $< -o $(patsubst %.o,%.ll,$@)
\t$(LLC) -march=bpf -filetype=obj -o $@ $(patsubst %.o,%.ll,$@)
endif
`;

/** An object the loader cannot relocate: its program reads a global variable (global data, which neither libscap nor the loader supports). */
const GLOBAL_DATA_SOURCE = `struct bpf_map_def { unsigned int type, key_size, value_size, max_entries, map_flags; };
struct bpf_map_def __attribute__((section("maps"), used)) counts = { 2, 4, 8, 1, 0 };
static void *(*lookup)(void *map, const void *key) = (void *)1;
int limit = 3;
int __attribute__((section("raw_tracepoint/sys_enter"), used)) prog(void *ctx)
{
	int k = 0;
	long *v = lookup(&counts, &k);
	return v ? *v + limit : limit;
}
char __attribute__((section("license"), used)) license_text[] = "GPL";
`;

function legacyDriver(name: string): ResolvedDriver {
  return {
    name,
    version: '0.0.1',
    source: { path: name },
    recipe: 'kbuild',
    bpfDir: '.',
    kinds: ['bpf'],
    object: 'probe.o',
    sourceSha256: sha256Hex(`legacy test probe ${name}`),
  };
}

function runLoader(loader: string, probe: string): { status: number | null; stdout: string } {
  const r = spawnSync(loader, [probe], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout };
}

describe('verify-load of legacy probes with the legacy loader', { timeout: 1_800_000 }, () => {
  let skip: string | undefined;
  let scratch: string;
  let cacheRoot: string;
  let kernel: DebianKernel;
  let image: KernelImage;
  let pin: BuilderPin;

  before(async () => {
    const missing = ['qemu-system-x86_64', 'busybox', 'gcc', 'clang', 'llc', 'make'].filter(
      (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status !== 0,
    );
    if (missing.length) {
      skip = `not installed: ${missing.join(', ')} (scripts/setup-debian.sh installs them)`;
      return;
    }
    const r = await obtainDebianKernelImage();
    if (!r.ok) {
      skip = r.skip;
      return;
    }
    kernel = r.image.kernel;
    scratch = await mkdtemp(join(tmpdir(), 'falco-probes-verify-legacy-'));
    cacheRoot = join(scratch, 'cache');
    image = await createKernelImageCache(join(scratch, 'kernel-images')).prepare(r.image.ref, r.image.debPath);
    pin = await createHostBuilder().pin();
  });

  after(async () => {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  async function buildLegacy(name: string, source: string): Promise<{ file: string; ms: number }> {
    const dir = join(scratch, name);
    await mkdir(join(dir, 'src'), { recursive: true });
    await mkdir(join(dir, 'work'), { recursive: true });
    await writeFile(join(dir, 'src', 'Makefile'), MAKEFILE);
    await writeFile(join(dir, 'src', 'probe.c'), source);
    const file = join(dir, 'probe.o');
    const t0 = performance.now();
    await createHostBuilder().build({
      target: { ...debianTarget(kernel, pin, legacyDriver(name)), kind: 'bpf' },
      kernelRoot: await sharedKernelRoot(kernel),
      driverDir: join(dir, 'src'),
      workDir: join(dir, 'work'),
      outFile: file,
      logFile: join(dir, 'build.log'),
    });
    return { file, ms: performance.now() - t0 };
  }

  test('the loader: compiled statically once into <cache>/legacy-loader/<sha256 of its source>/, reused without gcc, rebuilt when damaged', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const t0 = performance.now();
    const loader = await obtainLegacyLoader({ cacheRoot });
    t.diagnostic(`compiled in ${Math.round(performance.now() - t0)} ms: ${loader.data.length} bytes`);
    const sourceSha = sha256Hex(await readFile(LEGACY_LOADER_SOURCE));
    assert.equal(loader.hostPath, join(cacheRoot, 'legacy-loader', sourceSha, 'legacy-bpf-loader'));
    assert.equal(loader.guestPath, '/bin/legacy-bpf-loader');
    assert.equal(staticX86Problem(loader.data), undefined, 'a static x86_64 program');
    assert.ok(((await stat(loader.hostPath)).mode & 0o111) !== 0, 'executable');
    assert.deepEqual(await readFile(loader.hostPath), loader.data);
    // Once in the cache, it is reused: a gcc that does not exist is never asked.
    const mtime = (await stat(loader.hostPath)).mtimeMs;
    const reused = await obtainLegacyLoader({ cacheRoot, gcc: '/nonexistent/gcc' });
    assert.deepEqual(reused.data, loader.data);
    assert.equal((await stat(loader.hostPath)).mtimeMs, mtime);
    // A damaged program in the cache is not used: compiled again (and without gcc that is an error naming what to install).
    await writeFile(loader.hostPath, 'not a program');
    await assert.rejects(
      obtainLegacyLoader({ cacheRoot, gcc: '/nonexistent/gcc2' }),
      /cannot compile the legacy eBPF loader with \/nonexistent\/gcc2: \/nonexistent\/gcc2 is not installed/,
    );
    // (Another gcc command than the first call's: each process remembers what it obtained per source, cache and gcc.)
    const gccPath = spawnSync('sh', ['-c', 'command -v gcc'], { encoding: 'utf8' }).stdout.trim();
    const rebuilt = await obtainLegacyLoader({ cacheRoot, gcc: gccPath });
    assert.equal(staticX86Problem(rebuilt.data), undefined);
    assert.deepEqual(await readFile(loader.hostPath), rebuilt.data, 'the damaged file was replaced');
    assert.equal(staticX86Problem(Buffer.from('not a program')), 'not a 64-bit ELF program');
    // A dynamically linked program is not one the guest can run.
    assert.match(staticX86Problem(await readFile(process.execPath)) ?? '', /dynamically linked \(interpreter /);
  });

  test('objects the loader cannot load give exit 2 before any bpf() call: not ELF, not BPF, stripped, global data', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const loader = (await obtainLegacyLoader({ cacheRoot })).hostPath;
    const dir = join(scratch, 'malformed');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'global.c'), GLOBAL_DATA_SOURCE);
    await execFileAsync('clang', ['-O2', '-g', '-target', 'bpf', '-c', join(dir, 'global.c'), '-o', join(dir, 'global.o')]);
    await writeFile(join(dir, 'text.o'), 'hello\n');
    const cases: [string, RegExp][] = [
      [join(dir, 'text.o'), /^error: \S+text\.o: not an ELF file$/m],
      [loader, /^error: \S+: not a relocatable BPF object \(ELF type 2, machine 62; BPF is 247\)$/m],
      [
        join(dir, 'global.o'),
        /^error: \S+global\.o: raw_tracepoint\/sys_enter: instruction \d+ refers to limit, which is not in the maps section/m,
      ],
    ];
    // Stripped of its symbol table, an object has lost its map relocations.
    if (spawnSync('llvm-strip', ['--strip-all', join(dir, 'global.o'), '-o', join(dir, 'stripped.o')]).status === 0)
      cases.push([join(dir, 'stripped.o'), /^error: \S+stripped\.o: no symbol table \(SHT_SYMTAB\)/m]);
    for (const [file, pattern] of cases) {
      const r = runLoader(loader, file);
      assert.equal(r.status, 2, `${file}: ${r.stdout}`);
      assert.match(r.stdout, pattern);
      assert.doesNotMatch(r.stdout, /^(map|prog) /m, 'nothing was created or loaded');
    }
  });

  test('(a) a legacy probe that reads past its map value, built for 6.1 by the host builder: refused by the 6.1 verifier with its reason', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const { file, ms: buildMs } = await buildLegacy('legacy-refused', legacyProbeSource(true));
    const probe = await readProbeObject(file);
    assert.equal(probe.legacyMaps, true);
    // The guest: busybox, the loader, the probe; no bpftool.
    const cpio = join(scratch, 'legacy.cpio');
    await writeFile(cpio, gunzipSync(buildLegacyInitramfs(await findGuestBusybox(), await obtainLegacyLoader({ cacheRoot }), probe)));
    const files = spawnSync('cpio', ['-it', '--quiet', '-F', cpio], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).sort();
    assert.deepEqual(files, ['bin', 'bin/busybox', 'bin/legacy-bpf-loader', 'dev', 'dev/console', 'init', 'probe.o', 'proc', 'sys', 'tmp']);

    const workDir = join(scratch, 'load-refused');
    const consoleLog = join(workDir, 'console.log');
    const v = await verifyLoad({
      probeFile: file,
      kernelImage: image,
      workDir,
      accelerator: 'tcg',
      timeoutMs: 180_000,
      consoleLog,
      legacyLoader: { cacheRoot },
    });
    t.diagnostic(
      `built in ${(buildMs / 1000).toFixed(1)} s; ${kernel.release}: ${v.verdict} in ${(v.ms / 1000).toFixed(1)} s: ${v.message}`,
    );
    assert.equal(v.verdict, 'refused', `${v.message}\n${v.detail ?? ''}`);
    assert.equal(v.loader, 'legacy-bpf-loader');
    assert.equal(v.legacyMaps, true);
    assert.equal(v.attempts, 1);
    assert.equal(v.guestRelease, kernel.release);
    assert.equal(
      v.message,
      "prog 'raw_tracepoint/filler/read_value': invalid access to map value, value_size=8 off=8 size=8; R0 min value is outside of the allowed memory range",
    );
    assert.match(
      v.detail ?? '',
      /^prog raw_tracepoint\/filler\/read_value refused \(\d+ insns\): Permission denied \(EACCES\)\n-- BEGIN PROG LOAD LOG raw_tracepoint\/filler\/read_value \(last \d+ of \d+ lines\) --\n/,
    );
    assert.match(v.detail ?? '', /processed \d+ insns/);
    const console = await readFile(consoleLog, 'utf8');
    // Every map was made (max_entries 0 became one per CPU: the guest has one), the other program loaded.
    assert.match(console, /^map counts ok: type 1 key 4 value 8 entries 1024 flags 0x0$/m);
    assert.match(console, /^map scratch ok: type 2 key 4 value 8 entries 1 \(0 in the object: one per CPU\) flags 0x0$/m);
    assert.match(console, /^map tail_map ok: type 3 key 4 value 4 entries 4 flags 0x0$/m);
    assert.match(console, /^prog raw_tracepoint\/sys_enter ok \(\d+ insns\)$/m);
    assert.match(console, /^summary: 2 programs: 1 loaded, 1 refused, 0 not loaded; 3 maps: 0 refused$/m);
    assert.match(console, /^FALCO-PROBES-VERDICT \{"loader_exit":1,"programs":1,"refused":1\}$/m);
    assert.match(console, new RegExp(`kernel_version "${kernel.release}" \\(running ${kernel.release}\\)`));
    // The index keeps the reason and the end of the verifier's log.
    const record = loadRecord(v);
    assert.equal(record.verdict, 'refused');
    assert.match(
      record.message!,
      /^prog 'raw_tracepoint\/filler\/read_value': invalid access to map value[\s\S]*\n--- log ---\n[\s\S]*processed \d+ insns/,
    );
    const error = unverifiedProbeError({ label: '//probes/x:legacy', kind: 'bpf' }, v);
    assert.match(error.hint ?? '', /the verifier of this kernel refuses the probe/);
  });

  test('(b) the same probe fixed: loaded by the 6.1 kernel', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const { file } = await buildLegacy('legacy-fixed', legacyProbeSource(false));
    const workDir = join(scratch, 'load-fixed');
    const consoleLog = join(workDir, 'console.log');
    const v = await verifyLoad({
      probeFile: file,
      kernelImage: image,
      workDir,
      accelerator: 'tcg',
      timeoutMs: 180_000,
      consoleLog,
      legacyLoader: { cacheRoot },
    });
    t.diagnostic(`${kernel.release}: ${v.verdict} in ${(v.ms / 1000).toFixed(1)} s: ${v.message}`);
    assert.equal(v.verdict, 'loaded', `${v.message}\n${v.detail ?? ''}`);
    assert.equal(v.message, 'loaded 2 programs with the legacy loader');
    assert.equal(v.programs, 2);
    assert.equal(v.loader, 'legacy-bpf-loader');
    assert.equal(v.attempts, 1);
    const console = await readFile(consoleLog, 'utf8');
    assert.match(console, /^prog raw_tracepoint\/filler\/read_value ok \(\d+ insns\)$/m);
    assert.match(console, /^FALCO-PROBES-VERDICT \{"loader_exit":0,"programs":2,"refused":0\}$/m);
    assert.deepEqual(loadRecord(v), { verdict: 'loaded', kernelImageSha256: image.sha256, message: v.message });
  });

  test('an object the loader cannot relocate, booted: unknown (no verdict of the kernel), not refused, and not booted twice', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const dir = join(scratch, 'global-boot');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'global.c'), GLOBAL_DATA_SOURCE);
    await execFileAsync('clang', ['-O2', '-target', 'bpf', '-c', join(dir, 'global.c'), '-o', join(dir, 'probe.o')]);
    const v = await verifyLoad({
      probeFile: join(dir, 'probe.o'),
      kernelImage: image,
      workDir: join(dir, 'work'),
      accelerator: 'tcg',
      timeoutMs: 180_000,
      legacyLoader: { cacheRoot },
    });
    t.diagnostic(`${v.verdict} in ${(v.ms / 1000).toFixed(1)} s: ${v.message}`);
    assert.equal(v.verdict, 'unknown', v.message);
    assert.equal(v.attempts, 1, 'a whole record says the same again: no second boot');
    assert.match(
      v.message,
      /^the legacy loader could not load the probe, so the kernel gave no verdict: \/probe\.o: raw_tracepoint\/sys_enter: instruction \d+ refers to limit, which is not in the maps section/,
    );
    const error = unverifiedProbeError({ label: '//probes/x:global', kind: 'bpf' }, v);
    assert.match(error.hint ?? '', /malformed or uses what the legacy loader/);
    assert.match(loadRecord(v).message!, /--- console ---\n[\s\S]*summary: malformed object/);
  });

  test("(c) Debian's real scap 0.23.2 legacy probe (Falco 9.1.0+driver's driver/bpf), built for 6.1 and loaded in 6.1: the kernel's verdict, whatever it is", async (t) => {
    if (skip) return skipOrFail(t, skip);
    const drivers = await loadDrivers(join(PROJECT_ROOT, 'kernels', 'drivers.yaml'));
    const scap = (await resolveDriverIdentities(drivers, PROJECT_ROOT)).resolved.find((d) => d.name === 'scap' && d.kinds.includes('bpf'));
    assert.ok(scap, 'kernels/drivers.yaml has the scap driver with its probe');
    let driverDir: string;
    try {
      // Debian's package, from the mirror this machine's apt sources name, checked by its sha256.
      driverDir = await createDriverSources({
        projectRoot: PROJECT_ROOT,
        cacheDir: join(scratch, 'driver-cache'),
        extract: async (file, dest, o) => {
          await extractPackage(file, 'tgz', dest, { strip: o.strip });
        },
      })(scap);
    } catch (err) {
      return skipOrFail(t, `scap's package is unreachable from here: ${(err as Error).message.split('\n')[0]}`);
    }
    const out = join(scratch, 'scap', 'probe.o');
    await mkdir(join(scratch, 'scap', 'work'), { recursive: true });
    const t0 = performance.now();
    await createHostBuilder().build({
      target: { ...debianTarget(kernel, pin, scap), kind: 'bpf' },
      kernelRoot: await sharedKernelRoot(kernel),
      driverDir,
      workDir: join(scratch, 'scap', 'work'),
      outFile: out,
      logFile: join(scratch, 'scap', 'build.log'),
    });
    const buildMs = performance.now() - t0;
    const probe = await readProbeObject(out);
    assert.equal(probe.legacyMaps, true, "scap's probe defines its maps the legacy way");

    const workDir = join(scratch, 'scap', 'load');
    const consoleLog = join(workDir, 'console.log');
    const v = await verifyLoad({
      probeFile: out,
      kernelImage: image,
      workDir,
      accelerator: 'tcg',
      timeoutMs: 900_000,
      consoleLog,
      legacyLoader: { cacheRoot },
    });
    const console = await readFile(consoleLog, 'utf8');
    const summary = /^summary: .*$/m.exec(console)?.[0];
    t.diagnostic(
      `scap probe (${probe.data.length} bytes) built for ${kernel.release} in ${(buildMs / 1000).toFixed(1)} s; in ${kernel.release} under TCG: ${v.verdict} in ${(v.ms / 1000).toFixed(1)} s: ${v.message}`,
    );
    t.diagnostic(`loader: ${summary ?? '(no summary)'}`);
    if (v.verdict === 'refused') t.diagnostic(`verifier log (end):\n${(v.detail ?? '').split('\n').slice(-20).join('\n')}`);
    // A real refusal is a finding, not a failure; a user-space error or a lost record is a failure of the tool.
    assert.ok(v.verdict === 'loaded' || v.verdict === 'refused', `${v.verdict}: ${v.message}\n${v.detail ?? ''}`);
    assert.equal(v.loader, 'legacy-bpf-loader');
    assert.equal(v.guestRelease, kernel.release);
    assert.match(console, /^FALCO-PROBES-VERDICT \{"loader_exit":[01],/m);
    assert.match(console, /^map tail_map ok: type 3 /m);
    assert.match(console, /^map frame_scratch_map ok: type 2 key 4 value \d+ entries 1 \(0 in the object: one per CPU\)/m);
    assert.match(summary ?? '', /^summary: 170 programs: \d+ loaded, \d+ refused, 0 not loaded; 11 maps: 0 refused$/);
    if (v.verdict === 'loaded') assert.equal(v.message, 'loaded 170 programs with the legacy loader');
    else assert.match(v.message, /^prog 'raw_tracepoint\/[^']+': /);
  });
});

test("summarizeLegacyRefusal: the first refused program and the verifier's reason, how many more, a refused map", () => {
  const log = [
    'probe /probe.o: 100 bytes, 10 sections; license "GPL"; kernel_version "6.1.0-57-amd64" (running 6.1.0-57-amd64)',
    'map counts ok: type 1 key 4 value 8 entries 1024 flags 0x0',
    'prog raw_tracepoint/a ok (10 insns)',
    'prog raw_tracepoint/filler/b refused (12 insns): Permission denied (EACCES)',
    '-- BEGIN PROG LOAD LOG raw_tracepoint/filler/b (last 5 of 5 lines) --',
    '0: R1=ctx(off=0,imm=0) R10=fp0',
    '7: (79) r0 = *(u64 *)(r0 +8)',
    'invalid access to map value, value_size=8 off=8 size=8',
    'R0 min value is outside of the allowed memory range',
    'processed 8 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0',
    '-- END PROG LOAD LOG --',
    'prog raw_tracepoint/filler/c refused (12 insns): Argument list too long (E2BIG)',
    'summary: 3 programs: 1 loaded, 2 refused, 0 not loaded; 1 maps: 0 refused',
  ].join('\n');
  const s = summarizeLegacyRefusal(log);
  assert.equal(
    s.summary,
    "prog 'raw_tracepoint/filler/b': invalid access to map value, value_size=8 off=8 size=8; R0 min value is outside of the allowed memory range (and 1 more program refused)",
  );
  assert.match(s.verifierLog ?? '', /^prog raw_tracepoint\/filler\/b refused[\s\S]*-- END PROG LOAD LOG --$/);
  // A log that filled the largest buffer kept its start only (kernels before 6.4): the errno, said so.
  const full = [
    'prog raw_tracepoint/filler/big refused (9000 insns): Argument list too long (E2BIG)',
    '-- BEGIN PROG LOAD LOG raw_tracepoint/filler/big (last 2 of 9999 lines; the log filled its buffer: this kernel keeps its start, so this is not its end) --',
    '4000: (bf) r1 = r6',
    '4001: (07) r1 += 8',
    '-- END PROG LOAD LOG --',
  ].join('\n');
  assert.equal(
    summarizeLegacyRefusal(full).summary,
    "prog 'raw_tracepoint/filler/big': Argument list too long (E2BIG) (the verifier's log was too long to keep its end)",
  );
  // Without a log (it could not be had), the kernel's errno.
  assert.equal(
    summarizeLegacyRefusal('prog tracepoint/x refused (3 insns): Invalid argument (EINVAL)\n').summary,
    "prog 'tracepoint/x': Invalid argument (EINVAL)",
  );
  assert.equal(
    summarizeLegacyRefusal(
      'map big refused: type 2 key 4 value 8 entries 1 flags 0x0: Cannot allocate memory (ENOMEM)\nprog tracepoint/x not loaded: it uses map big, which the kernel refused\n',
    ).summary,
    "the kernel refused to create map 'big': type 2 key 4 value 8 entries 1 flags 0x0: Cannot allocate memory (ENOMEM)",
  );
});
