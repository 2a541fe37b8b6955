import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type Docker from 'dockerode';
import { createDockerBuilder, type DockerBuilderOptions } from '../src/builders/docker.js';
import { ensureImage, type ImageRef } from '../src/builders/docker-image.js';
import { checkBpfObject } from '../src/builders/elf.js';
import { createHostBuilder } from '../src/builders/host.js';
import type { BuildRequest, BuildResult } from '../src/builders/types.js';
import type { BuilderPin, Target } from '../src/graph/types.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { sha256File } from '../src/util/hash.js';
import { PROJECT_ROOT, runCli } from './helpers/cli.js';
import {
  allVolumes,
  ensureBaseImage,
  ensureBuilderImage,
  obtainDocker,
  ourLeftovers,
  ensureTestLoaderImage,
  releaseDocker,
} from './helpers/docker.js';
import { debianTarget, exampleDriver, extractKernelRoot, obtainDebianKernels, type DebianKernel } from './helpers/kernel-headers.js';
import { skipOrFail } from './helpers/require.js';

// The Docker builder on a real dockerd (scripts/docker-daemon.sh), real
// images made from this repository (no registry), and real Debian 12 kernel
// headers (6.1 and 6.12, chosen from apt's index).

const EXAMPLE = join(PROJECT_ROOT, 'examples', 'probe');
const OS_RELEASE = { PRETTY_NAME: 'Debian GNU/Linux 12 (bookworm)', NAME: 'Debian GNU/Linux', VERSION_ID: '12', ID: 'debian' };

let skip: string | undefined;
let docker: Docker;
let scratch: string;
let kernels: DebianKernel[] = [];
const roots = new Map<string, string>();
let builderImage: ImageRef;
let loaderImage: ImageRef;
let volumesBefore: string[] = [];

before(async () => {
  const d = await obtainDocker();
  if (!d.ok) {
    skip = d.skip;
    return;
  }
  docker = d.docker;
  const base = await ensureBaseImage(docker);
  if (!base.ok) {
    skip = base.skip;
    return;
  }
  const k = await obtainDebianKernels();
  if (!k.ok) {
    skip = k.skip;
    return;
  }
  kernels = k.kernels;
  volumesBefore = await allVolumes(docker);
  builderImage = await ensureBuilderImage(docker);
  loaderImage = await ensureTestLoaderImage(docker, builderImage.tag);
  scratch = await mkdtemp(join(tmpdir(), 'falco-probes-docker-'));
  for (const kernel of kernels) roots.set(kernel.release, await extractKernelRoot(kernel, join(scratch, `root-${kernel.series}`)));
});

after(async () => {
  try {
    if (!skip && docker) {
      const left = await ourLeftovers(docker);
      assert.deepEqual(left.containers, [], 'containers labelled falco-probes=1 are left');
      assert.deepEqual(await allVolumes(docker), volumesBefore, 'the builds left volumes behind');
    }
  } finally {
    if (scratch) await rm(scratch, { recursive: true, force: true });
    await releaseDocker();
  }
});

let counter = 0;
async function requestFor(target: Target, kernel: DebianKernel, driverDir = EXAMPLE): Promise<BuildRequest> {
  const dir = join(scratch, `build-${++counter}`);
  await mkdir(join(dir, 'work'), { recursive: true });
  return {
    target,
    kernelRoot: roots.get(kernel.release)!,
    driverDir,
    workDir: join(dir, 'work'),
    outFile: join(dir, 'out', target.probeFile),
    logFile: join(dir, 'build.log'),
  };
}

function targetFor(kernel: DebianKernel, pin: BuilderPin, driver = exampleDriver()): Target {
  return { ...debianTarget(kernel, pin, driver), osRelease: OS_RELEASE };
}

/** A kbuild directory whose "compile" is the given recipe line (tests of limits). */
async function testDriver(name: string, makeRule: string, files: Record<string, string> = {}): Promise<string> {
  const dir = join(scratch, `driver-${name}`);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'Makefile'), `always-y += probe.o\nalways = $(always-y)\n$(obj)/probe.o: FORCE\n\t${makeRule}\n`);
  for (const [file, text] of Object.entries(files)) await writeFile(join(dir, file), text);
  return dir;
}

async function expectNoContainers(): Promise<void> {
  assert.deepEqual((await ourLeftovers(docker)).containers, []);
}

