import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type Docker from 'dockerode';
import { createDockerBuilder } from '../src/builders/docker.js';
import { checkBpfObject } from '../src/builders/elf.js';
import { loadBuildGraph } from '../src/graph/load.js';
import { targetKey } from '../src/graph/key.js';
import type { BuilderPin } from '../src/graph/types.js';
import { readIndex } from '../src/repository/index-file.js';
import type { BuildReport } from '../src/run/runner.js';
import { sha256Hex } from '../src/util/hash.js';
import { parseBuilderOptions } from '../src/cli/builder-option.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { runCli, withTempDir } from './helpers/cli.js';
import { finishDockerTests, obtainDockerBuildSetup } from './helpers/docker.js';
import { loaderFileFor, type DebianKernel } from './helpers/kernel-headers.js';
import { descriptors, OS, snapshot, startDebMirror, writeProject } from './build-e2e-project.js';
import { skipOrFail } from './helpers/require.js';

// The user-facing Docker path through the real binary: `build --builder
// docker` publishes into the repository under a key that names the builder
// image, with the host builder's bytes; `build-probe` (what Make and Please
// call) reaches the Docker builder by its option and by FALCO_PROBES_BUILDER.
// A real dockerd (test/helpers/docker.ts), the builder image made from this
// repository, real Debian headers from a loopback mirror; one kernel.

const TIMEOUT = 600_000;
const RUN_TIMEOUT = 300_000;

let skip: string | undefined;
let docker: Docker;
let kernels: DebianKernel[] = [];

before(async () => {
  const setup = await obtainDockerBuildSetup();
  if (!setup.ok) {
    skip = setup.skip;
    return;
  }
  ({ docker, kernels } = setup);
});

after(() => finishDockerTests(skip ? undefined : docker));

interface ProbeJson {
  label: string;
  key: string;
  builder: BuilderPin;
  file: string;
  sha256: string;
  size: number;
}

