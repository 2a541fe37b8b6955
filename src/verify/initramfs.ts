import { execFile } from 'node:child_process';
import { access, constants, readFile } from 'node:fs/promises';
import { delimiter, join, posix } from 'node:path';
import { promisify } from 'node:util';
import { EM_BPF, ET_REL, moduleInfo, readElf, sectionContents, type ElfInfo } from '../builders/elf.js';
import { FalcoProbesError } from '../util/errors.js';
import { cpioNewcGzip, type CpioEntry } from './cpio.js';
import { elfInterpreter, isElf64 } from './elf-program.js';

// The guest's whole world: an initramfs with a static busybox (Debian's
// busybox-static), the driver, and an /init that loads it and prints a
// verdict on the serial console. An eBPF probe comes with the host's bpftool,
// its shared libraries and their loader; a kernel module needs only busybox
// (insmod, rmmod, dmesg). No network, no disk, no other kernel modules
// (Debian's kernels build in BPF, BTF, the serial console and devtmpfs).
//
// A probe with legacy map definitions (a `maps` section: Falco's legacy
// probe) is loaded by builder/legacy-loader's static program instead of
// bpftool, which libbpf 1.x makes refuse such objects (legacy-loader.ts);
// its guest holds busybox, the loader and the probe.
//
// What /init says counts only as a whole: it writes its findings to a file,
// prints them between RECORD-BEGIN and a RECORD-END line that carries their
// length and sha256, waits for the serial line to drain, and powers off. A
// console cut anywhere (the kernel stopped, qemu was killed, the line lost
// bytes) gives no record, so verdict.ts reads no verdict from it.
//
// Busybox is never linked under its applet names: `busybox --list` includes
// `busybox` itself, and linking every name makes /bin/busybox a link to
// itself, which the kernel fails to run (-ELOOP). /init calls `busybox
// <applet>` instead.

const execFileAsync = promisify(execFile);

/** Lines /init prints; verdict.ts reads them back from the console. */
export const MARKERS = {
  init: 'FALCO-PROBES-INIT',
  logBegin: 'FALCO-PROBES-LOG-BEGIN',
  logEnd: 'FALCO-PROBES-LOG-END',
  verdict: 'FALCO-PROBES-VERDICT',
  /** A kernel module's record: one part of what the guest saw (`insmod`, `modules`, `devices`, `rmmod`, `dmesg`). */
  part: 'FALCO-PROBES-PART',
  recordBegin: 'FALCO-PROBES-RECORD-BEGIN',
  /** `FALCO-PROBES-RECORD-END <bytes> <sha256>` of the text between the begin line and this one. */
  recordEnd: 'FALCO-PROBES-RECORD-END',
  alive: 'FALCO-PROBES-ALIVE',
} as const;

/** The parts of a kernel module's record, in the order /init prints them. */
export const KMOD_PARTS = ['insmod', 'modules', 'devices', 'rmmod', 'dmesg'] as const;
export type KmodPart = (typeof KMOD_PARTS)[number];

/** Where the probe sits in the guest. */
const GUEST_PROBE = '/probe.o';
/** Where a kernel module sits in the guest. */
const GUEST_MODULE = '/driver.ko';
/** The most of the kernel's messages about a module the guest prints. */
const DMESG_TAIL_BYTES = 16 * 1024;
const PIN_DIR = '/sys/fs/bpf/p';
/** The most of bpftool's output the guest prints (a refused Falco probe's verifier log can run to megabytes; its end says why). */
const LOG_TAIL_BYTES = 64 * 1024;
/** The legacy loader's output beyond this is cut in its middle: its start holds the first refusals' logs, its end the summary. */
const LEGACY_LOG_BYTES = 64 * 1024;
const LEGACY_LOG_HEAD_BYTES = 48 * 1024;

export interface GuestFile {
  /** Absolute path inside the guest. */
  guestPath: string;
  /** Where it was read from on this host. */
  hostPath: string;
  data: Buffer;
}

