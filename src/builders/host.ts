import { buildCancelled, memoizePin } from './shared.js';
import { clangSatisfies, hostArch, versionNumber } from './host-facts.js';
import { execFile } from 'node:child_process';
import { appendFile, mkdir, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type { BuilderPin, Target } from '../graph/types.js';
import { errorMessage, FalcoProbesError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { sha256Hex } from '../util/hash.js';
import { checkRelease } from '../util/names.js';
import { checkBpfObject, checkKernelModule } from './elf.js';
import { DRIVER_STABLE_DIR, kbuildArgv, kbuildEnv, kmodArgv, recordedKernelPath } from './kbuild.js';
import { compilerVersionLine, kernelCompilerProgram, noCompilerError, readKernelCompiler, sameCompiler } from './kernel-compiler.js';
import { checkMakeSafePath, OBJTREE_VIEW, prepareKernelView, SRCTREE_VIEW } from './kernel-tree.js';
import { readLogTail, runLogged } from './process.js';
import { prepareDriverBuild } from './recipe.js';
import type { Builder, BuildRequest, BuildResult } from './types.js';

// The host builder: the driver's kbuild with this machine's clang and llc,
// against a view of the extracted kernel headers, with flags and an
// environment that make the object depend only on the target's inputs.

const execFileAsync = promisify(execFile);

export interface HostBuilderOptions {
  clang?: string;
  llc?: string;
  /** The C compiler for kernel modules (default `gcc`); a kernel's own program name is preferred when it is the same compiler. */
  gcc?: string;
  make?: string;
  /** Default per-build time limit when the request gives none. */
  timeoutMs?: number;
  /** PATH for the build (default: this process's PATH). */
  path?: string;
}

export const DEFAULT_BUILD_TIMEOUT_MS = 30 * 60 * 1000;
const LOG_TAIL_LINES = 30;

/** The work directory's layout: the driver's copy, a TMPDIR, and the kernel views (kernel-tree.ts). */
const DRIVER_COPY = 'driver';
const TMP = 'tmp';
const WORK_ENTRIES = [DRIVER_COPY, TMP, OBJTREE_VIEW, SRCTREE_VIEW] as const;

// Compiler commands go onto make's command line: plain names or absolute paths only.
const COMMAND_RE = /^(\/)?[A-Za-z0-9._+-]+(\/[A-Za-z0-9._+-]+)*$/;

function checkCommand(command: string, what: string): string {
  if (!COMMAND_RE.test(command))
    throw new FalcoProbesError('usage', `${what} command ${JSON.stringify(command)} must be a plain name or path`);
  return command;
}

export { hostArch, clangSatisfies } from './host-facts.js';

async function firstLine(command: string, args: string[], what: string): Promise<string> {
  try {
    const { stdout } = await execFileAsync(command, args, {
      timeout: 15_000,
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', LC_ALL: 'C' },
    });
    return stdout;
  } catch (err) {
    throw new FalcoProbesError('build', `cannot run ${command} ${args.join(' ')}: ${(err as Error).message.split('\n')[0]}`, {
      cause: err,
      hint: `the host builder needs ${what} (scripts/setup-debian.sh installs clang, llvm and make)`,
    });
  }
}

/** `clang --version`'s first line, whitespace normalized: "Debian clang version 14.0.6". */
export function normalizeClangVersion(output: string): string {
  const line = (output.split('\n').find((l) => l.trim() !== '') ?? '').trim().replace(/\s+/g, ' ');
  if (!/clang version \d+/.test(line)) throw new FalcoProbesError('build', `unexpected clang --version output: ${JSON.stringify(line)}`);
  return line;
}

export function createHostBuilder(opts: HostBuilderOptions = {}): Builder {
  const clang = checkCommand(opts.clang ?? 'clang', 'clang');
  const llc = checkCommand(opts.llc ?? 'llc', 'llc');
  const make = checkCommand(opts.make ?? 'make', 'make');
  const gcc = checkCommand(opts.gcc ?? 'gcc', 'gcc');
  const path = opts.path ?? process.env['PATH'] ?? '/usr/local/bin:/usr/bin:/bin';

  const computePin = async (): Promise<BuilderPin> => {
    const clangVersion = normalizeClangVersion(await firstLine(clang, ['--version'], 'clang'));
    // The pin names clang only; an llc of another LLVM release would change
    // the bytes behind the same key, so refuse the pair.
    const llcOut = await firstLine(llc, ['--version'], 'llc (package llvm)');
    const llcLine = llcOut.split('\n').find((l) => /LLVM version/.test(l)) ?? '';
    const a = versionNumber(clangVersion);
    const b = versionNumber(llcLine);
    if (a !== undefined && b !== undefined && a !== b)
      throw new FalcoProbesError('build', `clang is ${a} but llc is LLVM ${b}`, {
        hint: 'install clang and llvm of the same release, or name them with --clang/--llc',
      });
    // gcc builds kernel modules; a host without it can still build probes.
    const gccLine = await compilerVersionLine(gcc, path);
    return { kind: 'host', clang: clangVersion, ...(gccLine !== undefined ? { gcc: gccLine } : {}) };
  };

  const pin = memoizePin(computePin);

  const build = async (request: BuildRequest): Promise<BuildResult> => {
    const { target } = request;
    const own = await pin();
    checkTargetFitsHost(target, own);
    const release = checkRelease(target.kernel.release);
    if (request.signal?.aborted) throw buildCancelled(target, request.logFile, request.signal);

    const workDir = await realpath(request.workDir);
    checkMakeSafePath(workDir, 'work directory');
    await mkdir(dirname(request.logFile), { recursive: true });
    await writeFile(
      request.logFile,
      `# falco-probes host build of ${target.label} (${target.driver.name} ${target.driver.version}, ${release})\n` +
        `# ${own.kind === 'host' ? own.clang : ''}\n`,
    );
    // The work directory should be empty; a resumed build may find our own leftovers.
    for (const name of [...WORK_ENTRIES]) await rm(join(workDir, name), { recursive: true, force: true });
    const tmpDir = join(workDir, TMP);
    await mkdir(tmpDir, { recursive: true });

    let argv: string[];
    let moduleDir: string;
    let objectFile: string;
    try {
      const view = await prepareKernelView({ kernelRoot: request.kernelRoot, release, workDir });
      const driver = await prepareDriverBuild(target.driver, await realpath(request.driverDir), join(workDir, DRIVER_COPY), target.kind);
      ({ moduleDir, objectFile } = driver);
      // The views stand for the kernel's own paths; both are recorded where nothing can be read (kbuild.ts).
      const prefixMaps = [
        { from: driver.rootDir, to: DRIVER_STABLE_DIR },
        ...view.prefixMaps.map((m) => ({ from: m.from, to: recordedKernelPath(m.to) })),
      ];
      if (target.kind === 'kmod') {
        const kernelCc = await readKernelCompiler(view.headersDir);
        // The key names the builder's gcc: a kernel of another compiler is never built under it.
        const pinned = target.builder.gcc;
        if (pinned === undefined || !sameCompiler(pinned, kernelCc.text))
          throw noCompilerError(kernelCc, pinned ?? (own.kind === 'host' ? own.gcc : undefined), `kernel ${release}`);
        const cc = await kernelCompilerProgram(kernelCc, { program: gcc, line: own.gcc }, path, `kernel ${release}`);
        argv = kmodArgv({ kernelDir: view.kernelDir, moduleDir, cc, make, prefixMaps });
        await appendFile(request.logFile, `# kernel compiler: ${kernelCc.text} (CC=${cc})\n`);
      } else {
        argv = kbuildArgv({ kernelDir: view.kernelDir, moduleDir, clang, llc, make, prefixMaps });
      }
      await appendFile(request.logFile, `# headers: ${view.headersDir}\n# ${argv.join(' ')}\n`);
    } catch (err) {
      await appendFile(request.logFile, `# preparing the build failed: ${errorMessage(err)}\n`).catch(() => undefined);
      throw err;
    }
    const env = kbuildEnv({ path, home: workDir, tmpDir });

    const timeoutMs = request.timeoutMs ?? opts.timeoutMs ?? DEFAULT_BUILD_TIMEOUT_MS;
    const outcome = await runLogged(argv, { cwd: workDir, env, logFile: request.logFile, signal: request.signal, timeoutMs });
    if (outcome.aborted) throw buildCancelled(target, request.logFile, request.signal);
    if (outcome.timedOut || outcome.code !== 0) {
      const what = outcome.timedOut
        ? `timed out after ${Math.round(timeoutMs / 1000)} s and was stopped`
        : outcome.code === null
          ? `was killed by ${outcome.signal}`
          : `failed (make exited with ${outcome.code})`;
      throw new FalcoProbesError('build', `build of ${target.label} ${what}`, {
        location: { file: request.logFile },
        details: await readLogTail(request.logFile, LOG_TAIL_LINES),
        hint: outcome.timedOut ? 'raise the build timeout if this kernel is just slow' : `the whole log is ${request.logFile}`,
      });
    }

    const objectPath = join(moduleDir, objectFile);
    let bytes: Buffer;
    try {
      bytes = await readFile(objectPath);
    } catch {
      const dir = target.kind === 'kmod' ? target.driver.kmodDir : target.driver.bpfDir;
      throw new FalcoProbesError('build', `make succeeded but left no ${objectFile} in ${dir}`, {
        location: { file: request.logFile },
        details: await readLogTail(request.logFile, LOG_TAIL_LINES),
        hint:
          target.kind === 'kmod'
            ? `the driver's Makefile must build ${objectFile} (obj-m += ${objectFile.replace(/\.ko$/, '.o')})`
            : `the driver's Makefile must build ${objectFile} (always-y += ${objectFile})`,
      });
    }
    if (target.kind === 'kmod') checkKernelModule(bytes, objectPath, release);
    else checkBpfObject(bytes, objectPath);
    await writeFileAtomic(request.outFile, bytes);
    return { sha256: sha256Hex(bytes), size: bytes.length };
  };

  return { pin, build };
}

function checkTargetFitsHost(target: Target, own: BuilderPin): void {
  if (target.kind !== 'bpf' && target.kind !== 'kmod')
    throw new FalcoProbesError('build', `target ${target.label}: the host builder cannot build ${String(target.kind)}`);
  if (
    target.kind === 'kmod' &&
    target.builder.kind === 'host' &&
    own.kind === 'host' &&
    (target.builder.gcc === undefined || own.gcc === undefined || !sameCompiler(target.builder.gcc, own.gcc))
  )
    throw new FalcoProbesError(
      'build',
      `target ${target.label} was keyed for gcc ${JSON.stringify(target.builder.gcc ?? '(none)')}, but this host's gcc is ${JSON.stringify(own.gcc ?? '(none)')}`,
      {
        hint: "set builder.gcc in kernels/drivers.yaml to this host's `gcc --version` (first line) and regenerate, or build on a host with that gcc",
      },
    );
  if (target.builder.kind !== 'host' || (target.kind === 'bpf' && own.kind === 'host' && !clangSatisfies(target.builder.clang, own.clang)))
    throw new FalcoProbesError(
      'build',
      `target ${target.label} was keyed for builder ${JSON.stringify(target.builder)}, but this host builder is ${JSON.stringify(own)}`,
      {
        hint: 'regenerate the build graph on this machine (falco-probes generate), so that keys name the toolchain that builds them',
      },
    );
  const arch = hostArch();
  if (target.arch !== arch)
    throw new FalcoProbesError(
      'build',
      `target ${target.label} is for ${target.arch}, but the host builder compiles for ${arch ?? process.arch}`,
      {
        hint: 'build it on a machine of that architecture',
      },
    );
}
