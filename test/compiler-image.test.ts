import assert from 'node:assert/strict';
import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type Docker from 'dockerode';
import { parse } from 'yaml';
import { checkKernelModule, readElf, sectionContents } from '../src/builders/elf.js';
import { builderForTarget, gccMajor, kernelGccMajor } from '../src/graph/compiler-choice.js';
import { targetKey } from '../src/graph/key.js';
import type { BuilderPin, CompilerImagePin, ResolvedDriver } from '../src/graph/types.js';
import { aptMirrorsForPath } from '../src/fetch/apt-sources.js';
import { sha256Hex } from '../src/util/hash.js';
import { PROJECT_ROOT, runCli, withTempDir } from './helpers/cli.js';
import { ensureBaseImage, finishDockerTests, obtainDocker } from './helpers/docker.js';
import { kernel as syntheticKernel } from './helpers/graph-project.js';
import { skipOrFail } from './helpers/require.js';

// Per-kernel compiler images (issue "Reproducible real drivers…"): a kernel
// module is keyed for, and built in, the builder whose gcc is its kernel's.
// Debian 13's kernels are built with gcc 14; this host is Debian 12 (gcc 12),
// so their modules go to the trixie image (debootstrapped, imported, built
// here). The choice is in the key and in `plan`.

const HOST: BuilderPin = { kind: 'host', clang: 'Debian clang version 14.0.6', gcc: 'gcc (Debian 12.2.0-14+deb12u1) 12.2.0' };
const TRIXIE: CompilerImagePin = {
  release: 'trixie',
  image: `sha256:${'c'.repeat(64)}`,
  clang: 'Debian clang version 19.1.7 (3+b1)',
  gcc: 'gcc (Debian 14.2.0-19) 14.2.0',
};

function withCompiler(gcc: string | undefined) {
  const k = syntheticKernel('6.12.43+deb13-amd64');
  if (gcc)
    k.packages.push({
      name: `linux-compiler-${gcc}-x86`,
      version: '6.12.43-1',
      role: 'compiler',
      repository: 'main',
      path: `pool/main/l/linux/linux-compiler-${gcc}-x86_6.12.43-1_amd64.deb`,
      sha256: sha256Hex(gcc),
      size: 1000,
    });
  return k;
}

test('the builder of a target: modules of a gcc-14 kernel go to the gcc-14 image, everything else stays with the default builder', () => {
  assert.equal(gccMajor('gcc (Debian 14.2.0-19) 14.2.0'), 14);
  assert.equal(gccMajor('x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0'), 12);
  assert.equal(kernelGccMajor(withCompiler('gcc-14')), 14);
  assert.equal(kernelGccMajor(withCompiler(undefined)), undefined);

  const chosen = builderForTarget(withCompiler('gcc-14'), 'kmod', HOST, [TRIXIE]);
  assert.deepEqual(chosen, { kind: 'docker', image: TRIXIE.image, clang: TRIXIE.clang, gcc: TRIXIE.gcc, release: 'trixie' });
  assert.equal(builderForTarget(withCompiler('gcc-14'), 'bpf', HOST, [TRIXIE]), HOST, 'probes are built by the default clang');
  assert.equal(builderForTarget(withCompiler('gcc-12'), 'kmod', HOST, [TRIXIE]), HOST, 'the host has gcc 12');
  assert.equal(builderForTarget(withCompiler(undefined), 'kmod', HOST, [TRIXIE]), HOST, 'no recorded compiler: the build itself checks');
  assert.equal(
    builderForTarget(withCompiler('gcc-15'), 'kmod', HOST, [TRIXIE]),
    HOST,
    'no image with gcc 15: the build refuses, naming it',
  );

  // The key names the choice: another image, or none, is another key.
  const driver = {
    name: 'scap',
    version: '0.23.2',
    source: { path: 'x' },
    recipe: 'kbuild',
    kmodDir: '.',
    module: 'scap.ko',
    kinds: ['kmod'],
    sourceSha256: sha256Hex('scap'),
  } as ResolvedDriver;
  const k = withCompiler('gcc-14');
  const keyed = (builder: BuilderPin) => targetKey({ kernel: k, osRelease: { ID: 'debian' }, driver, builder, kind: 'kmod' });
  assert.notEqual(keyed(chosen), keyed(HOST));
  assert.notEqual(keyed(chosen), keyed({ ...(chosen as Extract<BuilderPin, { kind: 'docker' }>), image: `sha256:${'d'.repeat(64)}` }));
});

let docker: Docker | undefined;
after(async () => {
  await finishDockerTests(docker);
});