export interface GuestTools {
  busybox: GuestFile;
  bpftool: GuestFile;
  /** bpftool's shared libraries and its loader, at the paths the loader searches. */
  libraries: GuestFile[];
}

export interface GuestToolOptions {
  /** Default: /bin/busybox or /usr/bin/busybox (Debian's busybox-static). */
  busybox?: string;
  /** Default: bpftool from /usr/sbin, /sbin or PATH. */
  bpftool?: string;
}

const GUEST_PATH_RE = /^(\/[A-Za-z0-9._+-]+)+$/;
const EM_X86_64 = 62;

async function firstExecutable(candidates: string[]): Promise<string | undefined> {
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return c;
    } catch {
      // next
    }
  }
  return undefined;
}

async function findBusybox(explicit: string | undefined): Promise<GuestFile> {
  const path = explicit ?? (await firstExecutable(['/bin/busybox', '/usr/bin/busybox']));
  const hint =
    "install Debian's busybox-static (scripts/setup-debian.sh does): the guest has no libraries for a dynamically linked busybox";
  if (!path) throw new FalcoProbesError('usage', 'busybox is not installed', { hint });
  const data = await readFile(path);
  if (!isElf64(data)) throw new FalcoProbesError('usage', `${path} is not a 64-bit ELF program`, { location: { file: path }, hint });
  const interp = elfInterpreter(data);
  if (interp !== undefined)
    throw new FalcoProbesError('usage', `${path} is dynamically linked (interpreter ${interp}); the guest needs a static busybox`, {
      location: { file: path },
      hint,
    });
  return { guestPath: '/bin/busybox', hostPath: path, data };
}

async function findBpftool(explicit: string | undefined): Promise<string> {
  const fromPath = (process.env['PATH'] ?? '')
    .split(delimiter)
    .filter(Boolean)
    .map((d) => join(d, 'bpftool'));
  const path = explicit ?? (await firstExecutable(['/usr/sbin/bpftool', '/sbin/bpftool', ...fromPath]));
  if (!path)
    throw new FalcoProbesError('usage', 'bpftool is not installed', {
      hint: "install Debian's bpftool package (scripts/setup-debian.sh does)",
    });
  return path;
}

/** `ldd` output: every library with a path (`name => /path (addr)`) and the loader line (`/lib64/ld-... (addr)`). */
export function parseLdd(output: string, program: string): string[] {
  const paths: string[] = [];
  for (const raw of output.split('\n')) {
    const line = raw.trim();
    if (line === '' || /^linux-(vdso|gate)\.so/.test(line)) continue;
    if (/statically linked|not a dynamic executable/.test(line)) continue;
    const arrow = /^(\S+) => (.*?)(?: \(0x[0-9a-f]+\))?$/.exec(line);
    if (arrow) {
      const target = arrow[2]!;
      if (target === 'not found')
        throw new FalcoProbesError('usage', `${program} needs ${arrow[1]}, which is not installed`, {
          location: { file: program },
          hint: 'reinstall bpftool with its dependencies',
        });
      if (target !== '') paths.push(target);
      continue;
    }
    const direct = /^(\/\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (direct) paths.push(direct[1]!);
  }
  for (const p of paths)
    if (!GUEST_PATH_RE.test(p) || p.split('/').includes('..'))
      throw new FalcoProbesError('internal', `ldd ${program} names an unexpected library path ${JSON.stringify(p)}`);
  return [...new Set(paths)];
}

async function libraryFiles(program: string, data: Buffer): Promise<GuestFile[]> {
  const interp = elfInterpreter(data);
  if (interp === undefined) return [];
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync('ldd', [program], {
      timeout: 15_000,
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', LC_ALL: 'C' },
    }));
  } catch (err) {
    throw new FalcoProbesError('usage', `cannot list the libraries of ${program} with ldd: ${(err as Error).message.split('\n')[0]}`, {
      location: { file: program },
      hint: 'ldd comes with libc-bin',
    });
  }
  const paths = parseLdd(stdout, program);
  if (!paths.includes(interp)) paths.push(interp);
  return Promise.all(paths.map(async (p) => ({ guestPath: p, hostPath: p, data: await readFile(p) })));
}

