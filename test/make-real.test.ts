import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BIN, runCli, withTempDir } from './helpers/cli.js';
import { obtainDebianKernels } from './helpers/kernel-headers.js';
import { descriptors, startDebMirror, writeOs, writeProject, OS } from './build-e2e-project.js';
import { readIndex } from '../src/repository/index-file.js';
import { sha256Hex } from '../src/util/hash.js';
import type { BuildReport } from '../src/run/runner.js';
import type { KernelDescriptor } from '../src/config/types.js';
import { skipOrFail } from './helpers/require.js';

// The generated Makefile with real GNU make and the real tool in its recipes,
// on a real Debian kernel with the example probe: Make publishes through the
// same path as `build` (index, sums, lock), so `build --dry-run` finds nothing
// to do after it, and a lockfile change that only touches the image package
// (read by verify-load alone) rebuilds nothing, for Make or for build.

const TIMEOUT = 600_000;

test('make builds through build: then build --dry-run says 0 to build; an image-package-only lockfile change rebuilds nothing', {
  timeout: TIMEOUT,
}, async (t) => {
  const obtained = await obtainDebianKernels();
  if (!obtained.ok) return skipOrFail(t, obtained.skip);
  const kernels = obtained.kernels.slice(0, 1);
  await withTempDir(async (dir) => {
    const mirror = await startDebMirror(dir, kernels);
    try {
      const root = join(dir, 'project');
      const cache = join(dir, 'cache');
      const described = descriptors(kernels);
      await writeProject(root, { kernels: described, mirrorUrl: mirror.url });
      const gen = await runCli(['generate'], { cwd: root });
      assert.equal(gen.code, 0, gen.stderr);
      // Asynchronous: the loopback mirror serves from this process while make runs.
      const make = (...args: string[]) =>
        new Promise<{ status: number | null; stdout: string; stderr: string }>((resolvePromise, reject) => {
          const child = spawn(
            'make',
            [
              '-f',
              'generated/Makefile',
              `FALCO_PROBES=${process.execPath} ${BIN}`,
              `FALCO_PROBES_BUILD_FLAGS=--fetch-via http --cache ${cache}`,
              ...args,
            ],
            {
              cwd: root,
              env: { ...process.env, MAKEFLAGS: '', CI: 'true' },
              stdio: ['ignore', 'pipe', 'pipe'],
            },
          );
          let stdout = '';
          let stderr = '';
          child.stdout.on('data', (d) => (stdout += d));
          child.stderr.on('data', (d) => (stderr += d));
          const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT);
          child.on('error', reject);
          child.on('close', (status) => {
            clearTimeout(timer);
            resolvePromise({ status, stdout, stderr });
          });
        });
      const dryRun = async () => {
        const r = await runCli(['build', '--dry-run', '--json', '--fetch-via', 'http', '--cache', cache], {
          cwd: root,
          timeoutMs: TIMEOUT,
        });
        assert.equal(r.code, 0, r.stderr);
        return JSON.parse(r.stdout) as BuildReport;
      };

      const built = await make(OS);
      assert.equal(built.status, 0, `${built.stdout}\n${built.stderr}`);
      const index = await readIndex(join(root, 'repository'));
      assert.equal(index.probes.length, 1, 'make published through build: the index lists the probe');
      const probe = index.probes[0]!;
      const bytes = await readFile(join(root, 'repository', probe.file));
      assert.equal(sha256Hex(bytes), probe.sha256);
      const sums = await readFile(join(root, 'repository', 'SHA256SUMS'), 'utf8');
      assert.ok(sums.includes(`${probe.sha256}  ${probe.file}`), sums);

      const after = await dryRun();
      assert.equal(after.results.filter((r) => r.status === 'would-build').length, 0, 'build --dry-run after make: 0 to build');
      assert.equal(after.upToDate, 1);
      assert.equal((await make('-q', OS)).status, 0, 'make -q: up to date');
      const mtime = (await stat(join(root, 'repository', probe.file))).mtimeMs;
      assert.equal((await make(OS)).status, 0);
      assert.equal((await stat(join(root, 'repository', probe.file))).mtimeMs, mtime, 'a second make replaces nothing');

      // Debian moves the bootable image from -unsigned to the signed package: only verify-load reads it.
      const withImage: KernelDescriptor[] = described.map((k) => ({
        ...k,
        packages: [
          ...k.packages,
          {
            name: `linux-image-${k.release}`,
            version: k.packages[0]!.version,
            role: 'image',
            repository: k.packages[0]!.repository,
            path: `pool/main/l/linux-signed-amd64/linux-image-${k.release}_${k.packages[0]!.version}_amd64.deb`,
            sha256: sha256Hex('a signed image'),
            size: 4096,
          },
        ],
      }));
      await writeOs(root, OS, mirror.url, withImage);
      const regen = await runCli(['generate'], { cwd: root });
      assert.equal(regen.code, 0, regen.stderr);
      assert.match(regen.stdout, /0 file\(s\) written/, 'no generated file changes: no key moved');
      assert.equal((await dryRun()).results.filter((r) => r.status === 'would-build').length, 0, 'an image-only change: 0 to build');
      assert.equal((await make('-q', OS)).status, 0, 'make -q still up to date');
    } finally {
      await mirror.close();
    }
  });
});
