import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { FalcoProbesError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { sha256File } from '../util/hash.js';
import type { Logger } from '../util/log.js';
import type { ProbeEntry } from '../repository/types.js';
import { chooseAccelerator, type AcceleratorChoice, type AcceleratorRequest } from './accelerator.js';
import { buildInitramfs, findGuestTools, MARKERS, readProbeObject, type GuestToolOptions } from './initramfs.js';
import { bootFile, type KernelImage } from './kernel-image.js';
import { runVm } from './qemu.js';
import { classify, readConsole, type Classified, type VerdictKind } from './verdict.js';

// One probe in one kernel: make the initramfs, boot, read the verdict.

export const DEFAULT_MEMORY_MIB = 512;
export const DEFAULT_VERIFY_TIMEOUT_MS = 300_000;
/** The guest has said all it will once its verdict line is complete. */
const VERDICT_LINE = new RegExp(`${MARKERS.verdict} \\{.*\\}\\n`);
/** The repository index keeps this much of a verdict's message. */
export const MAX_RECORDED_MESSAGE = 4096;

export interface VerifyLoadOptions {
  probeFile: string;
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
  logger?: Logger;
}

export interface LoadVerdict extends Classified {
  verdict: VerdictKind;
  /** sha256 of the kernel image (the bzImage as shipped, also when its uncompressed form was booted). */
  kernelImageSha256: string;
  accelerator: AcceleratorChoice;
  /** Wall time of the VM: boot, load, power off. */
  ms: number;
  /** `uname -r` in the guest. */
  guestRelease?: string;
  /** Programs pinned (loaded). */
  programs?: number;
  /** The probe used legacy map definitions (loaded with bpftool --legacy). */
  legacyMaps: boolean;
  consoleLog?: string;
}

/** Boot `kernelImage` with an initramfs that loads `probeFile`; the verdict says whether the kernel took it. */
export async function verifyLoad(o: VerifyLoadOptions): Promise<LoadVerdict> {
  const probe = await readProbeObject(o.probeFile);
  const tools = await findGuestTools(o.tools);
  const image = typeof o.kernelImage === 'string' ? { vmlinuz: o.kernelImage, sha256: (await sha256File(o.kernelImage)).sha256 } : o.kernelImage;
  const kernel = bootFile(image);
  const timeoutMs = o.timeoutMs ?? DEFAULT_VERIFY_TIMEOUT_MS;
  const memoryMiB = o.memoryMiB ?? DEFAULT_MEMORY_MIB;
  await mkdir(o.workDir, { recursive: true });
  const initrd = join(o.workDir, 'initramfs.cpio.gz');
  await writeFile(initrd, buildInitramfs(tools, probe));

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
  const vm = await runVm({
    ...(o.qemu ? { qemu: o.qemu } : {}),
    kernel,
    initrd,
    memoryMiB,
    accelerator: accelerator.accelerator,
    timeoutMs,
    finished: (console) => VERDICT_LINE.test(console),
    ...(o.signal ? { signal: o.signal } : {}),
  });
  if (o.consoleLog) {
    await mkdir(dirname(o.consoleLog), { recursive: true });
    await writeFileAtomic(o.consoleLog, `# ${vm.argv.join(' ')}\n# ${(vm.ms / 1000).toFixed(1)} s, exit ${vm.code ?? vm.signal}${vm.timedOut ? ', timed out' : ''}\n${vm.console}${vm.stderr ? `\n# qemu stderr:\n${vm.stderr}\n` : ''}`);
  }
  if (vm.aborted) throw new FalcoProbesError('internal', `verify-load of ${o.probeFile} was cancelled`, { cause: o.signal?.reason });
  const report = readConsole(vm.console);
  const classified = classify(vm, report, timeoutMs);
  return {
    ...classified,
    kernelImageSha256: image.sha256,
    accelerator,
    ms: vm.ms,
    legacyMaps: probe.legacyMaps,
    ...(report.release !== undefined ? { guestRelease: report.release } : {}),
    ...(report.verdict ? { programs: report.verdict.programs } : {}),
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