const toolCache = new Map<string, Promise<GuestTools>>();
const busyboxCache = new Map<string, Promise<GuestFile>>();

/** The static busybox alone (a kernel module's guest, the KVM check), read once per process. */
export function findGuestBusybox(options: Pick<GuestToolOptions, 'busybox'> = {}): Promise<GuestFile> {
  const key = options.busybox ?? '';
  let found = busyboxCache.get(key);
  if (!found) {
    found = findBusybox(options.busybox);
    found.catch(() => busyboxCache.delete(key));
    busyboxCache.set(key, found);
  }
  return found;
}

/** busybox, bpftool and bpftool's libraries, read once per process. */
export function findGuestTools(options: GuestToolOptions = {}): Promise<GuestTools> {
  const key = `${options.busybox ?? ''}\0${options.bpftool ?? ''}`;
  let found = toolCache.get(key);
  if (!found) {
    found = (async () => {
      const busybox = await findGuestBusybox(options);
      const bpftoolPath = await findBpftool(options.bpftool);
      const data = await readFile(bpftoolPath);
      return {
        busybox,
        bpftool: { guestPath: '/bin/bpftool', hostPath: bpftoolPath, data },
        libraries: await libraryFiles(bpftoolPath, data),
      };
    })();
    found.catch(() => toolCache.delete(key));
    toolCache.set(key, found);
  }
  return found;
}

export interface ProbeObject {
  data: Buffer;
  /** The object defines maps the legacy way (a `maps` section: Falco's legacy probe), which libbpf 1.x refuses: the guest loads it with the legacy loader. */
  legacyMaps: boolean;
}

/** Read a probe and check that it is a BPF object a loader can take. */
export async function readProbeObject(file: string): Promise<ProbeObject> {
  let data: Buffer;
  try {
    data = await readFile(file);
  } catch (err) {
    throw new FalcoProbesError('usage', `cannot read the probe: ${(err as Error).message}`, { location: { file } });
  }
  const info = readElf(data, file);
  if (info.machine !== EM_BPF)
    throw new FalcoProbesError('input', `not a BPF object (ELF machine ${info.machine}, BPF is ${EM_BPF})`, { location: { file } });
  return { data, legacyMaps: info.sections.includes('maps') };
}

export interface KernelModuleObject {
  data: Buffer;
  /** The module's name, as /proc/modules and rmmod know it (`scap`, `falco`). */
  name: string;
  /** `.modinfo`'s vermagic (`6.1.0-57-amd64 SMP preempt mod_unload modversions `). */
  vermagic?: string;
}

/** Module and device names go into /init: kept to what kernels use. */
export const GUEST_NAME_RE = /^[A-Za-z0-9_-]{1,55}$/;

/** The name in the module's own `struct module` (`.gnu.linkonce.this_module`, after `state` and `list` on a 64-bit kernel), for modules older than `.modinfo`'s `name=`. */
function thisModuleName(buf: Buffer, info: ElfInfo): string | undefined {
  const section = sectionContents(buf, info, '.gnu.linkonce.this_module');
  if (!section || section.length < 24 + 56) return undefined;
  const raw = section
    .subarray(24, 24 + 56)
    .toString('latin1')
    .replace(/\0.*$/s, '');
  return GUEST_NAME_RE.test(raw) ? raw : undefined;
}

