import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type Docker from 'dockerode';
import { connectDocker, PRIVATE_DOCKER_SOCKET } from '../../src/builders/docker-client.js';
import { BUILDER_DIR, builderImageDefinition, ensureImage, type ImageDefinition, type ImageRef } from '../../src/builders/docker-image.js';
import { sha256Hex } from '../../src/util/hash.js';
import { processAlive } from '../../src/util/process.js';
import { PROJECT_ROOT } from './cli.js';
import { obtainDebianKernels, type DebianKernel } from './kernel-headers.js';
import { withFileLock } from './lock.js';

// A real Docker engine for tests. When DOCKER_HOST is set, that daemon is
// used and never stopped here. Otherwise, as root, this process counts itself
// as a user of the private daemon of scripts/docker-daemon.sh (`acquire`,
// which starts it when it does not answer) until releaseDocker (`release`):
// test files run concurrently, and the daemon stops only when its last user
// is done, and only if an acquire started it. As anyone else the tests skip.
// The images come from this repository only: the base image by
// scripts/base-image.sh (debootstrap; about a minute and a half the first
// time on a machine), the builder image from builder/Dockerfile, the test
// loader image from builder/test-loader/. Each is found or made under a lock
// per daemon, so two test files never build the same image at once. The
// daemon's data root persists, so later runs find all three.

const execFileAsync = promisify(execFile);

export type DockerResult = { ok: true; docker: Docker } | { ok: false; skip: string };

let acquired = false;
let memo: Promise<DockerResult> | undefined;

async function script(name: string, args: string[], timeoutMs: number): Promise<void> {
  await execFileAsync('bash', [join(PROJECT_ROOT, 'scripts', name), ...args], {
    timeout: timeoutMs,
    env: process.env,
    maxBuffer: 16 * 1024 * 1024,
  });
}

/** A connected Docker client, or why the tests cannot have one. Memoized per process. */
export function obtainDocker(): Promise<DockerResult> {
  memo ??= obtain();
  return memo;
}

async function obtain(): Promise<DockerResult> {
  if (!process.env['DOCKER_HOST']) {
    if (process.getuid?.() !== 0)
      return {
        ok: false,
        skip: 'no DOCKER_HOST and not root: start a daemon (sudo bash scripts/docker-daemon.sh start) and set DOCKER_HOST',
      };
    await script('docker-daemon.sh', ['acquire', String(process.pid)], 120_000);
    acquired = true;
    process.env['DOCKER_HOST'] = `unix://${PRIVATE_DOCKER_SOCKET}`;
  }
  return { ok: true, docker: await connectDocker() };
}

/**
 * This process no longer uses the private daemon it acquired; the daemon
 * stops if no other user is left and an acquire started it (its data root,
 * and so its images, stay). Nothing happens for a daemon DOCKER_HOST named.
 */
export async function releaseDocker(): Promise<void> {
  if (!acquired) return;
  acquired = false;
  memo = undefined;
  delete process.env['DOCKER_HOST'];
  await script('docker-daemon.sh', ['release', String(process.pid)], 60_000);
}

/** The former name of releaseDocker (bench/docker-vs-host.ts calls it). */
export const stopDockerIfStarted = releaseDocker;

/**
 * Run `fn` under a lock on the daemon's images, shared by every test process
 * on this machine: finding or making an image (debootstrap, docker build)
 * happens once, and a second test file finds what the first one made.
 */
function withImageLock<T>(fn: () => Promise<T>): Promise<T> {
  const daemon = process.env['DOCKER_HOST'] ?? `unix://${PRIVATE_DOCKER_SOCKET}`;
  return withFileLock(join(tmpdir(), 'falco-probes-test-locks', `images-${sha256Hex(daemon).slice(0, 16)}.lock`), 'test image setup', fn);
}

/** Make debian:bookworm when the daemon lacks it (root only: debootstrap). */
export async function ensureBaseImage(docker: Docker, release = 'bookworm'): Promise<{ ok: true } | { ok: false; skip: string }> {
  const present = () =>
    docker
      .getImage(`debian:${release}`)
      .inspect()
      .then(
        () => true,
        () => false,
      );
  if (await present()) return { ok: true };
  if (process.getuid?.() !== 0)
    return { ok: false, skip: `the daemon has no debian:${release} and making it needs root (scripts/base-image.sh ${release})` };
  return withImageLock(async () => {
    if (!(await present())) await script('base-image.sh', [release], 15 * 60_000);
    return { ok: true };
  });
}

