import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROJECT_ROOT } from './helpers/cli.js';

// bin/falco-probes.js runs dist/ (the compiled tool) only while it is at
// least as new as every file under src/, and the TypeScript sources
// otherwise. Checked on a copy of the real entry point in small projects
// whose src/ and dist/ say which of them ran, then on the real tool compiled
// by the real tsc with tsconfig.build.json.

function run(root: string, args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [join(root, 'bin', 'falco-probes.js'), ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, CI: 'true', FALCO_PROBES_FROM_SOURCE: '', ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function miniProject(dir: string): Promise<void> {
  await mkdir(join(dir, 'bin'), { recursive: true });
  await copyFile(join(PROJECT_ROOT, 'bin', 'falco-probes.js'), join(dir, 'bin', 'falco-probes.js'));
  await copyFile(join(PROJECT_ROOT, 'bin', 'package.json'), join(dir, 'bin', 'package.json'));
  await symlink(join(PROJECT_ROOT, 'node_modules'), join(dir, 'node_modules'));
  await writeFile(join(dir, 'package.json'), '{"type":"module"}\n');
  await mkdir(join(dir, 'src', 'cli', 'deep'), { recursive: true });
  await writeFile(
    join(dir, 'src', 'cli', 'main.ts'),
    "export async function main(argv: string[]): Promise<number> { process.stdout.write(`source ${argv.join(' ')}\\n`); return 0; }\n",
  );
  await writeFile(join(dir, 'src', 'cli', 'deep', 'other.ts'), 'export {};\n');
  await mkdir(join(dir, 'dist', 'cli'), { recursive: true });
  await writeFile(
    join(dir, 'dist', 'cli', 'main.js'),
    "export async function main(argv) { process.stdout.write(`compiled ${argv.join(' ')}\\n`); return 0; }\n",
  );
}

const at = (secondsAgo: number) => new Date(Date.now() - secondsAgo * 1000);

describe('bin/falco-probes.js picks the compiled tool only while it is fresh', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'falco-probes-bin-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('dist/ newer than src/ runs dist; a newer source file anywhere under src/ runs the sources; so do no BUILT and FALCO_PROBES_FROM_SOURCE=1', async () => {
    const root = join(dir, 'a');
    await miniProject(root);
    for (const f of ['src/cli/main.ts', 'src/cli/deep/other.ts']) await utimes(join(root, f), at(60), at(60));

    assert.equal(run(root, ['x', 'y']).stdout, 'source x y\n', 'no dist/BUILT: the sources run');

    await writeFile(join(root, 'dist', 'BUILT'), '');
    await utimes(join(root, 'dist', 'BUILT'), at(30), at(30));
    assert.equal(run(root, ['x', 'y']).stdout, 'compiled x y\n', 'BUILT newer than every source');
    assert.equal(run(root, ['x'], { FALCO_PROBES_FROM_SOURCE: '1' }).stdout, 'source x\n', 'forced to the sources');

    await utimes(join(root, 'src', 'cli', 'deep', 'other.ts'), at(10), at(10));
    assert.equal(run(root, ['x']).stdout, 'source x\n', 'a source file edited after the build (two folders down)');

    await writeFile(join(root, 'src', 'cli', 'new.ts'), 'export {};\n');
    await utimes(join(root, 'src', 'cli', 'deep', 'other.ts'), at(60), at(60));
    assert.equal(run(root, ['x']).stdout, 'source x\n', 'a source file added after the build');
  });

  test('the exit code of main() is the process exit code on both paths', async () => {
    const root = join(dir, 'b');
    await miniProject(root);
    await writeFile(join(root, 'dist', 'cli', 'main.js'), 'export async function main() { return 3; }\n');
    await writeFile(join(root, 'src', 'cli', 'main.ts'), 'export async function main(): Promise<number> { return 4; }\n');
    await utimes(join(root, 'src', 'cli', 'main.ts'), at(60), at(60));
    await utimes(join(root, 'src', 'cli', 'deep', 'other.ts'), at(60), at(60));
    await writeFile(join(root, 'dist', 'BUILT'), '');
    assert.equal(run(root, []).code, 3);
    assert.equal(run(root, [], { FALCO_PROBES_FROM_SOURCE: '1' }).code, 4);
  });
});