/** Read a kernel module and check that it is one: an x86_64 relocatable ELF with `.modinfo`, its name known. */
export async function readKernelModule(file: string): Promise<KernelModuleObject> {
  let data: Buffer;
  try {
    data = await readFile(file);
  } catch (err) {
    throw new FalcoProbesError('usage', `cannot read the kernel module: ${(err as Error).message}`, { location: { file } });
  }
  const info = readElf(data, file);
  if (info.machine !== EM_X86_64 || info.type !== ET_REL)
    throw new FalcoProbesError('input', `not an x86_64 kernel module (ELF type ${info.type}, machine ${info.machine})`, {
      location: { file },
    });
  const modinfo = moduleInfo(data, info);
  const vermagic = modinfo.get('vermagic')?.[0];
  if (vermagic === undefined) throw new FalcoProbesError('input', 'not a kernel module: no vermagic in .modinfo', { location: { file } });
  // The kernel names a module after the object kbuild linked (KBUILD_MODNAME): `-` becomes `_`.
  const name = modinfo.get('name')?.[0] ?? thisModuleName(data, info);
  if (name === undefined || !GUEST_NAME_RE.test(name))
    throw new FalcoProbesError(
      'input',
      `the kernel module's name ${name === undefined ? 'cannot be read' : JSON.stringify(name)} (.modinfo name=, or its struct module) is not one busybox's rmmod can take`,
      { location: { file } },
    );
  return { data, name, vermagic };
}

/**
 * The end of every /init: the record (the file /tmp/record, made printable)
 * between its begin line and its end line, then power off. The console's
 * loglevel drops first so that no kernel message lands inside the record;
 * setting the console's mode with stty waits (TCSADRAIN) until the serial
 * line has sent everything, so poweroff cuts nothing.
 */
function recordAndPowerOff(): string {
  return `# Printable ASCII only: the console turns CR and escapes into other bytes, which would spoil the checksum.
$B tr '\\t' ' ' </tmp/record.raw | $B tr -cd '\\n -~' >/tmp/record
$B dmesg -n 1
echo "${MARKERS.recordBegin}"
$B cat /tmp/record
$B sync
echo "${MARKERS.recordEnd} $($B wc -c </tmp/record) $($B sha256sum /tmp/record | $B cut -d ' ' -f 1)"
$B stty -F /dev/console onlcr 2>/dev/null || $B sleep 1
$B poweroff -f
`;
}

/**
 * /init: mount what bpftool needs, load every program of the probe without
 * attaching it, print bpftool's output and the verdict between markers, and
 * power off. Run by busybox's shell; every command goes through busybox.
 * verify-load gives a legacy probe to the legacy loader instead
 * (legacyInitScript); bpftool gets `--legacy` for one only when called
 * without it (libbpf 0.x honours the flag, libbpf 1.x refuses legacy maps
 * all the same).
 */
export function initScript(opts: { legacyMaps: boolean }): string {
  const legacy = opts.legacyMaps ? ' --legacy' : '';
  return `#!/bin/busybox sh
# falco-probes verify-load: load one probe into this kernel, say what happened, power off.
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev 2>/tmp/mount.err
bpffs=1
$B mount -t bpf bpf /sys/fs/bpf 2>>/tmp/mount.err || bpffs=0
echo "${MARKERS.init} $($B uname -r)"
/bin/bpftool${legacy} prog loadall ${GUEST_PROBE} ${PIN_DIR} >/tmp/load.log 2>&1
rc=$?
programs=$($B ls ${PIN_DIR} 2>/dev/null | $B wc -l)
{
echo "${MARKERS.logBegin}"
$B cat /tmp/mount.err
$B tail -c ${LOG_TAIL_BYTES} /tmp/load.log
echo
echo "${MARKERS.logEnd}"
echo "${MARKERS.verdict} {\\"bpftool_exit\\":$rc,\\"programs\\":$programs,\\"bpffs\\":$bpffs}"
} >/tmp/record.raw
${recordAndPowerOff()}`;
}

/**
 * /init for a probe with legacy map definitions: the legacy loader
 * (builder/legacy-loader) creates its maps, relocates and loads every program
 * without attaching it, and prints a line per map and program, the end of the
 * verifier's log of a refused program, and a summary; its exit code is 0 (all
 * loaded), 1 (the kernel refused a program or map) or 2 (the object could not
 * be read: no verdict of the kernel). The verdict line carries the exit code
 * and the programs loaded and refused.
 */
