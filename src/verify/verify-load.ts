import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { FalcoProbesError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { sha256File } from '../util/hash.js';
import type { Logger } from '../util/log.js';
import type { ProbeEntry } from '../repository/types.js';
import { chooseAccelerator, type AcceleratorChoice, type AcceleratorRequest } from './accelerator.js';
import { EM_BPF, readElf } from '../builders/elf.js';
import type { DriverKind } from '../graph/types.js';
import {
  buildInitramfs,
  buildKmodInitramfs,
  buildLegacyInitramfs,
  findGuestBusybox,
  findGuestTools,
  GUEST_NAME_RE,
  MARKERS,
  readKernelModule,
  readProbeObject,
  type GuestToolOptions,
} from './initramfs.js';
import { bootFile, type KernelImage } from './kernel-image.js';
import { obtainLegacyLoader, type LegacyLoaderOptions } from './legacy-loader.js';
import { runVm, type VmOutcome } from './qemu.js';
import { classify, readConsole, type Classified, type ConsoleReport, type VerdictKind } from './verdict.js';

// One driver (an eBPF probe or a kernel module) in one kernel: make the
// initramfs, boot, read the verdict. A run whose record did not arrive whole
// (`unknown`) boots once more: a cut console says nothing about the driver.
// A probe with legacy map definitions is loaded by the legacy loader
// (legacy-loader.ts), other probes by bpftool.

export const DEFAULT_MEMORY_MIB = 512;
export const DEFAULT_VERIFY_TIMEOUT_MS = 300_000;
/** The guest has said all it will once its record's end line is complete. */
const RECORD_END_LINE = new RegExp(`(^|\\n)${MARKERS.recordEnd}\\s+\\d+\\s+[0-9a-f]{64}[^\\n]*\\n`);
/** Boots of one driver at most: the first, and one more when its record did not arrive whole. */
export const MAX_ATTEMPTS = 2;
/** The repository index keeps this much of a verdict's message. */
export const MAX_RECORDED_MESSAGE = 4096;

export interface VerifyLoadOptions {
  /** The driver: an eBPF probe (`.o`) or a kernel module (`.ko`). */
  probeFile: string;
  /** Default: from the file (an ELF object for the BPF machine is a probe, anything else must be a kernel module). */
  kind?: DriverKind;
  /** A kernel module's device nodes are looked for as /dev/<module name>* and /dev/<prefix>* for these. */
  devicePrefixes?: readonly string[];
  /** The kernel: a bzImage (`vmlinuz`) path, or an image from the kernel image cache (booted uncompressed when it can be). */
  kernelImage: string | KernelImage;
  /** Private scratch directory (created; the initramfs is written here). */
  workDir: string;
  /** Default `auto`: KVM when a bounded first boot shows it works, else TCG. */
  accelerator?: AcceleratorRequest;
  /** Guest memory (default 512 MiB). */
  memoryMiB?: number;
  /** Hard limit on the VM, boot to power-off (default 300 s: software emulation runs the verifier of a large probe many times slower than hardware). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Write the whole serial console here. */
  consoleLog?: string;
  qemu?: string;
  tools?: GuestToolOptions;
  /** Where the legacy loader is compiled and cached (default: beside the package cache), and with which gcc. */
  legacyLoader?: Omit<LegacyLoaderOptions, 'logger'>;
  logger?: Logger;
}

/** What loaded the driver in the guest. */
export type GuestLoader = 'bpftool' | 'legacy-bpf-loader' | 'insmod';

export interface LoadVerdict extends Classified {
  verdict: VerdictKind;
  kind: DriverKind;
  /** VMs booted: 2 when the first one's record did not arrive whole. */
  attempts: number;
  /** sha256 of the kernel image (the bzImage as shipped, also when its uncompressed form was booted). */
  kernelImageSha256: string;
  accelerator: AcceleratorChoice;
  /** Wall time of the VMs: boot, load, power off (both boots when the first was retried). */
  ms: number;
  /** `uname -r` in the guest. */
  guestRelease?: string;
  /** Programs pinned (loaded). */
  programs?: number;
  /** The probe used legacy map definitions (a `maps` section): the legacy loader loaded it. */
  legacyMaps: boolean;
  /** What loaded the driver in the guest. */
  loader: GuestLoader;
  /** A kernel module's name (as /proc/modules lists it). */
  module?: string;
  /** A kernel module's device nodes found after insmod. */
  devices?: string[];
  consoleLog?: string;
}

async function kindOf(file: string): Promise<DriverKind> {
  let head: Buffer;
  try {
    head = await readFile(file);
  } catch (err) {
    throw new FalcoProbesError('usage', `cannot read the driver: ${(err as Error).message}`, { location: { file } });
  }
  return readElf(head, file).machine === EM_BPF ? 'bpf' : 'kmod';
}

interface Guest {
  initramfs: Buffer;
  legacyMaps: boolean;
  loader: GuestLoader;
  module?: string;
}

async function guestFor(o: VerifyLoadOptions, kind: DriverKind): Promise<Guest> {
  if (kind === 'bpf') {
    const probe = await readProbeObject(o.probeFile);
    if (probe.legacyMaps) {
      // libbpf 1.x (Debian 12's bpftool) refuses legacy map definitions before the kernel sees them.
      const [busybox, loader] = await Promise.all([
        findGuestBusybox(o.tools),
        obtainLegacyLoader({ ...(o.legacyLoader ?? {}), ...(o.logger ? { logger: o.logger } : {}) }),
      ]);
      return { initramfs: buildLegacyInitramfs(busybox, loader, probe), legacyMaps: true, loader: 'legacy-bpf-loader' };
    }
    const tools = await findGuestTools(o.tools);
    return { initramfs: buildInitramfs(tools, probe), legacyMaps: false, loader: 'bpftool' };
  }
  const module = await readKernelModule(o.probeFile);
  const busybox = await findGuestBusybox(o.tools);
  const prefixes = [module.name, ...(o.devicePrefixes ?? []).filter((p) => GUEST_NAME_RE.test(p))];
  return { initramfs: buildKmodInitramfs(busybox, module, prefixes), legacyMaps: false, loader: 'insmod', module: module.name };
}

/** The serial consoles of a driver's boots, each under a header naming qemu's command and how it ended. */
function consoleText(vms: VmOutcome[]): string {
  return vms
    .map((vm, i) => {
      const header = `# ${vm.argv.join(' ')}\n# ${vms.length > 1 ? `attempt ${i + 1}: ` : ''}${(vm.ms / 1000).toFixed(1)} s, exit ${vm.code ?? vm.signal}${vm.timedOut ? ', timed out' : ''}\n`;
      return `${header}${vm.console}${vm.stderr ? `\n# qemu stderr:\n${vm.stderr}\n` : ''}`;
    })
    .join('\n');
}

/** Boot `kernelImage` with an initramfs that loads `probeFile` (a probe or a module); the verdict says whether the kernel took it. */
export async function verifyLoad(o: VerifyLoadOptions): Promise<LoadVerdict> {
  const kind = o.kind ?? (await kindOf(o.probeFile));
  const guest = await guestFor(o, kind);
  const image =
    typeof o.kernelImage === 'string' ? { vmlinuz: o.kernelImage, sha256: (await sha256File(o.kernelImage)).sha256 } : o.kernelImage;
  const kernel = bootFile(image);
  const timeoutMs = o.timeoutMs ?? DEFAULT_VERIFY_TIMEOUT_MS;
  const memoryMiB = o.memoryMiB ?? DEFAULT_MEMORY_MIB;
  await mkdir(o.workDir, { recursive: true });
  const initrd = join(o.workDir, 'initramfs.cpio.gz');
  await writeFile(initrd, guest.initramfs);

  const accelerator = await chooseAccelerator({
    requested: o.accelerator ?? 'auto',
    kernel,
    workDir: o.workDir,
    memoryMiB,
    ...(o.qemu ? { qemu: o.qemu } : {}),
    ...(o.tools ? { tools: o.tools } : {}),
    ...(o.logger ? { logger: o.logger } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
  });
  const boot = async (): Promise<{ vm: VmOutcome; report: ConsoleReport; classified: Classified }> => {
    const vm = await runVm({
      ...(o.qemu ? { qemu: o.qemu } : {}),
      kernel,
      initrd,
      memoryMiB,
      accelerator: accelerator.accelerator,
      timeoutMs,
      finished: (console) => RECORD_END_LINE.test(console),
      ...(o.signal ? { signal: o.signal } : {}),
    });
    const report = readConsole(vm.console);
    return { vm, report, classified: classify(vm, report, timeoutMs, { subject: kind === 'bpf' ? 'probe' : 'module' }) };
  };
  const boots = [await boot()];
  // Only a record that did not arrive whole is worth another boot; a whole record saying `unknown` (the legacy loader could not read the probe) says the same again.
  const again = (b: (typeof boots)[number]) => b.classified.verdict === 'unknown' && b.report.record.state !== 'complete' && !b.vm.aborted;
  while (again(boots.at(-1)!) && boots.length < MAX_ATTEMPTS) {
    o.logger?.warn(`${o.probeFile}: ${boots.at(-1)!.classified.message}; booting once more`);
    boots.push(await boot());
  }
  const { vm, report, classified } = boots.at(-1)!;
  if (o.consoleLog) {
    await mkdir(dirname(o.consoleLog), { recursive: true });
    await writeFileAtomic(o.consoleLog, consoleText(boots.map((b) => b.vm)));
  }
  if (vm.aborted) throw new FalcoProbesError('internal', `the load test of ${o.probeFile} was cancelled`, { cause: o.signal?.reason });
  const devices = report.verdict?.kind === 'kmod' ? (report.parts?.devices ?? '').split('\n').filter(Boolean) : undefined;
  return {
    ...classified,
    kind,
    attempts: boots.length,
    kernelImageSha256: image.sha256,
    accelerator,
    ms: boots.reduce((sum, b) => sum + b.vm.ms, 0),
    legacyMaps: guest.legacyMaps,
    loader: guest.loader,
    ...(guest.module !== undefined ? { module: guest.module } : {}),
    ...(devices ? { devices } : {}),
    ...(report.release !== undefined ? { guestRelease: report.release } : {}),
    ...(report.verdict?.kind === 'bpf' || report.verdict?.kind === 'legacy' ? { programs: report.verdict.programs } : {}),
    ...(o.consoleLog ? { consoleLog: o.consoleLog } : {}),
  };
}

export type LoadRecord = NonNullable<ProbeEntry['load']>;

/** The verdict as the repository index keeps it: the message, then as much of the detail's end as fits (the verifier's reason is at its end). */
export function loadRecord(v: Pick<LoadVerdict, 'verdict' | 'kernelImageSha256' | 'message' | 'detail'>): LoadRecord {
  let message = v.message;
  if (v.detail && v.verdict !== 'loaded') {
    const room = MAX_RECORDED_MESSAGE - message.length - 40;
    if (room > 200) {
      const detail = v.detail.length > room ? `...${v.detail.slice(v.detail.length - room + 3)}` : v.detail;
      message = `${message}\n--- ${v.verdict === 'refused' ? 'log' : 'console'} ---\n${detail}`;
    }
  }
  if (message.length > MAX_RECORDED_MESSAGE) message = message.slice(0, MAX_RECORDED_MESSAGE);
  return { verdict: v.verdict, kernelImageSha256: v.kernelImageSha256, message };
}

/** Whether a verdict lets its target pass: only `loaded`, unless unverified probes are allowed. */
export function verdictPasses(verdict: VerdictKind, allowUnverified: boolean): boolean {
  return verdict === 'loaded' || allowUnverified;
}
