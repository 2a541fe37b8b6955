import assert from 'node:assert/strict';
import { cp, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type Docker from 'dockerode';
import { createDockerBuilder } from '../src/builders/docker.js';
import { createHostBuilder } from '../src/builders/host.js';
import type { Builder } from '../src/builders/types.js';
import { extractPackage } from '../src/fetch/extract.js';
import { loadDrivers } from '../src/config/drivers.js';
import { resolveDriverIdentities } from '../src/graph/driver-identity.js';
import type { BuilderPin, DriverKind, ResolvedDriver, Target } from '../src/graph/types.js';
import { createDriverSources } from '../src/fetch/driver-source.js';
import { PROJECT_ROOT } from './helpers/cli.js';
import { finishDockerTests, obtainDockerBuildSetup } from './helpers/docker.js';
import { debianTarget, sharedKernelRoot, type DebianKernel } from './helpers/kernel-headers.js';
import { skipOrFail } from './helpers/require.js';

// Same key, same bytes, anywhere (issue "Reproducible real drivers on any
// machine"): Debian's real scap driver, module and legacy probe, for a
// Debian 12 kernel, built
//   - on the host while /usr/src/linux-headers-<abi>-common (the kernel's
//     -common tree, which llc would read BTF line text from were the build's
//     paths recorded as the kernel's own) exists on this machine,
//   - on the host again from a driver checkout at another path,
//   - in the Docker builder image (kernel trees mounted at their own paths),
// must give one sha256 per artifact.

let skip: string | undefined;
let docker: Docker | undefined;
let kernel: DebianKernel;
let scratch: string;
let scap: ResolvedDriver;
let driverDir: string;

before(async () => {
  const setup = await obtainDockerBuildSetup();
  if (!setup.ok) {
    skip = setup.skip;
    return;
  }
  docker = setup.docker;
  kernel = setup.kernels[0]!;
  scratch = await mkdtemp(join(tmpdir(), 'falco-probes-repro-'));
  const drivers = await loadDrivers(join(PROJECT_ROOT, 'kernels', 'drivers.yaml'));
  const found = (await resolveDriverIdentities(drivers, PROJECT_ROOT)).resolved.find((d) => d.name === 'scap');
  assert.ok(found, 'kernels/drivers.yaml has the scap driver');
  scap = found;
  // Fetched from Debian's archive through the mirror this machine's apt names, checked by sha256.
  driverDir = await createDriverSources({
    projectRoot: PROJECT_ROOT,
    cacheDir: join(scratch, 'cache'),
    extract: async (file, dest, o) => {
      await extractPackage(file, 'tgz', dest, { strip: o.strip });
    },
  })(scap);
});

after(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
  await finishDockerTests(docker);
});

let counter = 0;
async function buildWith(builder: Builder, pin: BuilderPin, kind: DriverKind, sourceDir: string): Promise<string> {
  const dir = join(scratch, `b${++counter}`);
  await mkdir(join(dir, 'work'), { recursive: true });
  const target: Target = { ...debianTarget(kernel, pin, scap), kind };
  const result = await builder.build({
    target,
    kernelRoot: await sharedKernelRoot(kernel),
    driverDir: sourceDir,
    workDir: join(dir, 'work'),
    outFile: join(dir, 'out'),
    logFile: join(dir, 'log'),
  });
  assert.equal(result.size, (await readFile(join(dir, 'out'))).length);
  return result.sha256;
}

test("scap's module and probe: the host (with the kernel's -common tree in /usr/src), another checkout path and Docker give the same bytes", {
  timeout: 30 * 60_000,
}, async (t) => {
  if (skip) return skipOrFail(t, skip);
  const host = createHostBuilder();
  const inDocker = createDockerBuilder({ docker: docker!, pinMemoDir: false });
  const [hostPin, dockerPin] = await Promise.all([host.pin(), inDocker.pin()]);
  assert.equal(dockerPin.gcc, hostPin.gcc, "the image has the host's gcc (both bookworm)");
  assert.equal(dockerPin.clang, hostPin.clang);

  // The kernel's own -common tree where Debian installs it, as on a machine with these headers installed.
  const root = await sharedKernelRoot(kernel);
  const common = `linux-headers-${kernel.abi}-common`;
  const installed = join('/usr/src', common);
  let placed = false;
  try {
    await cp(join(root, 'usr', 'src', common), installed, { recursive: true, verbatimSymlinks: true, errorOnExist: true, force: false });
    placed = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ERR_FS_CP_EEXIST' && (err as NodeJS.ErrnoException).code !== 'EACCES') throw err;
    t.diagnostic(`${installed}: ${(err as Error).message} (kept as it is)`);
  }
  const otherCheckout = join(scratch, 'another', 'checkout', 'path', 'scap-0.23.2');
  await cp(driverDir, otherCheckout, { recursive: true, verbatimSymlinks: true });
  try {
    for (const kind of ['kmod', 'bpf'] as const) {
      // The three builds at once (each is one make -j1; the container is held to one CPU).
      const [withCommon, elsewhere, docked] = await Promise.all([
        buildWith(host, hostPin, kind, driverDir),
        buildWith(host, hostPin, kind, otherCheckout),
        buildWith(inDocker, dockerPin, kind, driverDir),
      ]);
      t.diagnostic(`scap ${kind} ${kernel.release}: host ${withCommon}, other path ${elsewhere}, docker ${docked}`);
      assert.equal(elsewhere, withCommon, `${kind}: another checkout path changed the bytes`);
      assert.equal(docked, withCommon, `${kind}: the Docker build differs from the host build`);
    }
  } finally {
    if (placed) await rm(installed, { recursive: true, force: true });
  }
});