describe('the real tool compiled with tsconfig.build.json', () => {
  let dir: string;
  before(async () => {
    // A checkout whose src/ and builder/ are the project's, compiled into its own dist/.
    dir = await mkdtemp(join(tmpdir(), 'falco-probes-bin-real-'));
    await mkdir(join(dir, 'bin'));
    await copyFile(join(PROJECT_ROOT, 'bin', 'falco-probes.js'), join(dir, 'bin', 'falco-probes.js'));
    await copyFile(join(PROJECT_ROOT, 'bin', 'package.json'), join(dir, 'bin', 'package.json'));
    for (const name of ['src', 'node_modules', 'builder', 'package.json', 'tsconfig.json', 'tsconfig.build.json'])
      await symlink(join(PROJECT_ROOT, name), join(dir, name));
    const tsc = spawnSync(
      process.execPath,
      [
        join(PROJECT_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'),
        '-p',
        join(dir, 'tsconfig.build.json'),
        '--outDir',
        join(dir, 'dist'),
      ],
      {
        encoding: 'utf8',
        timeout: 300_000,
      },
    );
    assert.equal(tsc.status, 0, tsc.stdout + tsc.stderr);
    await writeFile(join(dir, 'dist', 'BUILT'), '');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('compiled and source runs print the same help, kernel list and dry-run plan, and fail alike', () => {
    const cases = [
      ['--help'],
      ['build', '--help'],
      ['--root', PROJECT_ROOT, 'list-kernels', 'debian12'],
      ['--root', PROJECT_ROOT, 'build', '--dry-run', '--json', '//probes/debian12:6.1.0-57-amd64'],
      ['--root', PROJECT_ROOT, 'list-kernels', 'no-such-os'],
      ['no-such-command'],
    ];
    for (const args of cases) {
      const timeless = (r: ReturnType<typeof run>) => ({ ...r, stdout: r.stdout.replace(/"elapsedMs": \d+/, '"elapsedMs": 0') });
      const compiled = timeless(run(dir, args));
      const source = timeless(run(dir, args, { FALCO_PROBES_FROM_SOURCE: '1' }));
      assert.deepEqual(compiled, source, args.join(' '));
    }
    assert.match(run(dir, ['--root', PROJECT_ROOT, 'list-kernels', 'debian12']).stdout, /^6\.1\.0-57-amd64$/m);
    // The plan compared above is a real one: the kernel's label selects every target of its
    // kernel in the project's drivers.yaml (scap 0.23.2 kmod and bpf, falco 10.2.0+driver kmod,
    // falco 9.1.0+driver kmod and bpf), each named as Falco's loaders ask for it.
    const plan = run(dir, ['--root', PROJECT_ROOT, 'build', '--dry-run', '--json', '//probes/debian12:6.1.0-57-amd64']);
    assert.equal(plan.code, 0, plan.stderr);
    const report = JSON.parse(plan.stdout) as { targets: number; results: { label: string; file: string }[] };
    assert.equal(report.targets, 5);
    assert.deepEqual(report.results.map((r) => r.file).sort(), [
      '0.23.2/x86_64/scap_debian_6.1.192-3-amd64_1.ko',
      '0.23.2/x86_64/scap_debian_6.1.192-3-amd64_1.o',
      '10.2.0+driver/x86_64/falco_debian_6.1.192-3-amd64_1.ko',
      '9.1.0+driver/x86_64/falco_debian_6.1.192-3-amd64_1.ko',
      '9.1.0+driver/x86_64/falco_debian_6.1.192-3-amd64_1.o',
    ]);
  });
});
