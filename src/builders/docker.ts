import { buildCancelled, memoizePin } from './shared.js';
import { createWriteStream } from 'node:fs';
import { appendFile, mkdir, readdir, readFile, realpath } from 'node:fs/promises';
import { dirname, join, posix, relative } from 'node:path';
import { PassThrough, type Writable } from 'node:stream';
import type Docker from 'dockerode';
import type { BuilderPin, Target } from '../graph/types.js';
import { FalcoProbesError } from '../util/errors.js';
import { pathExists, writeFileAtomic } from '../util/fs.js';
import { sha256Hex } from '../util/hash.js';
import { isPlainProgram, noCompilerError, readKernelCompiler, sameCompiler } from './kernel-compiler.js';
import { findKernelDir } from './kernel-tree.js';
import type { Logger } from '../util/log.js';
import { checkRelease, checkVersion } from '../util/names.js';
import { connectDocker, explainDockerError } from './docker-client.js';
import {
  removeOrphanedContainers,
  runContainer,
  schedulingParent,
  type ContainerMount,
  type ContainerOutcome,
} from './docker-container.js';
import { BUILDER_DIR, builderImageDefinition, ensureImage } from './docker-image.js';
import { DockerPinMemo, dockerPinMemoDir } from './docker-pin-memo.js';
import {
  CONTAINER_HOSTNAME,
  CONTAINER_PATH,
  MOCK_BIN_DIR,
  WORK,
  kernelMounts,
  containerUser,
  makeReadableByAll,
  makeWritableFor,
  mockMounts,
} from './docker-layout.js';
import { checkBpfObject, checkKernelModule } from './elf.js';
import { DEFAULT_BUILD_TIMEOUT_MS, hostArch, normalizeClangVersion } from './host.js';
import { DRIVER_STABLE_DIR, kbuildArgv, kbuildEnv, kmodArgv, recordedKernelPath } from './kbuild.js';
import { readLogTail } from './process.js';
import { FALCO_DRIVER_NAME, prepareDriverBuild } from './recipe.js';
import type { Builder, BuildRequest, BuildResult } from './types.js';

// The Docker builder: one container per target, in which the kernel's
// packages sit where they would on the target system, uname and os-release
// answer as the target kernel would, and nothing else of the host is
// visible. Two recipes:
//
// - `kbuild` (default): the host builder's own make command line
//   (src/builders/kbuild.ts) in the builder image (builder/Dockerfile), so
//   the probe's bytes equal the host builder's on the same Debian clang.
// - `driver-loader`: the seed design's method: run a falco-driver-loader in
//   an image of its own with every mock in place, and collect the probe
//   where the loader leaves it (~/.falco/<driver version>/<arch>/<probe file>).

export type DockerRecipe = 'kbuild' | 'driver-loader';

export interface DockerBuilderOptions {
  recipe?: DockerRecipe;
  /**
   * kbuild: an image to use instead of builder/Dockerfile's (never pulled).
   * driver-loader: the loader's image (required; never pulled).
   */
  image?: string;
  /** driver-loader: the command to run (default: falco-driver-loader bpf). */
  loaderCommand?: string[];
  /** driver-loader: extra environment for the loader. */
  loaderEnv?: Record<string, string>;
  /** `uid:gid` the build runs as (default: the builder image's build user when this process is root, else this process's own). */
  user?: string;
  /** The container's HOME (the driver loader writes ~/.falco there). */
  home?: string;
  /** Memory limit per container in bytes (default 4 GiB). */
  memoryBytes?: number;
  /** CPU limit per container in cores (default 1: make runs one job; the runner runs targets in parallel). */
  cpus?: number;
  /** Default per-build time limit when the request gives none. */
  timeoutMs?: number;
  logger?: Logger;
  /** A connected client (default: DOCKER_HOST, checked on first use). */
  docker?: Docker;
  /** The repository's builder/ folder (the Dockerfile, the uname shim, the recipe script). */
  builderDir?: string;
  /** A compiler image: the builder image made from this Debian release (`trixie`) instead of bookworm. */
  release?: string;
  /**
   * Where the toolchain probe's output is remembered per image id (default:
   * dockerPinMemoDir(), beside the package cache); false: always run the probe.
   */
  pinMemoDir?: string | false;
}

export const DEFAULT_MEMORY_BYTES = 4 * 1024 ** 3;
const LOG_TAIL_LINES = 30;
const PROBE_TIMEOUT_MS = 60_000;
/** The toolchain probe: its output names the pin (and is what the pin memo keeps). */
export const PROBE_COMMAND = [
  '/bin/sh',
  '-c',
  "clang --version && echo ---- && llc --version && echo ---- && (gcc --version || true) && echo ---- && dpkg-query -W -f '${Package} ${Version} ${Architecture}\\n' | LC_ALL=C sort",
];