test("a Debian 13 kernel's module, resolved from Debian's archive, is keyed for and built in the trixie image (gcc 14)", {
  timeout: 40 * 60_000,
}, async (t) => {
  const d = await obtainDocker();
  if (!d.ok) return skipOrFail(t, d.skip);
  docker = d.docker;
  const base = await ensureBaseImage(d.docker, 'trixie');
  if (!base.ok) return skipOrFail(t, base.skip);
  const [archive] = await aptMirrorsForPath('/debian');
  if (!archive) return skipOrFail(t, "this machine's apt names no Debian archive (a source whose path is /debian)");
  await withTempDir(async (dir) => {
    const root = join(dir, 'project');
    await mkdir(join(root, 'kernels'), { recursive: true });
    await cp(join(PROJECT_ROOT, 'kernels', 'debian13.yaml'), join(root, 'kernels', 'debian13.yaml'));
    // The trixie image's pin as this machine makes it today (the checked-in pin is this, on the day it was made).
    const image = await runCli(['builder-image', '--release', 'trixie', '--json'], { cwd: root, timeoutMs: 20 * 60_000 });
    assert.equal(image.code, 0, image.stderr);
    const pin = JSON.parse(image.stdout) as { image: string; clang: string; gcc: string };
    assert.equal(gccMajor(pin.gcc), 14, `the trixie image has gcc 14: ${pin.gcc}`);
    const drivers = parse(await readFile(join(PROJECT_ROOT, 'kernels', 'drivers.yaml'), 'utf8')) as {
      builder: BuilderPin;
      drivers: { name: string }[];
    };
    const scap = (await readFile(join(PROJECT_ROOT, 'kernels', 'drivers.yaml'), 'utf8'))
      .split(/\n(?= {2}- name: )/)
      .find((e) => e.startsWith('  - name: scap\n'))!;
    await writeFile(
      join(root, 'kernels', 'drivers.yaml'),
      `builder:\n  kind: host\n  clang: ${drivers.builder.clang}\n  gcc: ${JSON.stringify(drivers.builder.gcc)}\ncompilerImages:\n  - release: trixie\n    image: ${pin.image}\n    clang: ${pin.clang}\n    gcc: ${JSON.stringify(pin.gcc)}\ndrivers:\n${scap.replace(/\n+$/, '')}\n`,
    );
    // The definition's own mirrors are not reachable here: the archive apt names, for both suites.
    const mirrors = ['--mirror', `trixie=${archive}`, '--mirror', `trixie-security=${archive.replace(/\/debian\/?$/, '/debian-security')}`];
    const resolved = await runCli(['resolve', 'debian13', ...mirrors], { cwd: root, timeoutMs: 10 * 60_000 });
    assert.equal(resolved.code, 0, resolved.stderr);
    assert.equal((await runCli(['generate'], { cwd: root })).code, 0);

    const targets = JSON.parse(await readFile(join(root, 'generated', 'targets.json'), 'utf8')) as {
      targets: { label: string; name: string; kind: string; arch: string; key: string; builder?: unknown }[];
    };
    const lock = parse(await readFile(join(root, 'kernels', 'debian13.lock.yaml'), 'utf8')) as {
      kernels: { name: string; machine: string; packages: { name: string; role?: string }[] }[];
    };
    const kernel = lock.kernels.find((k) => k.machine === 'x86_64' && /^6\.12\.\d+\+deb13-amd64$/.test(k.name));
    assert.ok(kernel, 'debian13 has a plain amd64 6.12 kernel');
    assert.ok(
      kernel.packages.some((p) => p.role === 'compiler' && /^(?:linux-compiler-)?gcc-14(?:-|$)/.test(p.name)),
      "its entry records gcc 14 (the headers' gcc-14 dependency)",
    );
    const label = `//probes/debian13:${kernel.name}-kmod`;
    const target = targets.targets.find((x) => x.label === label);
    assert.ok(target, `${label} is a target`);
    assert.equal(target.builder, 'docker:trixie', 'targets.json names the compiler image');
    assert.equal(
      targets.targets.find((x) => x.label === `//probes/debian13:${kernel.name}-bpf`)?.builder,
      'host',
      'the probe stays with the host clang',
    );

    const plan = await runCli(['plan', '--shards', '1', label, `//probes/debian13:${kernel.name}-bpf`], { cwd: root });
    assert.equal(plan.code, 0, plan.stderr);
    assert.match(plan.stdout, new RegExp(`${label.replace(/[.+]/g, '\\$&')}  \\[docker:trixie\\]`));
    assert.match(plan.stdout, /-bpf {2}\[host\]/);

    const build = await runCli(['build', label, ...mirrors, '--cache', join(dir, 'cache', 'packages'), '--json'], {
      cwd: root,
      timeoutMs: 30 * 60_000,
      env: { DOCKER_HOST: process.env['DOCKER_HOST'] ?? '' },
    });
    assert.equal(build.code, 0, build.stderr);
    const index = JSON.parse(await readFile(join(root, 'repository', 'index.json'), 'utf8')) as { probes: { file: string; key: string }[] };
    assert.equal(index.probes.length, 1);
    assert.equal(index.probes[0]!.key, target.key, 'published under the key that names the trixie image');
    const ko = await readFile(join(root, 'repository', index.probes[0]!.file));
    const info = checkKernelModule(ko, index.probes[0]!.file, kernel.name);
    assert.match(sectionContents(ko, info, '.comment')?.toString('latin1') ?? '', /GCC: \(Debian 14\.2\.0/, 'compiled by gcc 14');
    assert.ok(readElf(ko, 'ko').sections.includes('.modinfo'));
    t.diagnostic(`${label}: ${index.probes[0]!.file} built in the trixie image`);
  });
});