async function expectBuildError(promise: Promise<unknown>, pattern: RegExp): Promise<FalcoProbesError> {
  let caught: unknown;
  await promise.catch((err) => (caught = err));
  assert.ok(caught instanceof FalcoProbesError, `expected a FalcoProbesError, got ${String(caught)}`);
  assert.match(caught.message, pattern);
  return caught;
}

describe('Docker builder', () => {
  test('kbuild recipe: the example probe for two real kernels, byte-identical to the host builder', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const host = createHostBuilder();
    const dockerBuilder = createDockerBuilder({ docker });
    const [hostPin, dockerPin] = await Promise.all([host.pin(), dockerBuilder.pin()]);
    assert.equal(dockerPin.kind, 'docker');
    // The pin names the image's content (its package list), not the daemon's id for it.
    assert.match(dockerPin.kind === 'docker' ? dockerPin.image : '', /^sha256:[0-9a-f]{64}$/);
    assert.notEqual(dockerPin.kind === 'docker' && dockerPin.image, builderImage.id);
    // The same Debian clang inside and outside.
    assert.equal(dockerPin.clang, hostPin.clang);
    t.diagnostic(`builder image ${builderImage.id} (${dockerPin.clang})`);

    for (const kernel of kernels) {
      const hostReq = await requestFor(targetFor(kernel, hostPin), kernel);
      const dockerReq = await requestFor(targetFor(kernel, dockerPin), kernel);
      const [h, d] = (await Promise.all([host.build(hostReq), dockerBuilder.build(dockerReq)])) as [BuildResult, BuildResult];
      for (const req of [hostReq, dockerReq]) checkBpfObject(await readFile(req.outFile), req.outFile);
      assert.deepEqual(await sha256File(dockerReq.outFile), { sha256: d.sha256, size: d.size });
      assert.equal(d.sha256, h.sha256, `${kernel.release}: the Docker build differs from the host build`);
      assert.equal(d.size, h.size);
      const log = await readFile(dockerReq.logFile, 'utf8');
      assert.match(log, new RegExp(`make -C /usr/src/linux-headers-${kernel.release.replace(/[.+]/g, '\\$&')} M=/work/driver`));
      t.diagnostic(`${kernel.release}: ${d.sha256} (${d.size} bytes) from both builders`);
    }
    await expectNoContainers();
  });

  test('driver-loader recipe: the loader sees the target kernel, read-only inputs and no network', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const kernel = kernels[0]!;
    // A listener on every address of this machine: the build must not reach it.
    let connections = 0;
    const server: Server = createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((r) => server.listen(0, '0.0.0.0', r));
    const port = (server.address() as { port: number }).port;
    const hostAddresses = Object.values(networkInterfaces())
      .flat()
      .filter((a) => a && a.family === 'IPv4' && !a.internal)
      .map((a) => a!.address);
    try {
      const target0 = targetFor(kernel, { kind: 'host', clang: '' });
      const expected = {
        EXPECT_UNAME_R: kernel.release,
        EXPECT_UNAME_V: target0.kernel.version,
        EXPECT_UNAME_M: 'x86_64',
        EXPECT_OS_RELEASE: 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID="debian"',
        EXPECT_NO_CONNECT: [`127.0.0.1:${port}`, ...hostAddresses.map((a) => `${a}:${port}`)].join(' '),
      };
      const loader = createDockerBuilder({ docker, recipe: 'driver-loader', image: loaderImage.tag, loaderEnv: expected });
      const pin = await loader.pin();
      assert.match(pin.kind === 'docker' ? pin.image : '', /^sha256:[0-9a-f]{64}$/);
      const req = await requestFor(targetFor(kernel, pin), kernel);
      const result = await loader.build(req);
      checkBpfObject(await readFile(req.outFile), req.outFile);
      assert.equal((await sha256File(req.outFile)).sha256, result.sha256);
      const log = await readFile(req.logFile, 'utf8');
      for (const line of [
        `test-loader: uname -r = ${kernel.release}`,
        `test-loader: uname -v = ${target0.kernel.version}`,
        'test-loader: uname -m = x86_64',
        'test-loader: network interfaces = lo ',
        `test-loader: read-only: /usr/src/falco-1.0.0/Makefile`,
        `test-loader: read-only: /usr/src/linux-headers-${kernel.release}/Makefile`,
        'test-loader: read-only: /etc/os-release',
        `test-loader: no connection to 127.0.0.1:${port}`,
        `test-loader: wrote ~/.falco/1.0.0/x86_64/${req.target.probeFile}`,
      ])
        assert.ok(log.includes(line), `the loader's log lacks: ${line}`);
      assert.equal(connections, 0, 'a build connected to this machine');
      t.diagnostic(`loader build of ${kernel.release}: ${result.sha256} (${result.size} bytes)`);
    } finally {
      await new Promise((r) => server.close(r));
    }
    await expectNoContainers();
  });

  test('driver-loader recipe: a mock that does not hold fails the target', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const kernel = kernels[0]!;
    const loader = createDockerBuilder({
      docker,
      recipe: 'driver-loader',
      image: loaderImage.tag,
      loaderEnv: { EXPECT_UNAME_R: '9.9.9-not-this-kernel', EXPECT_UNAME_V: '', EXPECT_UNAME_M: 'x86_64', EXPECT_OS_RELEASE: '' },
    });
    const req = await requestFor(targetFor(kernel, await loader.pin()), kernel);
    const err = await expectBuildError(loader.build(req), /failed \(the container exited with 97\)/);
    assert.match(err.details ?? '', /CHECK FAILED: uname -r is '.*', expected '9\.9\.9-not-this-kernel'/);
    await expectNoContainers();
  });

  test('a build over its time limit is stopped and fails; a build over its memory limit is OOMKilled; no container stays', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const kernel = kernels[0]!;
    const sleeper = await testDriver('sleeper', 'sleep 600');
    const hog = await testDriver('hog', '$(HOSTCC) -O0 -o $(obj)/hog $(src)/hog.c && $(obj)/hog', {
      'hog.c':
        '#include <stdlib.h>\n#include <string.h>\nint main(void) {\n  for (;;) { char *p = malloc(1 << 24); if (!p) return 1; memset(p, 1, 1 << 24); }\n}\n',
    });
    const options: DockerBuilderOptions = { docker, memoryBytes: 96 * 1024 ** 2 };
    const limited = createDockerBuilder(options);
    const plain = createDockerBuilder({ docker });
    const pin = await limited.pin();

    const slowReq = {
      ...(await requestFor(targetFor(kernel, pin, exampleDriver({ name: 'sleeper' })), kernel, sleeper)),
      timeoutMs: 4_000,
    };
    const hogReq = await requestFor(targetFor(kernel, pin, exampleDriver({ name: 'hog' })), kernel, hog);
    const started = Date.now();
    const [slow, hungry] = await Promise.allSettled([plain.build(slowReq), limited.build(hogReq)]);
    assert.equal(slow.status, 'rejected');
    assert.equal(hungry.status, 'rejected');
    await expectBuildError(Promise.reject((slow as PromiseRejectedResult).reason), /timed out after 4 s and was stopped/);
    await expectBuildError(Promise.reject((hungry as PromiseRejectedResult).reason), /killed by the memory limit \(96 MiB, OOMKilled\)/);
    assert.ok(Date.now() - started < 60_000, 'the timeout did not stop the build in time');
    await expectNoContainers();
  });

  test('an aborted build and an interrupted process remove their containers', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const kernel = kernels[0]!;
    const sleeper = await testDriver('sleeper-abort', 'sleep 600');
    const b = createDockerBuilder({ docker });
    const pin = await b.pin();
    const controller = new AbortController();
    const req = {
      ...(await requestFor(targetFor(kernel, pin, exampleDriver({ name: 'sleeper' })), kernel, sleeper)),
      signal: controller.signal,
    };
    const pending = b.build(req);
    await waitForContainer(process.pid);
    controller.abort(new Error('test abort'));
    await expectBuildError(pending, /was cancelled/);
    await expectNoContainers();

    // SIGINT to a process whose build runs: the container goes before the process does.
    const req2 = await requestFor(targetFor(kernel, pin, exampleDriver({ name: 'sleeper' })), kernel, sleeper);
    const script = join(scratch, 'interrupted.mts');
    await writeFile(
      script,
      `import { createDockerBuilder } from ${JSON.stringify(join(PROJECT_ROOT, 'src/builders/docker.ts'))};\n` +
        `const req = JSON.parse(process.env.REQ);\n` +
        `await createDockerBuilder().build(req);\n`,
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, REQ: JSON.stringify(req2) },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<NodeJS.Signals | number | null>((r) => child.on('exit', (code, sig) => r(sig ?? code)));
    try {
      await waitForContainer(child.pid!);
      child.kill('SIGINT');
      const how = await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 30_000))]);
      assert.equal(how, 'SIGINT', `the interrupted process ended with ${String(how)}: ${stderr}`);
    } finally {
      child.kill('SIGKILL');
    }
    await expectNoContainers();
  });

  test('errors: no daemon, a daemon that refuses, a missing base image, a failing image build', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const none = await runCli(['builder-image'], {
      cwd: PROJECT_ROOT,
      env: { DOCKER_HOST: `unix://${join(scratch, 'no-such.sock')}` },
      timeoutMs: 60_000,
    });
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no Docker daemon answers/);
    assert.match(none.stderr, /scripts\/docker-daemon\.sh start/);
    assert.match(none.stderr, /--builder host/);

    // builder-image prints the pin of the image (its content identity, clang and gcc), as kernels/drivers.yaml takes it.
    const found = await runCli(['builder-image'], { cwd: PROJECT_ROOT, timeoutMs: 60_000 });
    assert.equal(found.code, 0, found.stderr);
    const pin = await createDockerBuilder({ docker, image: builderImage.id, pinMemoDir: false }).pin();
    assert.ok(pin.kind === 'docker');
    assert.equal(found.stdout, `image: ${pin.image}\nclang: ${pin.clang}\ngcc: ${JSON.stringify(pin.gcc ?? '')}\n`);
    const json = await runCli(['builder-image', '--json'], { cwd: PROJECT_ROOT, timeoutMs: 60_000 });
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), {
      release: 'bookworm',
      image: pin.image,
      imageId: builderImage.id,
      clang: pin.clang,
      gcc: pin.gcc ?? null,
    });

    const socket = process.env['DOCKER_HOST']?.startsWith('unix://') ? process.env['DOCKER_HOST'].slice('unix://'.length) : undefined;
    if (process.getuid?.() === 0 && socket) {
      const refused = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [join(PROJECT_ROOT, 'bin', 'falco-probes.js'), 'builder-image'], {
          cwd: tmpdir(),
          uid: 65534,
          gid: 65534,
          env: { ...process.env, HOME: tmpdir(), CI: 'true' },
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let stderr = '';
        child.stderr.on('data', (d) => (stderr += d));
        const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
        child.on('exit', (code) => {
          clearTimeout(timer);
          resolve({ code, stderr });
        });
      });
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /the Docker daemon refuses this user \(EACCES\)/);
    }

    const dir = join(scratch, 'image-defs');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'Dockerfile.missing'), 'FROM falco-probes-test/no-such-base:1\n');
    await writeFile(join(dir, 'Dockerfile.failing'), 'FROM debian:bookworm\nRUN echo image-build-marker-line && exit 3\n');
    await assert.rejects(
      ensureImage(docker, {
        repository: 'falco-probes-test/missing',
        contextDir: dir,
        files: ['Dockerfile.missing'],
        baseImages: ['falco-probes-test/no-such-base:1'],
        missingBaseHint: 'run make-base',
      }),
      (err: unknown) =>
        err instanceof FalcoProbesError &&
        /base image falco-probes-test\/no-such-base:1 is missing/.test(err.message) &&
        err.hint === 'run make-base',
    );
    await assert.rejects(
      ensureImage(docker, {
        repository: 'falco-probes-test/failing',
        contextDir: dir,
        files: ['Dockerfile.failing'],
        baseImages: ['debian:bookworm'],
        missingBaseHint: '',
      }),
      (err: unknown) =>
        err instanceof FalcoProbesError &&
        err.kind === 'docker' &&
        /image build of falco-probes-test\/failing:\w+ failed/.test(err.message) &&
        /image-build-marker-line/.test(err.details ?? '') &&
        err.location.file === join(dir, 'Dockerfile.failing'),
    );
    await expectNoContainers();
  });
});

/** Wait until a build container of process `owner` runs (bounded); other test files may run containers on this daemon meanwhile. */
async function waitForContainer(owner: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    // Build containers carry the target's label (the pin's `clang --version` container does not).
    const list = await docker.listContainers({
      filters: { label: ['falco-probes=1', 'falco-probes.target', `falco-probes.pid=${owner}`], status: ['running'] },
    });
    if (list.length > 0) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('no container started within 60 s');
}