/** Fixed paths inside the container. */
const RECIPE_SCRIPT = '/opt/falco-probes/recipes/kbuild.sh';
/**
 * The writable copy of the driver that kbuild builds in. Not the path the
 * object records (DRIVER_STABLE_DIR, through -ffile-prefix-map): llc puts
 * the text of source lines into .BTF by reading each file at its recorded
 * path, so every recorded path is one where nothing can exist (kbuild.ts,
 * UNREADABLE_ROOT), here as on the host.
 */
export const CONTAINER_BUILD_DIR = '/work/driver';
const DEFAULT_HOME = '/home/build';

/** -ffile-prefix-map pairs for the kernel trees mounted at their own paths (not the /host copies), outermost only. */
function kernelTreeMaps(targets: string[]): { from: string; to: string }[] {
  const trees = [...new Set(targets.filter((t) => t !== '/host' && !t.startsWith('/host/')))].sort();
  const outer = trees.filter((t) => !trees.some((o) => o !== t && t.startsWith(`${o}/`)));
  return outer.map((t) => ({ from: t, to: recordedKernelPath(t) }));
}

/** Where the driver's source is mounted: as Falco's image keeps it, /usr/src/<driver>-<version>. */
export function driverSourceTarget(version: string): string {
  return `/usr/src/${FALCO_DRIVER_NAME}-${checkVersion(version)}`;
}