export function legacyInitScript(opts: { loader: string }): string {
  if (!GUEST_PATH_RE.test(opts.loader))
    throw new FalcoProbesError('internal', `legacy loader path ${JSON.stringify(opts.loader)} cannot go into /init`);
  return `#!/bin/busybox sh
# falco-probes verify-load: load one legacy probe into this kernel with the legacy loader, say what happened, power off.
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev 2>/tmp/mount.err
echo "${MARKERS.init} $($B uname -r)"
${opts.loader} ${GUEST_PROBE} >/tmp/load.log 2>&1
rc=$?
loaded=$($B grep -c '^prog .* ok' /tmp/load.log)
refused=$($B grep -c '^prog .* refused' /tmp/load.log)
size=$($B wc -c </tmp/load.log)
{
echo "${MARKERS.logBegin}"
$B cat /tmp/mount.err
if [ "$size" -le ${LEGACY_LOG_BYTES} ]; then
  $B cat /tmp/load.log
else
  $B head -c ${LEGACY_LOG_HEAD_BYTES} /tmp/load.log
  echo
  echo "... $((size - ${LEGACY_LOG_BYTES})) bytes of the loader's output left out ..."
  $B tail -c ${LEGACY_LOG_BYTES - LEGACY_LOG_HEAD_BYTES} /tmp/load.log
fi
echo
echo "${MARKERS.logEnd}"
echo "${MARKERS.verdict} {\\"loader_exit\\":$rc,\\"programs\\":$loaded,\\"refused\\":$refused}"
} >/tmp/record.raw
${recordAndPowerOff()}`;
}

/**
 * /init for a kernel module: insmod it, look for what it made (its line in
 * /proc/modules, device nodes /dev/<prefix>* on devtmpfs, which the kernel
 * creates before insmod returns), rmmod it, and keep the kernel's messages
 * about it (its name, taint, bugs). Exit codes go into the verdict line,
 * outputs into the parts of the record.
 */
export function kmodInitScript(opts: { moduleName: string; devicePrefixes: readonly string[] }): string {
  const name = opts.moduleName;
  const prefixes = [...new Set(opts.devicePrefixes)];
  for (const n of [name, ...prefixes])
    if (!GUEST_NAME_RE.test(n)) throw new FalcoProbesError('internal', `module or device name ${JSON.stringify(n)} cannot go into /init`);
  const part = (p: KmodPart) => `echo "${MARKERS.part} ${p}"`;
  return `#!/bin/busybox sh
# falco-probes verify-load: load one kernel module into this kernel, say what happened, power off.
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev 2>/tmp/mount.err
echo "${MARKERS.init} $($B uname -r)"
$B insmod ${GUEST_MODULE} >/tmp/insmod.log 2>&1
insmod_rc=$?
listed=0
$B grep '^${name} ' /proc/modules >/tmp/modules.log && listed=1
for d in ${prefixes.map((p) => `/dev/${p}*`).join(' ')}; do [ -e "$d" ] && echo "$d"; done >/tmp/devices.log
devices=$($B wc -l </tmp/devices.log)
rmmod_rc=-1
unloaded=0
if [ $listed = 1 ]; then
  $B rmmod ${name} >/tmp/rmmod.log 2>&1
  rmmod_rc=$?
  $B grep -q '^${name} ' /proc/modules || unloaded=1
fi
$B dmesg | $B grep -i -e '${name}' -e taint -e 'BUG:' -e 'Oops' -e 'WARNING:' -e 'Call Trace' | $B tail -c ${DMESG_TAIL_BYTES} >/tmp/dmesg.log
{
echo "${MARKERS.logBegin}"
${part('insmod')}
$B cat /tmp/mount.err /tmp/insmod.log
${part('modules')}
$B cat /tmp/modules.log
${part('devices')}
$B cat /tmp/devices.log
${part('rmmod')}
$B cat /tmp/rmmod.log 2>/dev/null
${part('dmesg')}
$B cat /tmp/dmesg.log
echo "${MARKERS.logEnd}"
echo "${MARKERS.verdict} {\\"insmod_exit\\":$insmod_rc,\\"listed\\":$listed,\\"devices\\":$devices,\\"rmmod_exit\\":$rmmod_rc,\\"unloaded\\":$unloaded}"
} >/tmp/record.raw
${recordAndPowerOff()}`;
}

