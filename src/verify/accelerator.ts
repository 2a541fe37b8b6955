import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FalcoProbesError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { buildAliveInitramfs, findGuestBusybox, MARKERS, type GuestToolOptions } from './initramfs.js';
import { DEFAULT_QEMU, kvmDeviceUsable, runVm, type Accelerator } from './qemu.js';

// KVM or software emulation (TCG). /dev/kvm existing proves little: on
// nested hypervisors without vmx/svm it opens, and a stock kernel then hangs
// or fails emulation early in boot. So `auto` boots the first kernel once
// under KVM with an initramfs that only prints a line, bounded in time; if
// the line comes, KVM is used, otherwise TCG. The answer is kept for the
// rest of the process.

export type AcceleratorRequest = Accelerator | 'auto';

export interface AcceleratorChoice {
  accelerator: Accelerator;
  /** Why: `requested`, `no /dev/kvm`, `a KVM boot reached /init in 1.2 s`, `a KVM boot did not reach /init within 20 s`. */
  reason: string;
  /** Time the check cost (0 when no check boot was needed). */
  checkMs: number;
}

export const DEFAULT_KVM_CHECK_TIMEOUT_MS = 20_000;

export interface ChooseAcceleratorOptions {
  requested: AcceleratorRequest;
  /** A kernel to try under KVM (the first one the run boots). */
  kernel: string;
  /** Scratch directory for the check's initramfs. */
  workDir: string;
  qemu?: string;
  memoryMiB?: number;
  checkTimeoutMs?: number;
  tools?: GuestToolOptions;
  logger?: Logger;
  signal?: AbortSignal;
}

const decided = new Map<string, Promise<AcceleratorChoice>>();

export function parseAcceleratorRequest(value: unknown, flag = '--accel'): AcceleratorRequest {
  if (value === undefined) return 'auto';
  if (value === 'auto' || value === 'kvm' || value === 'tcg') return value;
  throw new FalcoProbesError('usage', `${flag} expects kvm, tcg or auto, got ${JSON.stringify(value)}`);
}

/** The accelerator to use; `auto` is decided once per process (and qemu binary), concurrent callers share the check. */
export function chooseAccelerator(o: ChooseAcceleratorOptions): Promise<AcceleratorChoice> {
  if (o.requested === 'tcg') return Promise.resolve({ accelerator: 'tcg', reason: 'requested', checkMs: 0 });
  if (o.requested === 'kvm')
    return kvmDeviceUsable().then((dev) => {
      if (!dev.ok)
        throw new FalcoProbesError('usage', `--accel kvm: ${dev.reason}`, { hint: 'use --accel tcg (software emulation) or auto' });
      return { accelerator: 'kvm', reason: 'requested', checkMs: 0 };
    });
  const key = o.qemu ?? DEFAULT_QEMU;
  let choice = decided.get(key);
  if (!choice) {
    choice = checkKvm(o);
    // A cancelled check decides nothing.
    choice.catch(() => decided.delete(key));
    decided.set(key, choice);
  }
  return choice;
}

/** Forget the decision (tests, benchmarks). */
export function forgetAcceleratorChoice(): void {
  decided.clear();
}

async function checkKvm(o: ChooseAcceleratorOptions): Promise<AcceleratorChoice> {
  const dev = await kvmDeviceUsable();
  if (!dev.ok) return { accelerator: 'tcg', reason: dev.reason, checkMs: 0 };
  const timeoutMs = o.checkTimeoutMs ?? DEFAULT_KVM_CHECK_TIMEOUT_MS;
  const busybox = await findGuestBusybox(o.tools);
  await mkdir(o.workDir, { recursive: true });
  const initrd = join(o.workDir, 'kvm-check.cpio.gz');
  await writeFile(initrd, buildAliveInitramfs({ busybox }));
  try {
    const vm = await runVm({
      ...(o.qemu ? { qemu: o.qemu } : {}),
      kernel: o.kernel,
      initrd,
      memoryMiB: o.memoryMiB ?? 256,
      accelerator: 'kvm',
      timeoutMs,
      finished: (console) => console.includes(MARKERS.alive),
      graceMs: 2_000,
      ...(o.signal ? { signal: o.signal } : {}),
    });
    if (vm.aborted) throw new FalcoProbesError('internal', 'the KVM check was cancelled', { cause: o.signal?.reason });
    const seconds = (vm.ms / 1000).toFixed(1);
    if (vm.console.includes(MARKERS.alive))
      return { accelerator: 'kvm', reason: `a KVM boot reached /init in ${seconds} s`, checkMs: vm.ms };
    const why = vm.timedOut
      ? `a KVM boot did not reach /init within ${Math.round(timeoutMs / 1000)} s`
      : `a KVM boot ended without reaching /init (${vm.stderr.split('\n')[0] || `qemu exit ${vm.code ?? vm.signal}`})`;
    o.logger?.info(`${why}: using software emulation (TCG)`);
    return { accelerator: 'tcg', reason: why, checkMs: vm.ms };
  } finally {
    await rm(initrd, { force: true });
  }
}