/** Collects a container's output in memory (for short probes such as `clang --version`). */
function memorySink(): { stream: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  const stream = new PassThrough();
  stream.on('data', (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

export function createDockerBuilder(options: DockerBuilderOptions = {}): Builder {
  const recipe = options.recipe ?? 'kbuild';
  const builderDir = options.builderDir ?? BUILDER_DIR;
  const runAs = containerUser(options.user);
  const user = `${runAs.uid}:${runAs.gid}`;
  const home = options.home ?? DEFAULT_HOME;
  const memoryBytes = options.memoryBytes ?? DEFAULT_MEMORY_BYTES;
  const cpus = options.cpus ?? 1;
  if (recipe === 'driver-loader' && !options.image)
    throw new FalcoProbesError('usage', 'the driver-loader recipe needs the image of the driver loader to run', {
      hint: 'build or load that image into the daemon first and name it; images are never pulled',
    });

  let client: Promise<Docker> | undefined;
  let cgroupParent: Promise<string | undefined> | undefined;
  const docker = (): Promise<Docker> => {
    client ??= (options.docker ? Promise.resolve(options.docker) : connectDocker())
      .then(async (d) => {
        const removed = await removeOrphanedContainers(d).catch(() => 0);
        if (removed > 0) options.logger?.info(`removed ${removed} container(s) left by an interrupted earlier run`);
        return d;
      })
      .catch((err) => {
        client = undefined;
        throw err;
      });
    return client;
  };

  /** The image id to run: the builder image (found or built), or the named image (found, never pulled). */
  const resolveImage = async (d: Docker): Promise<string> => {
    if (options.image === undefined)
      return (await ensureImage(d, builderImageDefinition(builderDir, options.release), options.logger ? { logger: options.logger } : {}))
        .id;
    try {
      return ((await d.getImage(options.image).inspect()) as { Id: string }).Id;
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404)
        throw new FalcoProbesError('docker', `the image ${options.image} is not in the Docker daemon`, {
          hint: 'build or load it first (docker build / docker load); the Docker builder never pulls images',
        });
      throw explainDockerError(err, 'docker image inspect');
    }
  };

  const withRelease = (pin: BuilderPin): BuilderPin =>
    pin.kind === 'docker' && options.release !== undefined ? { ...pin, release: options.release } : pin;
  const pinMemo = options.pinMemoDir === false ? undefined : new DockerPinMemo(options.pinMemoDir ?? dockerPinMemoDir(), options.logger);

  // The id of the image the pin was read from: what containers run. The pin itself names the
  // image's content (pinFromProbe), which is the same on every machine that makes it.
  let runImage: string | undefined;
  const computePin = async (): Promise<BuilderPin> => {
    const d = await docker();
    const image = await resolveImage(d);
    runImage = image;
    const remembered = await pinMemo?.get(image, PROBE_COMMAND);
    if (remembered !== undefined) {
      try {
        return withRelease(pinFromProbe(image, remembered));
      } catch {
        // A memo no probe of this image could have written: ask the image again.
      }
    }
    // The toolchain of the image, as the host builder names its own.
    const sink = memorySink();
    const outcome = await runContainer(
      d,
      {
        image,
        cmd: PROBE_COMMAND,
        env: { PATH: CONTAINER_PATH, LC_ALL: 'C' },
        user,
        workingDir: '/',
        mounts: [],
        memoryBytes: 512 * 1024 ** 2,
        cpus: 1,
      },
      { timeoutMs: PROBE_TIMEOUT_MS, output: sink.stream },
    );
    if (outcome.exitCode !== 0)
      throw new FalcoProbesError('docker', `clang --version failed in image ${image} (exit ${outcome.exitCode})`, {
        details: sink.text().trim().split('\n').slice(-10).join('\n'),
        hint: 'the image needs clang and llc (package llvm) on PATH',
      });
    const output = sink.text();
    const pin = withRelease(pinFromProbe(image, output));
    // Remembered only once it gave a pin: a failing probe runs again next time.
    await pinMemo?.set(image, PROBE_COMMAND, output);
    return pin;
  };

  const pin = memoizePin(computePin);

  const build = async (request: BuildRequest): Promise<BuildResult> => {
    const { target } = request;
    const own = await pin();
    const imageId = runImage!;
    checkTargetFitsBuilder(target, own);
    const release = checkRelease(target.kernel.release);
    if (request.signal?.aborted) throw buildCancelled(target, request.logFile, request.signal);
    const d = await docker();
    cgroupParent ??= schedulingParent(d);
    const parent = await cgroupParent;

    const workDir = await realpath(request.workDir);
    const kernel = await kernelMounts(request.kernelRoot, release);
    const source = await prepareDriverBuild(target.driver, await realpath(request.driverDir), join(workDir, WORK.source), target.kind);
    const buildDir = join(workDir, WORK.build);
    await makeReadableByAll(source.rootDir);
    await makeWritableFor(buildDir, runAs);
    const sourceTarget = driverSourceTarget(target.driver.version);
    if (kernel.mounts.some((m) => m.target === sourceTarget || m.target.startsWith(`${sourceTarget}/`)))
      throw new FalcoProbesError('input', `the kernel's packages hold ${sourceTarget}, where the driver's source goes`, {
        location: { file: request.kernelRoot },
      });
    const mocks = await mockMounts({
      workDir,
      kernel: target.kernel,
      osRelease: target.osRelease,
      kernelDir: kernel.kernelDir,
      origin: target.label,
    });

    const moduleDir = posix.join(CONTAINER_BUILD_DIR, ...relative(source.rootDir, source.moduleDir).split(/[\\/]/).filter(Boolean));
    const mounts: ContainerMount[] = [
      ...kernel.mounts,
      ...mocks,
      { source: join(builderDir, 'mock', 'uname'), target: `${MOCK_BIN_DIR}/uname`, readOnly: true },
      { source: source.rootDir, target: sourceTarget, readOnly: true },
      { source: buildDir, target: CONTAINER_BUILD_DIR, readOnly: false },
    ];
    const env = kbuildEnv({ path: CONTAINER_PATH, home, tmpDir: '/tmp' });
    let cmd: string[];
    let outDir: string | undefined;
    if (recipe === 'kbuild') {
      mounts.push({ source: join(builderDir, 'recipes', 'kbuild.sh'), target: RECIPE_SCRIPT, readOnly: true });
      // The kernel trees are mounted at their own paths: recorded as the host builder records its views of them.
      const prefixMaps = [{ from: CONTAINER_BUILD_DIR, to: DRIVER_STABLE_DIR }, ...kernelTreeMaps(kernel.mounts.map((m) => m.target))];
      let argv: string[];
      if (target.kind === 'kmod') {
        // The kernel's compiler, read from its headers on this side; the image's gcc must be that compiler.
        const kernelCc = await readKernelCompiler((await findKernelDir(request.kernelRoot, release)).dir);
        if (own.kind !== 'docker' || own.gcc === undefined || !sameCompiler(own.gcc, kernelCc.text))
          throw noCompilerError(kernelCc, own.gcc, `kernel ${release}`);
        if (!isPlainProgram(kernelCc.program)) throw noCompilerError(kernelCc, own.gcc, `kernel ${release}`);
        argv = kmodArgv({ kernelDir: kernel.kernelDir, moduleDir, cc: kernelCc.program, make: 'make', prefixMaps });
      } else {
        argv = kbuildArgv({ kernelDir: kernel.kernelDir, moduleDir, clang: 'clang', llc: 'llc', make: 'make', prefixMaps });
      }
      cmd = [RECIPE_SCRIPT, sourceTarget, CONTAINER_BUILD_DIR, ...argv];
    } else {
      outDir = join(workDir, WORK.out);
      await makeWritableFor(outDir, runAs);
      mounts.push({ source: outDir, target: posix.join(home, '.falco'), readOnly: false });
      Object.assign(env, {
        DRIVER_NAME: FALCO_DRIVER_NAME,
        DRIVER_VERSION: target.driver.version,
        HOST_ROOT: '/host',
        // Where the loader may build (writable) and which directory of the source holds the probe.
        FALCO_PROBES_BUILD_DIR: CONTAINER_BUILD_DIR,
        FALCO_PROBES_BPF_DIR: target.driver.bpfDir,
        FALCO_PROBES_OBJECT: source.objectFile,
        ...options.loaderEnv,
      });
      cmd = options.loaderCommand ?? ['falco-driver-loader', 'bpf'];
    }

    await mkdir(dirname(request.logFile), { recursive: true });
    await appendFile(
      request.logFile,
      `# falco-probes docker build (${recipe}) of ${target.label} (${target.driver.name} ${target.driver.version}, ${release})\n` +
        `# image ${imageId}, content ${own.kind === 'docker' ? own.image : ''} (${target.kind === 'kmod' ? own.gcc : own.clang})\n` +
        `# headers: ${kernel.kernelDir}\n` +
        `# ${cmd.join(' ')}\n`,
    );

    const timeoutMs = request.timeoutMs ?? options.timeoutMs ?? DEFAULT_BUILD_TIMEOUT_MS;
    const log = createWriteStream(request.logFile, { flags: 'a' });
    let outcome: ContainerOutcome;
    try {
      outcome = await runContainer(
        d,
        {
          image: imageId,
          cmd,
          env,
          user,
          workingDir: CONTAINER_BUILD_DIR,
          mounts,
          memoryBytes,
          cpus,
          tmpfs: { '/tmp': 512 * 1024 ** 2 },
          labels: { 'falco-probes.target': target.label },
          hostname: CONTAINER_HOSTNAME,
          ...(parent !== undefined ? { cgroupParent: parent } : {}),
        },
        { timeoutMs, output: log, ...(request.signal ? { signal: request.signal } : {}) },
      );
    } finally {
      await new Promise<void>((r) => log.end(r));
    }

    if (outcome.aborted) throw buildCancelled(target, request.logFile, request.signal);
    if (outcome.oomKilled || outcome.timedOut || outcome.exitCode !== 0) {
      const what = outcome.oomKilled
        ? `was killed by the memory limit (${Math.round(memoryBytes / 1024 ** 2)} MiB, OOMKilled)`
        : outcome.timedOut
          ? `timed out after ${Math.round(timeoutMs / 1000)} s and was stopped`
          : `failed (the container exited with ${outcome.exitCode})`;
      await appendFile(request.logFile, `# ${what}\n`);
      throw new FalcoProbesError('build', `build of ${target.label} in Docker ${what}`, {
        location: { file: request.logFile },
        details: await readLogTail(request.logFile, LOG_TAIL_LINES),
        hint: outcome.oomKilled
          ? "raise the Docker builder's memory limit"
          : outcome.timedOut
            ? 'raise the build timeout if this kernel is just slow'
            : `the whole log is ${request.logFile}`,
      });
    }

    const objectPath =
      outDir === undefined
        ? join(buildDir, ...relative(source.rootDir, source.moduleDir).split(/[\\/]/).filter(Boolean), source.objectFile)
        : await loaderOutput(outDir, target, request.logFile);
    let bytes: Buffer;
    try {
      bytes = await readFile(objectPath);
    } catch {
      throw new FalcoProbesError(
        'build',
        `the container succeeded but left no ${source.objectFile} in ${target.kind === 'kmod' ? target.driver.kmodDir : target.driver.bpfDir}`,
        {
          location: { file: request.logFile },
          details: await readLogTail(request.logFile, LOG_TAIL_LINES),
          hint: `the driver's Makefile must build ${source.objectFile}`,
        },
      );
    }
    if (target.kind === 'kmod') checkKernelModule(bytes, objectPath, release);
    else checkBpfObject(bytes, objectPath);
    await writeFileAtomic(request.outFile, bytes);
    return { sha256: sha256Hex(bytes), size: bytes.length };
  };

  return { pin, build };
}

/**
 * The probe where Falco's loader leaves it: ~/.falco/<driver version>/<arch>/<probe file>
 * (older loaders: without the arch folder). Any other file there means the
 * loader computed another name than the target's, i.e. a mock did not hold.
 */
async function loaderOutput(outDir: string, target: Target, logFile: string): Promise<string> {
  const candidates = [
    join(outDir, target.driver.version, target.arch, target.probeFile),
    join(outDir, target.driver.version, target.probeFile),
  ];
  for (const c of candidates) if (await pathExists(c)) return c;
  const found = await listFiles(outDir);
  throw new FalcoProbesError(
    'build',
    `the driver loader did not write ${target.driver.version}/${target.arch}/${target.probeFile} under ~/.falco`,
    {
      location: { file: logFile },
      details: found.length > 0 ? `it wrote: ${found.join(', ')}` : await readLogTail(logFile, LOG_TAIL_LINES),
      hint:
        found.length > 0
          ? 'the loader computed another probe name: check the uname and os-release it saw (the log shows them)'
          : `the whole log is ${logFile}`,
    },
  );
}

async function listFiles(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    if (e.isDirectory()) out.push(...(await listFiles(join(dir, e.name), `${prefix}${e.name}/`)));
    else out.push(`${prefix}${e.name}`);
  }
  return out.sort();
}

/** The pin from what the toolchain probe printed (fresh or remembered: the same derivation either way). */
/**
 * The pin from the image's own answer: its clang (and llc of the same
 * release), its gcc, and its content identity: the sha256 of its sorted
 * package list (`name version arch` per line). Not the image id, which
 * `docker import` and layer timestamps make different on every machine:
 * two machines that make the image from the same archive state get the same
 * identity, and so the same keys.
 */
export function pinFromProbe(image: string, output: string): BuilderPin {
  const [clangOut = '', llcOut = '', gccOut = '', packages = ''] = output.split('----\n');
  const clang = normalizeClangVersion(clangOut);
  const a = /(\d+\.\d+\.\d+)/.exec(clang)?.[1];
  const b = /LLVM version (\d+\.\d+\.\d+)/.exec(llcOut)?.[1];
  if (a !== undefined && b !== undefined && a !== b)
    throw new FalcoProbesError('docker', `image ${image}: clang is ${a} but llc is LLVM ${b}`, {
      hint: 'install clang and llvm of the same release in the image',
    });
  const list = packages
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  if (list.length === 0)
    throw new FalcoProbesError('docker', `image ${image} lists no Debian packages (dpkg-query)`, {
      hint: 'the builder image must be a Debian image (builder/Dockerfile)',
    });
  const gccLine = gccOut
    .split('\n')
    .find((l) => /^\S+ \(.*\) \d/.test(l.trim()))
    ?.trim()
    .replace(/\s+/g, ' ');
  return {
    kind: 'docker',
    image: `sha256:${sha256Hex(`${list.join('\n')}\n`)}`,
    clang,
    ...(gccLine !== undefined ? { gcc: gccLine } : {}),
  };
}

function checkTargetFitsBuilder(target: Target, own: BuilderPin): void {
  const b = target.builder;
  const compilerDiffers =
    target.kind === 'kmod' ? b.gcc === undefined || own.gcc === undefined || !sameCompiler(b.gcc, own.gcc) : b.clang !== own.clang;
  if (b.kind !== 'docker' || own.kind !== 'docker' || b.image !== own.image || compilerDiffers)
    throw new FalcoProbesError(
      'build',
      `target ${target.label} was keyed for builder ${JSON.stringify(b)}, but this Docker builder is ${JSON.stringify(own)}`,
      {
        hint:
          b.kind === 'docker' && b.release !== undefined
            ? `the ${b.release} compiler image holds other packages than kernels/drivers.yaml pins: run \`falco-probes builder-image --release ${b.release}\` and put what it prints under compilerImages, then generate`
            : 'regenerate the build graph with --builder docker on this machine, so that keys name the image that builds them',
      },
    );
  const arch = hostArch();
  if (target.arch !== arch)
    throw new FalcoProbesError(
      'build',
      `target ${target.label} is for ${target.arch}, but the Docker builder runs ${arch ?? process.arch} images`,
      {
        hint: 'build it on a machine of that architecture',
      },
    );
  if (target.kind !== 'bpf' && target.kind !== 'kmod')
    throw new FalcoProbesError('build', `target ${target.label}: the Docker builder cannot build ${String(target.kind)}`);
}
