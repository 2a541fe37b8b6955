import { appendFile, mkdir, readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { PackageRef } from '../config/types.js';
import type { Builder, BuildResult } from '../builders/types.js';
import type { KernelArchive } from './kernel-root.js';
import { archiveFormatOf } from '../fetch/extract.js';
import type { ResolvedDriver, Target } from '../graph/types.js';
import { checkFileName } from '../util/names.js';

// One target from its lockfile entry to a built object in its private work
// directory: fetch every package (the fetcher bounds downloads and shares
// one download per package across targets), extract them into one tree laid
// out like `/`, find the driver source, and let the builder compile. The
// caller publishes the object and removes the work directory on success.

export interface TargetPipeline {
  fetch(pkg: PackageRef, options?: { signal?: AbortSignal }): Promise<string>;
  /** The packages, in order, unpacked into one directory laid out like `/` (kernel-root.ts), shared by every build of them: read it, never write it. */
  extract(archives: KernelArchive[], options: { signal?: AbortSignal }): Promise<string>;
  driverDir(driver: ResolvedDriver): Promise<string>;
  builder: Builder;
  /**
   * After a build from `kernelRoot` failed: check it (and what it was made
   * from) by sha256 against its manifest; true when it was damaged and has
   * been removed, so that `extract` makes it again.
   */
  checkKernelRoot?(kernelRoot: string): Promise<boolean>;
}

export interface TargetBuildOptions {
  workDir: string;
  logFile: string;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface BuiltObject extends BuildResult {
  /** The object inside the work directory. */
  file: string;
  /** Where the time went (milliseconds): fetching (cache hits are quick), extracting, compiling. */
  phases: { fetchMs: number; extractMs: number; buildMs: number };
}

/**
 * Packages a build needs: all but the bootable image (only verify-load boots it; it is by far
 * the largest) and the compiler package, which only names the kernel's gcc (graph/compiler-choice.ts).
 */
export function packagesToBuildWith(target: Target): PackageRef[] {
  return target.kernel.packages.filter((p) => p.role !== 'image' && p.role !== 'compiler');
}

const ms = (n: number) => `${(n / 1000).toFixed(1)}s`;

async function log(file: string, line: string): Promise<void> {
  await appendFile(file, `${line}\n`);
}

export async function buildTarget(target: Target, pipeline: TargetPipeline, options: TargetBuildOptions): Promise<BuiltObject> {
  const { workDir, logFile, signal } = options;
  // A name that reached this target through any cache is checked again before it becomes a path.
  const probeFile = checkFileName(target.probeFile);
  // Leftovers of an earlier failed attempt would mix into this one.
  await rm(workDir, { recursive: true, force: true });
  await mkdir(join(workDir, 'build'), { recursive: true });
  await mkdir(join(workDir, 'out'), { recursive: true });
  await mkdir(dirname(logFile), { recursive: true });
  await rm(logFile, { force: true });
  // Read if fetching or extracting fails (the builder replaces it when it starts).
  await log(logFile, `# ${target.label} key ${target.key}: fetching and extracting ${packagesToBuildWith(target).length} packages`);

  const t0 = performance.now();
  const files = await Promise.all(
    packagesToBuildWith(target).map(async (pkg) => {
      const file = await pipeline.fetch(pkg, signal ? { signal } : {});
      return { file, format: archiveFormatOf(pkg.path), pkg };
    }),
  );
  const t1 = performance.now();
  const archives = files.map(({ file, format, pkg }) => ({ file, format, sha256: pkg.sha256 }));
  let kernelRoot = await pipeline.extract(archives, signal ? { signal } : {});
  const driverDir = await pipeline.driverDir(target.driver);
  const t2 = performance.now();

  const outFile = join(workDir, 'out', probeFile);
  const build = () =>
    pipeline.builder.build({
      target,
      kernelRoot,
      driverDir,
      workDir: join(workDir, 'build'),
      outFile,
      logFile,
      ...(signal ? { signal } : {}),
      ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    });
  let result: BuildResult;
  try {
    result = await build();
  } catch (err) {
    // A failed build may come from a damaged cached kernel root: check it fully; a damaged one was removed, so make it again and build once more.
    if (signal?.aborted || !pipeline.checkKernelRoot || !(await pipeline.checkKernelRoot(kernelRoot))) throw err;
    kernelRoot = await pipeline.extract(archives, signal ? { signal } : {});
    await rm(join(workDir, 'build'), { recursive: true, force: true });
    await mkdir(join(workDir, 'build'), { recursive: true });
    result = await build();
  }
  const t3 = performance.now();
  // The builder starts the log afresh; what came before it is added at the end.
  await log(logFile, files.map((f) => `# package ${f.pkg.name} ${f.pkg.version} sha256 ${f.pkg.sha256}`).join('\n'));
  await log(logFile, `# fetch ${ms(t1 - t0)}, extract ${ms(t2 - t1)}, build ${ms(t3 - t2)}; object sha256 ${result.sha256}`);
  return {
    file: outFile,
    ...result,
    phases: { fetchMs: Math.round(t1 - t0), extractMs: Math.round(t2 - t1), buildMs: Math.round(t3 - t2) },
  };
}

/** The last lines of a target's log, to show under its failure. */
export async function logTail(logFile: string, lines = 25): Promise<string | undefined> {
  try {
    const text = (await readFile(logFile, 'utf8')).trimEnd();
    return text.split('\n').slice(-lines).join('\n');
  } catch {
    return undefined;
  }
}