/** The builder image (builder/Dockerfile), found or built. */
export async function ensureBuilderImage(docker: Docker): Promise<ImageRef> {
  return withImageLock(() => ensureImage(docker, builderImageDefinition()));
}

/** The test loader image (builder/test-loader/) on top of the builder image's tag. */
export function testLoaderImageDefinition(builderTag: string): ImageDefinition {
  return {
    repository: 'falco-probes/test-loader',
    contextDir: join(BUILDER_DIR, 'test-loader'),
    files: ['Dockerfile', 'falco-driver-loader'],
    baseImages: [builderTag],
    missingBaseHint: 'build the builder image first: falco-probes builder-image',
    buildArgs: { BUILDER_IMAGE: builderTag },
  };
}

/** The test loader image, found or built; older tags of it (from earlier versions of its files) are removed. */
export async function ensureTestLoaderImage(docker: Docker, builderTag: string): Promise<ImageRef> {
  return withImageLock(async () => {
    const def = testLoaderImageDefinition(builderTag);
    const ref = await ensureImage(docker, def);
    for (const image of await docker.listImages({ filters: { reference: [def.repository] } })) {
      for (const tag of image.RepoTags ?? [])
        if (tag !== ref.tag)
          await docker
            .getImage(tag)
            .remove()
            .catch(() => undefined);
    }
    return ref;
  });
}

/**
 * Whether a container of ours is this test process's to answer for: made by
 * this process, or by one that has ended (a CLI run of this test, say). The
 * containers of processes still running belong to other test files running
 * meanwhile on the same daemon.
 */
function leftBehind(labels: Record<string, string> | undefined): boolean {
  const pid = Number(labels?.['falco-probes.pid']);
  if (labels?.['falco-probes.host'] !== hostname() || !Number.isInteger(pid) || pid <= 0) return true;
  return pid === process.pid || !processAlive(pid);
}

/** Containers (as above: not another live process's) and volumes that carry our label: what must be empty after every test. */
export async function ourLeftovers(docker: Docker): Promise<{ containers: string[]; volumes: string[] }> {
  const containers = (await docker.listContainers({ all: true, filters: { label: ['falco-probes=1'] } }))
    .filter((c) => leftBehind(c.Labels))
    .map((c) => `${c.Id.slice(0, 12)} ${c.State}`);
  const volumes = ((await docker.listVolumes({ filters: { label: ['falco-probes=1'] } })).Volumes ?? []).map((v) => v.Name);
  return { containers, volumes };
}

/** Every volume the daemon has (anonymous volumes carry no label of ours). */
export async function allVolumes(docker: Docker): Promise<string[]> {
  return ((await docker.listVolumes()).Volumes ?? []).map((v) => v.Name).sort();
}

export type DockerBuildSetup = { ok: true; docker: Docker; kernels: DebianKernel[] } | { ok: false; skip: string };

/**
 * What a test that builds real probes with the Docker builder needs: a
 * daemon, the base and builder images (made here, not inside a timed run,
 * when a fresh daemon lacks them) and real Debian kernels; or why it skips.
 */
export async function obtainDockerBuildSetup(): Promise<DockerBuildSetup> {
  const d = await obtainDocker();
  if (!d.ok) return d;
  const base = await ensureBaseImage(d.docker);
  if (!base.ok) return base;
  const k = await obtainDebianKernels();
  if (!k.ok) return { ok: false, skip: k.skip };
  await ensureBuilderImage(d.docker);
  return { ok: true, docker: d.docker, kernels: k.kernels };
}

/** The end of such a test file: no container of ours is left (when it ran), and the daemon is released. */
export async function finishDockerTests(docker: Docker | undefined): Promise<void> {
  try {
    if (docker) assert.deepEqual((await ourLeftovers(docker)).containers, [], 'containers labelled falco-probes=1 are left');
  } finally {
    await releaseDocker();
  }
}
