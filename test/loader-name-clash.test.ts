import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadLockfile } from '../src/lockfile/load.js';
import { shadowedKernels } from '../src/graph/loader-name-clash.js';
import { loaderNameIsExact, artifactFileName } from '../src/naming/loader-names.js';
import { kernel, makeProject } from './helpers/graph-project.js';
import { runCli, PROJECT_ROOT } from './helpers/cli.js';
import type { KernelDescriptor } from '../src/config/types.js';

// Falco's Debian rule names a kernel by the <x.y.z>-<n> of its package
// version, so a bookworm backport (6.12.107-1~deb12u1) and trixie's own
// kernel (6.12.107-1) ask for one file. The file is the kernel's whose whole
// version is in the name; the other gets no targets, and generate says so.

const withVersion = (k: KernelDescriptor, pkgVersion: string): KernelDescriptor => ({
  ...k,
  version: `#1 SMP PREEMPT_DYNAMIC Debian ${pkgVersion}`,
});

test('loaderNameIsExact: Debian names cut after <x.y.z>-<n> are not exact; other rules always are', () => {
  const k = kernel('6.12.107+deb12-amd64');
  assert.equal(loaderNameIsExact(withVersion(k, '6.12.107-1')), true);
  assert.equal(loaderNameIsExact(withVersion(k, '6.12.107-1 (2025-09-30)')), true);
  assert.equal(loaderNameIsExact(withVersion(k, '6.12.107-1~deb12u1')), false);
  assert.equal(loaderNameIsExact(withVersion(k, '6.12.107-1+b1')), false);
  assert.equal(loaderNameIsExact({ ...withVersion(k, '6.12.107-1~deb12u1'), targetId: 'ubuntu-generic' }), true);
});

test('the checked-in lockfiles: exactly the bookworm backports whose package version trixie also ships yield their files to trixie', async () => {
  const files = ['debian12', 'debian13'].map((os) => join(PROJECT_ROOT, 'kernels', `${os}.lock.yaml`));
  // Both are checked in: a missing one is a failure, never a skip.
  for (const f of files) assert.ok(existsSync(f), `${f} is checked in`);
  const [d12, d13] = await Promise.all(files.map((f) => loadLockfile(f, PROJECT_ROOT)));
  const shadowed = shadowedKernels([d12!, d13!]);
  // Computed here from the versions alone: a deb12 kernel whose version, without its ~deb12uN, is a deb13 kernel's of the same flavour.
  const token = (k: KernelDescriptor) => /Debian (\S+)/.exec(k.version)![1]!;
  const expected = d12!.lock.kernels.filter((k) =>
    d13!.lock.kernels.some((o) => o.machine === k.machine && o.flavour === k.flavour && token(o) === token(k).replace(/~deb12u\d+$/, '')),
  );
  assert.ok(expected.length > 0, 'the lockfiles share versions (else this test proves nothing)');
  assert.deepEqual(shadowed.map((s) => s.kernel.name).sort(), expected.map((k) => k.name).sort());
  for (const s of shadowed) {
    assert.equal(s.os, 'debian12');
    assert.equal(s.by.os, 'debian13');
    assert.equal(artifactFileName('falco', 'kmod', s.kernel), artifactFileName('falco', 'kmod', s.by.kernel));
  }
});

test('generate: the yielding kernel has no targets and is named; when neither kernel is exact, generate fails naming both', async () => {
  const root = await mkdtemp(join(tmpdir(), 'falco-probes-clash-'));
  try {
    const backport = withVersion(kernel('6.12.107+deb12-amd64'), '6.12.107-1~deb12u1');
    const own = withVersion(kernel('6.12.107+deb13-amd64'), '6.12.107-1');
    const other = kernel('6.1.0-40-amd64');
    await makeProject(root, { oses: { bookwormish: [backport, other], trixieish: [own] } });
    const r = await runCli(['generate', '--json'], { cwd: root });
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as {
      targets: Record<string, number>;
      shadowed: { os: string; kernel: string; by: { os: string; kernel: string } }[];
    };
    assert.deepEqual(report.shadowed, [
      { os: 'bookwormish', kernel: '6.12.107+deb12-amd64', machine: 'x86_64', by: { os: 'trixieish', kernel: '6.12.107+deb13-amd64' } },
    ]);
    const text = await runCli(['generate', '--check'], { cwd: root });
    assert.equal(text.code, 0, text.stderr);
    assert.match(
      text.stdout,
      /bookwormish: 1 kernel has no targets: Falco's loaders ask for the same files for it as for trixieish's kernels of the same package version, and the files are trixieish's \(6\.12\.107\+deb12-amd64\)/,
    );
    const targets = JSON.parse(await readFile(join(root, 'generated', 'targets.json'), 'utf8')) as { targets: { label: string }[] };
    const labels = targets.targets.map((x) => x.label);
    assert.ok(
      labels.some((l) => l.startsWith('//probes/trixieish:6.12.107+deb13-amd64')),
      labels.join(' '),
    );
    assert.ok(!labels.some((l) => l.includes('6.12.107+deb12')), labels.join(' '));
    assert.ok(
      labels.some((l) => l.includes('6.1.0-40-amd64')),
      'the backport OS keeps its other kernels',
    );

    // Both cut (two backports of one version): nothing decides, generate refuses naming both.
    await makeProject(root, { oses: { bookwormish: [backport], trixieish: [withVersion(own, '6.12.107-1~bpo13+1')] } });
    const refused = await runCli(['generate'], { cwd: root });
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(
      refused.stderr,
      /\/\/probes\/trixieish:6\.12\.107\+deb13-amd64\S* and \/\/probes\/bookwormish:6\.12\.107\+deb12-amd64\S* would both publish \S*example_debian_6\.12\.107-1-amd64_1\.o/,
    );
    assert.match(refused.stderr, /hint: .*when exactly one of the kernels is named by its whole version/);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