/** /init of the accelerator check: it only has to run. */
export function aliveScript(): string {
  return `#!/bin/busybox sh
echo "${MARKERS.alive}"
/bin/busybox poweroff -f
`;
}

function withParents(files: { guestPath: string; data: Buffer; mode: number }[]): CpioEntry[] {
  const dirs = new Set<string>(['dev', 'proc', 'sys', 'tmp']);
  const entries: CpioEntry[] = [];
  for (const f of files) {
    const name = f.guestPath.replace(/^\//, '');
    for (let d = posix.dirname(name); d !== '.'; d = posix.dirname(d)) dirs.add(d);
    entries.push({ name, type: 'file', mode: f.mode, data: f.data });
  }
  for (const d of dirs) entries.push({ name: d, type: 'dir', mode: d === 'tmp' ? 0o1777 : 0o755 });
  // The kernel opens /dev/console for init's output before anything is mounted.
  entries.push({ name: 'dev/console', type: 'char', mode: 0o600, major: 5, minor: 1 });
  return entries;
}

/** The initramfs (gzip-compressed newc cpio) that loads `probe`. Same inputs, same bytes. */
export function buildInitramfs(tools: GuestTools, probe: ProbeObject): Buffer {
  return cpioNewcGzip(
    withParents([
      { guestPath: '/init', data: Buffer.from(initScript({ legacyMaps: probe.legacyMaps })), mode: 0o755 },
      { guestPath: tools.busybox.guestPath, data: tools.busybox.data, mode: 0o755 },
      { guestPath: tools.bpftool.guestPath, data: tools.bpftool.data, mode: 0o755 },
      ...tools.libraries.map((l) => ({ guestPath: l.guestPath, data: l.data, mode: 0o755 })),
      { guestPath: GUEST_PROBE, data: probe.data, mode: 0o644 },
    ]),
  );
}

/** The initramfs that loads a legacy probe with the legacy loader: busybox, the loader (static), the probe, /init. No bpftool. Same inputs, same bytes. */
export function buildLegacyInitramfs(busybox: GuestFile, loader: GuestFile, probe: ProbeObject): Buffer {
  return cpioNewcGzip(
    withParents([
      { guestPath: '/init', data: Buffer.from(legacyInitScript({ loader: loader.guestPath })), mode: 0o755 },
      { guestPath: busybox.guestPath, data: busybox.data, mode: 0o755 },
      { guestPath: loader.guestPath, data: loader.data, mode: 0o755 },
      { guestPath: GUEST_PROBE, data: probe.data, mode: 0o644 },
    ]),
  );
}

/** The initramfs that loads a kernel module: busybox, the module, /init. No bpftool. Same inputs, same bytes. */
export function buildKmodInitramfs(busybox: GuestFile, module: KernelModuleObject, devicePrefixes: readonly string[]): Buffer {
  return cpioNewcGzip(
    withParents([
      { guestPath: '/init', data: Buffer.from(kmodInitScript({ moduleName: module.name, devicePrefixes })), mode: 0o755 },
      { guestPath: busybox.guestPath, data: busybox.data, mode: 0o755 },
      { guestPath: GUEST_MODULE, data: module.data, mode: 0o644 },
    ]),
  );
}

/** A busybox-only initramfs whose /init prints a marker and powers off (for the KVM check). */
export function buildAliveInitramfs(tools: Pick<GuestTools, 'busybox'>): Buffer {
  return cpioNewcGzip(
    withParents([
      { guestPath: '/init', data: Buffer.from(aliveScript()), mode: 0o755 },
      { guestPath: tools.busybox.guestPath, data: tools.busybox.data, mode: 0o755 },
    ]),
  );
}
