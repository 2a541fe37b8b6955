import { readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type Docker from 'dockerode';
import { pack } from 'tar-stream';
import { FalcoProbesError } from '../util/errors.js';
import { sha256Canonical, sha256Hex } from '../util/hash.js';
import type { Logger } from '../util/log.js';
import { explainDockerError } from './docker-client.js';

// Images defined in this repository (the builder image, the test loader
// image), built through the daemon's image build API and found again by a
// tag that is the hash of everything that goes into them. Nothing is ever
// pulled: no registry is reachable, and a silent pull would change the pin.

/** The repository's builder/ folder. */
export const BUILDER_DIR = fileURLToPath(new URL('../../builder/', import.meta.url));

export interface ImageDefinition {
  /** Image name without tag (`falco-probes/builder`); the tag is the content hash. */
  repository: string;
  /** The folder the context files are read from. */
  contextDir: string;
  /** Context files, relative to contextDir; the first is the Dockerfile. */
  files: string[];
  /** Images the Dockerfile starts FROM (their ids go into the hash); a missing one is an error carrying `missingBaseHint`. */
  baseImages: string[];
  missingBaseHint: string;
  buildArgs?: Record<string, string>;
  /** Build every step again instead of reusing the daemon's cached layers (a second, independent image). */
  noCache?: boolean;
}

export interface ImageRef {
  /** `sha256:...`, the builder pin. */
  id: string;
  tag: string;
  built: boolean;
}

/**
 * The builder image: a Debian release's clang/llvm, gcc and kbuild's tools
 * (builder/Dockerfile). bookworm is the default builder; another release
 * (trixie) is a compiler image for kernels that release built with its gcc.
 */
export function builderImageDefinition(builderDir = BUILDER_DIR, release = 'bookworm'): ImageDefinition {
  if (!/^[a-z]{2,32}$/.test(release)) throw new FalcoProbesError('usage', `not a Debian release codename: ${JSON.stringify(release)}`);
  const base = `debian:${release}`;
  return {
    repository: release === 'bookworm' ? 'falco-probes/builder' : `falco-probes/builder-${release}`,
    contextDir: builderDir,
    files: ['Dockerfile'],
    baseImages: [base],
    missingBaseHint: `make it with: bash scripts/base-image.sh ${release} (debootstraps Debian ${release} from the apt archive this machine uses; no registry is needed)`,
    ...(release === 'bookworm' ? {} : { buildArgs: { BASE: base } }),
  };
}

const BUILD_TIMEOUT_MS = 20 * 60_000;
const LOG_TAIL_LINES = 30;

async function inspectImage(docker: Docker, name: string): Promise<{ Id: string } | undefined> {
  try {
    return (await docker.getImage(name).inspect()) as { Id: string };
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return undefined;
    throw explainDockerError(err, 'docker image inspect');
  }
}

/** The tag an image definition gets: its repository and the hash of its files, build args and base image ids. */
export async function imageTag(docker: Docker, def: ImageDefinition): Promise<string> {
  const files: [string, string][] = [];
  for (const f of def.files) files.push([f, `${await fileMode(def, f)} ${sha256Hex(await readFile(join(def.contextDir, f)))}`]);
  const bases: [string, string][] = [];
  for (const b of def.baseImages) {
    const image = await inspectImage(docker, b);
    if (!image)
      throw new FalcoProbesError('docker', `the base image ${b} is missing from the Docker daemon`, {
        location: { file: resolve(def.contextDir, def.files[0]!) },
        hint: def.missingBaseHint,
      });
    bases.push([b, image.Id]);
  }
  return `${def.repository}:${sha256Canonical({ files, bases, buildArgs: def.buildArgs ?? {} }).slice(0, 16)}`;
}

/** Find the image of this definition, or build it. Returns its id (the pin). */
export async function ensureImage(
  docker: Docker,
  def: ImageDefinition,
  opts: { logger?: Logger; signal?: AbortSignal; rebuild?: boolean } = {},
): Promise<ImageRef> {
  const tag = await imageTag(docker, def);
  if (!opts.rebuild) {
    const existing = await inspectImage(docker, tag);
    if (existing) return { id: existing.Id, tag, built: false };
  }
  opts.logger?.info(`building image ${tag} from ${def.contextDir}`);
  await buildImage(docker, def, tag, opts);
  const built = await inspectImage(docker, tag);
  if (!built) throw new FalcoProbesError('docker', `the image build reported success but ${tag} does not exist`);
  return { id: built.Id, tag, built: true };
}

/** Only the executable bit matters (a checkout may have any umask). */
async function fileMode(def: ImageDefinition, file: string): Promise<number> {
  return (await stat(join(def.contextDir, file))).mode & 0o100 ? 0o755 : 0o644;
}

async function contextTar(def: ImageDefinition): Promise<NodeJS.ReadableStream> {
  const tar = pack();
  for (const f of def.files) {
    const data = await readFile(join(def.contextDir, f));
    // Fixed owner, mode and time: the context's bytes depend on the files only.
    tar.entry({ name: f, size: data.length, mode: await fileMode(def, f), mtime: new Date(0), uid: 0, gid: 0 }, data);
  }
  tar.finalize();
  return tar as unknown as NodeJS.ReadableStream;
}

interface BuildEvent {
  stream?: string;
  error?: string;
  errorDetail?: { message?: string };
  aux?: { ID?: string };
}

async function buildImage(
  docker: Docker,
  def: ImageDefinition,
  tag: string,
  opts: { logger?: Logger; signal?: AbortSignal },
): Promise<void> {
  const dockerfile = resolve(def.contextDir, def.files[0]!);
  const abort = new AbortController();
  const onAbort = () => abort.abort();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(() => abort.abort(), BUILD_TIMEOUT_MS);
  const lines: string[] = [];
  let failure: string | undefined;
  try {
    const stream = await docker.buildImage(await contextTar(def), {
      t: tag,
      dockerfile: def.files[0]!,
      // The legacy builder, and host networking so apt in a RUN step reaches the archive (no bridge exists).
      version: '1',
      networkmode: 'host',
      rm: true,
      forcerm: true,
      pull: false,
      nocache: def.noCache ?? false,
      buildargs: def.buildArgs ?? {},
      labels: { 'falco-probes.image': def.repository },
      abortSignal: abort.signal,
    });
    await new Promise<void>((resolveDone, reject) => {
      docker.modem.followProgress(
        stream,
        (err: Error | null) => (err ? reject(err) : resolveDone()),
        (event: BuildEvent) => {
          if (event.stream) {
            for (const line of event.stream.split('\n')) if (line.trim()) lines.push(line.trimEnd());
            if (lines.length > 500) lines.splice(0, lines.length - 500);
            opts.logger?.debug(event.stream.trimEnd());
          }
          if (event.error) failure = event.errorDetail?.message ?? event.error;
        },
      );
    });
  } catch (err) {
    if (abort.signal.aborted)
      throw new FalcoProbesError(
        'docker',
        opts.signal?.aborted
          ? `image build of ${tag} interrupted`
          : `image build of ${tag} took more than ${BUILD_TIMEOUT_MS / 60_000} minutes`,
        {
          location: { file: dockerfile },
          details: lines.slice(-LOG_TAIL_LINES).join('\n'),
        },
      );
    if (err instanceof FalcoProbesError) throw err;
    failure ??= (err as Error).message;
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
  }
  if (failure !== undefined)
    throw new FalcoProbesError('docker', `image build of ${tag} failed: ${failure.trim()}`, {
      location: { file: dockerfile },
      details: lines.slice(-LOG_TAIL_LINES).join('\n'),
      hint: 'fix the Dockerfile or the apt archive it reaches (the log tail is above)',
    });
}
