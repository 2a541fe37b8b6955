import { readFile } from 'node:fs/promises';
import { availableParallelism, freemem } from 'node:os';
import { join } from 'node:path';
import pLimit from 'p-limit';
import type { PackageRef } from '../config/types.js';
import type { Target } from '../graph/types.js';
import { FalcoProbesError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { AcceleratorRequest } from './accelerator.js';
import { findGuestTools, GUEST_NAME_RE, type GuestToolOptions } from './initramfs.js';
import { createKernelImageCache, type KernelImageCache } from './kernel-image.js';
import type { LegacyLoaderOptions } from './legacy-loader.js';
import { DEFAULT_QEMU, qemuVersion } from './qemu.js';
import { DEFAULT_MEMORY_MIB, DEFAULT_VERIFY_TIMEOUT_MS, verifyLoad, type LoadVerdict } from './verify-load.js';

// What a run holds to verify its targets' probes: the kernel image of each
// target's lockfile entry (fetched like any package, unpacked once per
// package), and a limit on VMs running at once that counts memory as well
// as the requested number of jobs. `build --verify-load` and `verify-load`
// both use it.

/** Memory one VM costs on the host beyond its guest memory (qemu itself, TCG's translation cache). */
export const QEMU_OVERHEAD_MIB = 128;
/** Memory left to everything else on the host. */
export const HOST_RESERVE_MIB = 512;

/** Unpacked kernel images live beside the package cache (as driver sources do), one folder per image package. */
export function kernelImageCacheDir(packageCacheDir: string): string {
  return join(packageCacheDir, '..', 'kernel-images');
}

/** The machine of the guests this tool can boot: qemu-system-x86_64 with the host's busybox and bpftool. */
export const GUEST_ARCH = 'x86_64';

/**
 * Why the target's kernel cannot be booted here, or undefined when it can:
 * another machine than the guests', or no bootable image in its lockfile
 * entry (COS publishes none). Such a target is left unverified (not
 * failed): its probe may well load, no VM can tell.
 */
export function noGuestReason(target: Pick<Target, 'arch' | 'os' | 'kernel'>): string | undefined {
  if (target.arch !== GUEST_ARCH)
    return `no ${target.arch} guest: qemu-system-${target.arch} and an ${target.arch} busybox/bpftool are needed`;
  if (!target.kernel.packages.some((p) => p.role === IMAGE_ROLE))
    return `no kernel image to boot: kernels/${target.os}.lock.yaml lists no package with role "${IMAGE_ROLE}" for ${target.kernel.name} (add the image to kernels/${target.os}.yaml and resolve again; COS publishes no image package)`;
  return undefined;
}

/**
 * Where a kernel module's device nodes are looked for: /dev/<driver name>*
 * and /dev/<module name>* (`scap`, `falco`); the module's own name is added
 * by verifyLoad. Names /init cannot hold are left out.
 */
export function devicePrefixesOf(target: Pick<Target, 'driver'>): string[] {
  const names = [target.driver.name, ...(target.driver.module ? [target.driver.module.replace(/\.ko$/, '')] : [])];
  return [...new Set(names.filter((n) => GUEST_NAME_RE.test(n)))];
}

/** The lockfile role of the bootable kernel package. */
export const IMAGE_ROLE = 'image';

export function imagePackageOf(target: Target): PackageRef {
  const pkg = target.kernel.packages.find((p) => p.role === IMAGE_ROLE);
  if (!pkg)
    throw new FalcoProbesError(
      'config',
      `${target.label}: the lockfile entry of kernel ${target.kernel.name} names no bootable image (a package with role "${IMAGE_ROLE}")`,
      {
        location: { file: `kernels/${target.os}.lock.yaml` },
        hint: `list the image package in kernels/${target.os}.yaml (apt: \`image: [linux-image-{release} | linux-image-{release}-unsigned]\`) and run falco-probes resolve ${target.os}`,
      },
    );
  return pkg;
}

/** MemAvailable from /proc/meminfo (what the kernel can give without swapping), else Node's free memory. */
export async function availableMemoryMiB(): Promise<number> {
  try {
    const m = /^MemAvailable:\s+(\d+) kB$/m.exec(await readFile('/proc/meminfo', 'utf8'));
    if (m) return Math.floor(Number(m[1]) / 1024);
  } catch {
    // not Linux
  }
  return Math.floor(freemem() / 1024 / 1024);
}

/** How many VMs of `memoryMiB` may run at once: at most `jobs`, and no more than available memory holds. */
export function vmSlots(jobs: number, memoryMiB: number, availableMiB: number): number {
  const fit = Math.floor((availableMiB - HOST_RESERVE_MIB) / (memoryMiB + QEMU_OVERHEAD_MIB));
  if (fit < 1)
    throw new FalcoProbesError(
      'usage',
      `not enough free memory for one VM of ${memoryMiB} MiB: ${availableMiB} MiB available, ${HOST_RESERVE_MIB} MiB kept for the host, ${QEMU_OVERHEAD_MIB} MiB for qemu`,
      {
        hint: 'free some memory, or give the guests less with --memory',
      },
    );
  return Math.min(jobs, fit);
}

export interface LoadVerifierOptions {
  /** Fetches a lockfile package into the cache and returns its path (the run's fetcher). */
  fetch: (pkg: PackageRef, options?: { signal?: AbortSignal }) => Promise<string>;
  /** Where unpacked kernel images are kept (`<package cache>/../kernel-images`). */
  imageCacheDir: string;
  /** At most this many VMs at once (default: the number of cores), fewer when memory is short. */
  jobs?: number;
  memoryMiB?: number;
  timeoutMs?: number;
  accelerator?: AcceleratorRequest;
  qemu?: string;
  tools?: GuestToolOptions;
  /** The legacy loader (for probes with legacy map definitions): default compiled with gcc into `<imageCacheDir>/../legacy-loader/`. */
  legacyLoader?: Omit<LegacyLoaderOptions, 'logger'>;
  logger?: Logger;
  signal?: AbortSignal;
}

export interface VerifyTargetOptions {
  /** Private scratch directory (the initramfs). */
  workDir: string;
  /** Where to write the serial console. */
  consoleLog?: string;
}

export interface LoadVerifier {
  /** VMs run at once. */
  readonly slots: number;
  readonly images: KernelImageCache;
  /** Boot the target's kernel and load `probeFile` (the target's built probe). */
  verify(target: Target, probeFile: string, options: VerifyTargetOptions): Promise<LoadVerdict>;
}

export async function createLoadVerifier(o: LoadVerifierOptions): Promise<LoadVerifier> {
  const memoryMiB = o.memoryMiB ?? DEFAULT_MEMORY_MIB;
  const jobs = o.jobs ?? availableParallelism();
  const available = await availableMemoryMiB();
  const slots = vmSlots(jobs, memoryMiB, available);
  if (slots < jobs)
    o.logger?.info(
      `verify-load: ${slots} VM${slots === 1 ? '' : 's'} at once, not ${jobs}: ${available} MiB of memory available, ${memoryMiB + QEMU_OVERHEAD_MIB} MiB per VM`,
    );
  // Missing tools fail the run here, before any package is fetched.
  await qemuVersion(o.qemu ?? DEFAULT_QEMU);
  await findGuestTools(o.tools);
  const limit = pLimit(slots);
  const images = createKernelImageCache(o.imageCacheDir, o.logger);
  // Compiled on the first legacy probe (a run without one needs no gcc), into the cache beside the kernel images.
  const legacyLoader = { cacheRoot: join(o.imageCacheDir, '..'), ...(o.legacyLoader ?? {}) };

  return {
    slots,
    images,
    async verify(target, probeFile, options) {
      const noGuest = noGuestReason(target);
      // The run leaves such targets unverified before asking for a VM (run.ts).
      if (noGuest) throw new FalcoProbesError('internal', `${target.label}: ${noGuest}`);
      const pkg = imagePackageOf(target);
      const file = await o.fetch(pkg, o.signal ? { signal: o.signal } : {});
      const image = await images.prepare(pkg, file, o.signal ? { signal: o.signal } : {});
      if (image.release !== undefined && image.release !== target.kernel.release)
        throw new FalcoProbesError(
          'config',
          `${target.label}: the image package ${pkg.name} holds kernel ${image.release}, not ${target.kernel.release}`,
          {
            location: { file: `kernels/${target.os}.lock.yaml` },
            hint: `the source definition's image template picked the wrong package; fix kernels/${target.os}.yaml and run falco-probes resolve ${target.os}`,
          },
        );
      // The VM slot is held only while the VM runs: fetching and unpacking happen outside it.
      return limit(() =>
        verifyLoad({
          probeFile,
          kind: target.kind,
          ...(target.kind === 'kmod' ? { devicePrefixes: devicePrefixesOf(target) } : {}),
          kernelImage: image,
          workDir: options.workDir,
          memoryMiB,
          timeoutMs: o.timeoutMs ?? DEFAULT_VERIFY_TIMEOUT_MS,
          accelerator: o.accelerator ?? 'auto',
          ...(options.consoleLog ? { consoleLog: options.consoleLog } : {}),
          ...(o.qemu ? { qemu: o.qemu } : {}),
          ...(o.tools ? { tools: o.tools } : {}),
          legacyLoader,
          ...(o.logger ? { logger: o.logger } : {}),
          ...(o.signal ? { signal: o.signal } : {}),
        }),
      );
    },
  };
}

/** A verdict as `unverifiedProbeError` needs it: from a VM just run, or as the index recorded it. */
export interface UnloadedVerdict {
  verdict: LoadVerdict['verdict'];
  message: string;
  detail?: string;
  /** Advice that replaces the verdict's usual one. */
  hint?: string;
  consoleLog?: string;
  /** The verdict comes from the repository index (an earlier run), not from a VM of this run. */
  recorded?: boolean;
}

/**
 * The failure of a target whose probe did not load: `verify-load` and
 * `build --verify-load` report it for the target (as an error, or as a
 * warning with --allow-unverified) after the verdict is recorded.
 */
export function unverifiedProbeError(
  target: Pick<Target, 'label'> & Partial<Pick<Target, 'kind'>>,
  verdict: UnloadedVerdict,
): FalcoProbesError {
  const recorded = verdict.recorded ? ' (recorded by an earlier verify-load of this build; --force boots it again)' : '';
  const what = target.kind === 'kmod' ? 'kernel module' : 'probe';
  return new FalcoProbesError(
    'build',
    `${target.label}: the ${what} did not load into its kernel (${verdict.verdict}): ${verdict.message}${recorded}`,
    {
      ...(verdict.consoleLog ? { location: { file: verdict.consoleLog } } : {}),
      ...(verdict.detail ? { details: verdict.detail.split('\n').slice(-30).join('\n') } : {}),
      hint:
        verdict.hint ??
        (verdict.verdict === 'refused'
          ? target.kind === 'kmod'
            ? "this kernel refuses the module (see its reason): build it against this kernel's own headers and compiler, or publish it anyway with --allow-unverified"
            : 'the verifier of this kernel refuses the probe: fix the driver for this kernel, or publish it anyway with --allow-unverified'
          : verdict.verdict === 'unknown'
            ? "the guest's record did not arrive whole, twice (see the console log): the next verify-load boots it again; --allow-unverified publishes it unverified"
            : 'the kernel could not be checked (it did not boot or timed out): see the console log; --allow-unverified publishes it unverified'),
    },
  );
}

/** A target whose kernel no VM here can boot (see noGuestReason). */
export function noGuestError(target: Pick<Target, 'label'>, reason: string): FalcoProbesError {
  return new FalcoProbesError('build', `${target.label}: the probe was not verified: ${reason}`, {
    hint: 'verify it on a machine that can boot this kernel, or accept it unverified with --allow-unverified',
  });
}
