import assert from 'node:assert/strict';
import { mkdir, readFile, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { checkKernelModule, moduleInfo, readElf } from '../src/builders/elf.js';
import { loaderRequestPaths } from '../src/naming/loader-names.js';
import { sha256Hex } from '../src/util/hash.js';
import { descriptors, OS, startDebMirror, writeProject } from './build-e2e-project.js';
import { PROJECT_ROOT, runCli, withTempDir } from './helpers/cli.js';
import { obtainDebianKernels, type DebianKernel } from './helpers/kernel-headers.js';
import { startMirror } from './helpers/server.js';
import { imagePackage } from './helpers/kernel-image.js';
import { dirname } from 'node:path';
import { FALCO_LIBS, haveFalcoLibs, skipOrFail } from './helpers/require.js';

// The real drivers end to end through the real binary, as a Falco node sees
// them: Debian's scap driver (falcosecurity-scap-dkms 0.23.2-6, pinned in
// drivers.yaml like a kernel package and downloaded from Debian's archive
// through the mirror this machine's apt names) built as kernel module and
// legacy probe for a Debian 12 6.1 and 6.12 kernel, published, and fetched
// back over HTTP at exactly the paths Falco's two loaders request. With
// ../shared/falco-libs, Falco 10.2.0+driver's module too, from the upstream
// tarball pinned by its tree hash and served on loopback through
// --driver-mirror. The scap artifacts are then load-tested in their own
// kernels under qemu (verify-load): the module must load (insmod, /dev/scap0,
// rmmod); the legacy probe's verdict is the kernel verifier's, whatever it is.

const TIMEOUT = 20 * 60_000;
const LIBS_URL = 'https://github.com/falcosecurity/libs/archive/refs/tags/';

/** kernels/drivers.yaml's own scap entry, read from the project's file (so the test builds what the main job builds). */
async function projectDriverEntry(name: string, version: string): Promise<string> {
  const text = await readFile(join(PROJECT_ROOT, 'kernels', 'drivers.yaml'), 'utf8');
  const entries = text.split(/\n(?= {2}- name: )/);
  const entry = entries.find((e) => e.startsWith(`  - name: ${name}\n    version: ${version}\n`));
  assert.ok(entry, `kernels/drivers.yaml has ${name} ${version}`);
  return `${entry.replace(/\n+$/, '')}\n`;
}

/** What Falco's loaders ask for on a Debian node: the release rebuilt from uname -v (package version) plus the flavour. */
function debianFile(driver: string, kernel: DebianKernel, ext: 'o' | 'ko'): string {
  const release = `${/^\d+\.\d+\.\d+-\d+/.exec(kernel.version)![0]}-amd64`;
  return `${driver}_debian_${release}_1.${ext}`;
}

interface IndexEntry {
  file: string;
  sha256: string;
  kind: string;
}

async function checkServed(published: string, kernel: DebianKernel, driver: string, version: string, kind: 'bpf' | 'kmod'): Promise<void> {
  const index = JSON.parse(await readFile(join(published, 'index.json'), 'utf8')) as { probes: IndexEntry[] };
  const file = debianFile(driver, kernel, kind === 'kmod' ? 'ko' : 'o');
  const entry = index.probes.find((p) => p.file === `${version}/x86_64/${file}`);
  assert.ok(entry, `index.json lists ${version}/x86_64/${file} (it has ${index.probes.map((p) => p.file).join(', ')})`);
  const server = await startMirror({ root: published });
  try {
    const k = {
      targetId: 'debian',
      release: kernel.release,
      version: `#1 SMP PREEMPT_DYNAMIC Debian ${kernel.version}`,
      kernelVersion: '1',
      machine: 'x86_64' as const,
    };
    const paths = loaderRequestPaths(version, k, driver, kind);
    for (const [loader, path] of Object.entries(paths)) {
      const res = await fetch(`${server.url}/${path}`);
      assert.equal(res.status, 200, `${loader} asks for ${path}`);
      const bytes = Buffer.from(await res.arrayBuffer());
      assert.equal(sha256Hex(bytes), entry.sha256, `${loader}: the bytes at ${path} are the indexed ones`);
      if (kind === 'kmod') checkKernelModule(bytes, path, kernel.release);
    }
  } finally {
    await server.close();
  }
}

test("Debian's scap driver: module and probe for a 6.1 and a 6.12 kernel, published where Falco's loaders look", {
  timeout: TIMEOUT,
}, async (t) => {
  const r = await obtainDebianKernels();
  if (!r.ok) return skipOrFail(t, r.skip);
  await withTempDir(async (dir) => {
    const mirror = await startDebMirror(dir, r.kernels);
    try {
      const root = join(dir, 'project');
      // Each kernel's bootable image too, served beside its headers, for verify-load.
      const kernels = descriptors(r.kernels);
      for (const [i, k] of r.kernels.entries()) {
        const image = await imagePackage(k);
        if ('skip' in image) return skipOrFail(t, image.skip);
        kernels[i]!.packages.push(image.ref);
        const at = join(dir, 'mirror', image.ref.path);
        await mkdir(dirname(at), { recursive: true });
        await symlink(image.debPath, at);
      }
      await writeProject(root, { kernels, mirrorUrl: mirror.url, extraDrivers: await projectDriverEntry('scap', '0.23.2') });
      const cache = ['--cache', join(dir, 'cache', 'packages')];
      const started = Date.now();
      const build = await runCli(['build', `//probes/${OS}/...`, '--label', 'driver=scap', '-j', '2', '--json', ...cache], {
        cwd: root,
        timeoutMs: TIMEOUT,
      });
      assert.equal(build.code, 0, build.stderr);
      t.diagnostic(`4 scap artifacts in ${((Date.now() - started) / 1000).toFixed(0)} s`);
      const report = JSON.parse(build.stdout) as { built: number };
      assert.equal(report.built, 4);

      for (const kernel of r.kernels) {
        const ko = await readFile(join(root, 'repository', '0.23.2', 'x86_64', debianFile('scap', kernel, 'ko')));
        const info = moduleInfo(ko, checkKernelModule(ko, 'scap.ko', kernel.release));
        assert.deepEqual(info.get('name'), ['scap']);
        assert.deepEqual(info.get('version'), ['0.23.2']);
        const probe = readElf(await readFile(join(root, 'repository', '0.23.2', 'x86_64', debianFile('scap', kernel, 'o'))), 'probe');
        assert.ok(probe.sections.filter((s) => s.startsWith('raw_tracepoint/filler/')).length > 100);
      }

      const published = join(dir, 'published');
      const publish = await runCli(['publish', '--to', published], { cwd: root, timeoutMs: TIMEOUT });
      assert.equal(publish.code, 0, publish.stderr);
      for (const kernel of r.kernels)
        for (const kind of ['kmod', 'bpf'] as const) await checkServed(published, kernel, 'scap', '0.23.2', kind);

      // A second run builds nothing and downloads nothing.
      const again = await runCli(['build', `//probes/${OS}/...`, '--label', 'driver=scap', '--json', ...cache], {
        cwd: root,
        timeoutMs: TIMEOUT,
      });
      assert.equal(again.code, 0, again.stderr);
      assert.equal((JSON.parse(again.stdout) as { built: number }).built, 0);

      // Load-tested in their own kernels (TCG): the kernel decides, for the module and for the probe.
      const verify = await runCli(
        ['verify-load', `//probes/${OS}/...`, '--label', 'driver=scap', '--json', '--allow-unverified', ...cache],
        { cwd: root, timeoutMs: TIMEOUT },
      );
      assert.ok(verify.code === 0 || verify.code === 1, verify.stderr);
      const verdicts = JSON.parse(verify.stdout) as { results: { label: string; verdict: string; message: string; ms?: number }[] };
      for (const res of verdicts.results) t.diagnostic(`${res.label}: ${res.verdict} (${res.message})`);
      const kmods = verdicts.results.filter((x) => x.label.endsWith('-kmod'));
      assert.equal(kmods.length, 2);
      for (const res of kmods) assert.equal(res.verdict, 'loaded', `${res.label}: ${res.message}`);
      for (const res of verdicts.results.filter((x) => x.label.endsWith('-bpf'))) {
        // A refusal must be the kernel's own (its verifier's log), never a loader that could not open the object.
        assert.ok(res.verdict === 'loaded' || res.verdict === 'refused', `${res.label}: ${res.verdict} ${res.message}`);
        assert.doesNotMatch(
          res.message ?? '',
          /not supported by libbpf|is static and not supported/,
          `${res.label}: refused in user space, not by the kernel`,
        );
      }
    } finally {
      await mirror.close();
    }
  });
});

test("Falco 10.2.0+driver's module from the tree-pinned upstream tarball, served through --driver-mirror, published under 10.2.0+driver", {
  timeout: TIMEOUT,
}, async (t) => {
  if (!haveFalcoLibs(t, ['libs-10.2.0-driver.tar.gz'])) return;
  const r = await obtainDebianKernels();
  if (!r.ok) return skipOrFail(t, r.skip);
  await withTempDir(async (dir) => {
    const kernel = r.kernels[0]!;
    const mirror = await startDebMirror(dir, [kernel]);
    // GitHub's name for the tag's archive, as the pin's URL says it.
    const tarballs = join(dir, 'tarballs');
    await mkdir(tarballs);
    await symlink(join(FALCO_LIBS, 'libs-10.2.0-driver.tar.gz'), join(tarballs, '10.2.0+driver.tar.gz'));
    const libs = await startMirror({ root: tarballs });
    try {
      const root = join(dir, 'project');
      await writeProject(root, {
        kernels: descriptors([kernel]),
        mirrorUrl: mirror.url,
        extraDrivers: await projectDriverEntry('falco', '10.2.0+driver'),
      });
      const build = await runCli(
        [
          'build',
          `//probes/${OS}/...`,
          '--label',
          'driver=falco',
          '--driver-mirror',
          `${LIBS_URL}=${libs.url}/`,
          '--cache',
          join(dir, 'cache', 'packages'),
        ],
        {
          cwd: root,
          timeoutMs: TIMEOUT,
        },
      );
      assert.equal(build.code, 0, build.stderr);
      const ko = await readFile(join(root, 'repository', '10.2.0+driver', 'x86_64', debianFile('falco', kernel, 'ko')));
      assert.deepEqual(moduleInfo(ko, checkKernelModule(ko, 'falco.ko', kernel.release)).get('version'), ['10.2.0+driver']);
      const published = join(dir, 'published');
      assert.equal((await runCli(['publish', '--to', published], { cwd: root })).code, 0);
      // falcoctl sends 10.2.0%2Bdriver; the old script escapes every + of the URL.
      await checkServed(published, kernel, 'falco', '10.2.0+driver', 'kmod');
    } finally {
      await libs.close();
      await mirror.close();
    }
  });
});