test('build --builder docker publishes the host bytes under the image key; build-probe reaches Docker by option and by FALCO_PROBES_BUILDER', {
  timeout: TIMEOUT,
}, async (t) => {
  if (skip) return skipOrFail(t, skip);
  // Both kernels are in the lockfile; one is built (selection by label works with the Docker builder too).
  const kernel = kernels[0]!;
  const label = `//probes/${OS}:${kernel.release}`;

  await withTempDir(async (dir) => {
    const mirror = await startDebMirror(dir, kernels);
    try {
      const root = join(dir, 'project');
      const cache = join(dir, 'cache');
      await writeProject(root, { kernels: descriptors(kernels), mirrorUrl: mirror.url });
      const fetchArgs = ['--fetch-via', 'http', '--cache', cache];
      const cli = (args: string[], env: Record<string, string> = {}) => runCli(args, { cwd: root, env, timeoutMs: RUN_TIMEOUT });
      const timed = async (what: string, args: string[], env: Record<string, string> = {}) => {
        const t0 = performance.now();
        const r = await cli(args, env);
        t.diagnostic(`${what}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        assert.equal(r.code, 0, `${what}\n${r.stderr}`);
        return r;
      };
      const repo = join(root, 'repository');

      // The host builder's probe and key for this kernel (the key the generated files hold).
      const hostRun = await timed('host build-probe', [
        'build-probe',
        OS,
        kernel.release,
        '--out',
        join(dir, 'host.o'),
        '--json',
        ...fetchArgs,
      ]);
      const host = JSON.parse(hostRun.stdout) as ProbeJson;
      assert.equal(host.builder.kind, 'host');
      const hostBytes = await readFile(join(dir, 'host.o'));
      assert.equal(sha256Hex(hostBytes), host.sha256);
      checkBpfObject(hostBytes, 'host.o');

      // The key the Docker builder should give: the generated target keyed with the builder image's pin.
      const graph = await loadBuildGraph(root);
      const generated = graph.targets.find((x) => x.label === label)!;
      assert.equal(generated.key, host.key);
      const dockerPin = await createDockerBuilder({ docker }).pin();
      assert.equal(dockerPin.kind, 'docker');
      const expectedKey = targetKey({
        kernel: generated.kernel,
        osRelease: generated.osRelease,
        driver: generated.driver,
        builder: dockerPin,
        kind: generated.kind,
      });
      assert.notEqual(expectedKey, host.key);

      // build --builder docker: published in Falco's layout, keyed for the image, with the host's bytes.
      const first = await timed('build --builder docker', ['build', label, '--builder', 'docker', '--json', ...fetchArgs]);
      const report = JSON.parse(first.stdout) as BuildReport;
      assert.deepEqual([report.targets, report.built, report.failed], [1, 1, 0]);
      // The image's pin is remembered beside the --cache folder (docker-pins/), for the next process.
      assert.equal((await readdir(join(dir, 'docker-pins'))).filter((f) => f.endsWith('.json')).length, 1);
      assert.equal(report.results[0]!.key, expectedKey);
      const index = await readIndex(repo);
      assert.equal(index.probes.length, 1);
      const entry = index.probes[0]!;
      assert.equal(entry.file, `1.0.0/x86_64/${loaderFileFor(kernel)}`);
      assert.equal(entry.kernel, kernel.release);
      assert.equal(entry.key, expectedKey);
      assert.equal(entry.sha256, host.sha256, 'the Docker build differs from the host build');
      const published = await readFile(join(repo, entry.file));
      assert.equal(sha256Hex(published), entry.sha256);
      assert.equal(published.length, entry.size);
      checkBpfObject(published, entry.file);
      const sums = await readFile(join(repo, 'SHA256SUMS'), 'utf8');
      assert.ok(sums.includes(`${entry.sha256}  ${entry.file}`), sums);

      // The host builder sees the entry as built for another key: the keys say which builder made it.
      const hostDry = await cli(['build', label, '--dry-run', '--json']);
      assert.equal(hostDry.code, 0, hostDry.stderr);
      assert.deepEqual(
        (JSON.parse(hostDry.stdout) as BuildReport).results.map((r) => [r.label, r.status, r.reason]),
        [[label, 'would-build', 'key-changed']],
      );

      // An identical second Docker run builds nothing and touches nothing.
      const before = await snapshot(repo);
      const again = await timed('build --builder docker (again)', ['build', label, '--builder', 'docker', '--json', ...fetchArgs]);
      const againReport = JSON.parse(again.stdout) as BuildReport;
      assert.deepEqual([againReport.built, againReport.upToDate], [0, 1]);
      assert.deepEqual(await snapshot(repo), before);

      // build-probe --builder docker: the same bytes, the image's key, the repository untouched.
      const byOption = await timed('build-probe --builder docker', [
        'build-probe',
        OS,
        kernel.release,
        '--builder',
        'docker',
        '--out',
        join(dir, 'option.o'),
        '--json',
        ...fetchArgs,
      ]);
      const optionJson = JSON.parse(byOption.stdout) as ProbeJson;
      assert.deepEqual([optionJson.key, optionJson.builder], [expectedKey, dockerPin]);
      assert.equal(sha256Hex(await readFile(join(dir, 'option.o'))), host.sha256);

      // As a Make recipe or Please rule runs it: the command line fixed, the builder from the
      // environment, and FALCO_PROBES_KEY the generated (host) key, which still passes the check.
      const byEnv = await timed(
        'FALCO_PROBES_BUILDER=docker build-probe',
        ['build-probe', OS, kernel.release, '--driver', 'example', '--out', join(dir, 'env.o'), '--json', ...fetchArgs],
        {
          FALCO_PROBES_BUILDER: 'docker',
          FALCO_PROBES_KEY: host.key,
        },
      );
      const envJson = JSON.parse(byEnv.stdout) as ProbeJson;
      assert.deepEqual([envJson.key, envJson.builder], [expectedKey, dockerPin]);
      assert.match(byEnv.stderr, /with the Docker builder/);
      assert.deepEqual(await readFile(join(dir, 'env.o')), hostBytes);
      assert.deepEqual(await snapshot(repo), before);

      // The recipe's key is checked against the generated files' key, not the image's: an image key there is stale.
      const stale = await cli(['build-probe', OS, kernel.release, '--out', join(dir, 'stale.o')], {
        FALCO_PROBES_BUILDER: 'docker',
        FALCO_PROBES_KEY: expectedKey,
      });
      assert.equal(stale.code, 1);
      assert.match(stale.stderr, /the build file asks for key [0-9a-f]{12}, but the lockfiles and pins give [0-9a-f]{12}/);
    } finally {
      await mirror.close();
    }
  });
});

test('the builder options: FALCO_PROBES_BUILDER is the default, the command line wins, bad values are refused before anything runs', async () => {
  const docker = { kind: 'docker', recipe: 'kbuild', memoryBytes: 4096 * 1024 * 1024, cpus: 1 };
  assert.deepEqual(parseBuilderOptions({}, {}), { kind: 'host' });
  assert.deepEqual(parseBuilderOptions({}, { FALCO_PROBES_BUILDER: '' }), { kind: 'host' });
  assert.deepEqual(parseBuilderOptions({}, { FALCO_PROBES_BUILDER: 'docker' }), docker);
  assert.deepEqual(parseBuilderOptions({ builder: 'host' }, { FALCO_PROBES_BUILDER: 'docker' }), { kind: 'host' });
  assert.deepEqual(
    parseBuilderOptions({ 'docker-memory': '512', 'docker-cpus': '2', 'docker-image': 'img:1' }, { FALCO_PROBES_BUILDER: 'docker' }),
    {
      ...docker,
      memoryBytes: 512 * 1024 * 1024,
      cpus: 2,
      image: 'img:1',
    },
  );
  for (const [values, env, message] of [
    [{}, { FALCO_PROBES_BUILDER: 'podman' }, /^FALCO_PROBES_BUILDER expects host or docker, got "podman"$/],
    [{ builder: 'podman' }, { FALCO_PROBES_BUILDER: 'docker' }, /^--builder expects host or docker/],
    [{ builder: 'host', 'docker-cpus': '2' }, { FALCO_PROBES_BUILDER: 'docker' }, /^--docker-cpus needs --builder docker$/],
    [{ 'docker-recipe': 'make' }, { FALCO_PROBES_BUILDER: 'docker' }, /^--docker-recipe expects kbuild or driver-loader/],
  ] as const) {
    assert.throws(
      () => parseBuilderOptions(values, env),
      (err: unknown) => err instanceof FalcoProbesError && err.kind === 'usage' && message.test(err.message),
    );
  }

  // Through the real binary: before any project file is read (there is none here), exit 2 with the reason.
  await withTempDir(async (dir) => {
    const bad = await runCli(['build-probe', 'anyos', 'anykernel', '--out', join(dir, 'x.o')], {
      cwd: dir,
      env: { FALCO_PROBES_BUILDER: 'podman' },
    });
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /FALCO_PROBES_BUILDER expects host or docker, got "podman"/);
    const hostWins = await runCli(
      ['build-probe', 'anyos', 'anykernel', '--builder', 'host', '--docker-cpus', '2', '--out', join(dir, 'x.o')],
      { cwd: dir, env: { FALCO_PROBES_BUILDER: 'docker' } },
    );
    assert.equal(hostWins.code, 2, hostWins.stderr);
    assert.match(hostWins.stderr, /--docker-cpus needs --builder docker/);
    const help = await runCli(['build-probe', '--help'], { cwd: dir });
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--builder host\|docker/);
    assert.match(help.stdout, /FALCO_PROBES_BUILDER=docker/);
  });
});
