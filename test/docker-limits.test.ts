import assert from 'node:assert/strict';
import { loaderFileFor } from './helpers/kernel-headers.js';
import { spawnSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type Docker from 'dockerode';
import { readIndex } from '../src/repository/index-file.js';
import type { BuildReport } from '../src/run/runner.js';
import { runCli, withTempDir } from './helpers/cli.js';
import { finishDockerTests, obtainDockerBuildSetup, ourLeftovers } from './helpers/docker.js';
import type { DebianKernel } from './helpers/kernel-headers.js';
import { descriptors, OS, startDebMirror, writeProject } from './build-e2e-project.js';
import { skipOrFail } from './helpers/require.js';

// Issue 5: a container killed by the memory limit or the timeout fails its
// target, and the others go on. Through the real binary (`build --builder
// docker --keep-going -j 2`) on a real dockerd and a real Debian kernel:
// three drivers for one kernel, the example probe (fits both limits), one
// whose build allocates without end (over --docker-memory) and one whose
// build sleeps (over --timeout).

const TIMEOUT = 240_000;
// Far above what the example probe's build needs, far below what the hog reaches within the timeout.
const MEMORY_MIB = 768;
// Room for the example probe's build on a slow or busy CI machine (it takes 3 to 20 s here); the sleeper sleeps 600 s.
const TIMEOUT_S = 45;

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

/** A drivers.yaml entry for a kbuild driver under examples/<name>. */
function driverEntry(name: string, version: string): string {
  return `  - name: ${name}
    version: ${version}
    source:
      path: examples/${name}
    recipe: kbuild
    bpfDir: .
    object: probe.o
    kinds: [bpf]
`;
}

/** A kbuild driver whose "compile" of probe.o is the given recipe line. */
async function writeDriver(root: string, name: string, makeRule: string, files: Record<string, string> = {}): Promise<void> {
  const dir = join(root, 'examples', name);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'Makefile'), `always-y += probe.o\nalways = $(always-y)\n$(obj)/probe.o: FORCE\n\t${makeRule}\n`);
  for (const [file, text] of Object.entries(files)) await writeFile(join(dir, file), text);
}

test('build --builder docker --keep-going: the target over the memory limit and the one over the timeout fail, the other is published', {
  timeout: TIMEOUT,
}, async (t) => {
  if (skip) return skipOrFail(t, skip);
  const kernel = kernels[0]!;
  await withTempDir(async (dir) => {
    const mirror = await startDebMirror(dir, [kernel]);
    try {
      const root = join(dir, 'project');
      await writeProject(root, {
        kernels: descriptors([kernel]),
        mirrorUrl: mirror.url,
        extraDrivers: driverEntry('hog', '0.8.0') + driverEntry('sleeper', '0.7.0'),
      });
      await writeDriver(root, 'hog', '$(HOSTCC) -O0 -o $(obj)/hog $(src)/hog.c && $(obj)/hog', {
        'hog.c':
          '#include <stdlib.h>\n#include <string.h>\nint main(void) {\n  for (;;) { char *p = malloc(1 << 24); if (!p) return 1; memset(p, 1, 1 << 24); }\n}\n',
      });
      await writeDriver(root, 'sleeper', 'sleep 600');

      const started = performance.now();
      const run = await runCli(
        [
          'build',
          '--builder',
          'docker',
          '--keep-going',
          '-j',
          '2',
          '--docker-memory',
          String(MEMORY_MIB),
          '--timeout',
          String(TIMEOUT_S),
          '--fetch-via',
          'http',
          '--cache',
          join(dir, 'cache'),
          '--json',
        ],
        { cwd: root, timeoutMs: TIMEOUT - 30_000 },
      );
      t.diagnostic(`build: ${((performance.now() - started) / 1000).toFixed(1)} s`);
      assert.equal(run.code, 1, run.stderr);
      const report = JSON.parse(run.stdout) as BuildReport;
      const byLabel = new Map(report.results.map((r) => [r.label, r]));
      // Three driver entries apply: each target is <kernel>-<driver>-<version>.
      const versions: Record<string, string> = { example: '1.0.0', hog: '0.8.0', sleeper: '0.7.0' };
      const at = (driver: string) => {
        const r = byLabel.get(`//probes/${OS}:${kernel.release}-${driver}-${versions[driver]}`);
        assert.ok(r, `no result for ${driver}: ${[...byLabel.keys()].join(', ')}`);
        return r;
      };
      assert.deepEqual([report.targets, report.built, report.failed, report.skipped], [3, 1, 2, 0]);
      assert.equal(at('example').status, 'built');
      assert.equal(at('hog').status, 'failed');
      assert.equal(at('hog').errorKind, 'build');
      assert.match(at('hog').error!, new RegExp(`killed by the memory limit \\(${MEMORY_MIB} MiB, OOMKilled\\)`));
      assert.equal(at('sleeper').status, 'failed');
      assert.equal(at('sleeper').errorKind, 'build');
      assert.match(at('sleeper').error!, new RegExp(`timed out after ${TIMEOUT_S} s and was stopped`));
      assert.match(run.stderr, /raise the Docker builder's memory limit/);
      assert.match(run.stderr, /raise the build timeout/);

      // The index holds exactly the good probe, and agrees with the files.
      const repo = join(root, 'repository');
      const index = await readIndex(repo);
      assert.deepEqual(
        index.probes.map((p) => p.file),
        [`1.0.0/x86_64/${loaderFileFor(kernel)}`],
      );
      const sums = spawnSync('sha256sum', ['-c', '--quiet', 'SHA256SUMS'], { cwd: repo, encoding: 'utf8' });
      assert.equal(sums.status, 0, sums.stdout + sums.stderr);
      assert.deepEqual((await ourLeftovers(docker)).containers, []);
    } finally {
      await mirror.close();
    }
  });
});
