import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cp, readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { PROJECT_ROOT, withTempDir } from './helpers/cli.js';
import { kernel, makeProject } from './helpers/graph-project.js';

// The npm package as a user gets it: `npm pack` (whose prepack compiles dist/)
// on a copy of this checkout (so that the shared dist/ is left alone), then
// `npm i -g --prefix DIR` of the tarball, then the installed command run with
// a PATH that has node and nothing else of this project: no src/, no tsx.
// The install is offline from npm's cache when the cache holds every
// dependency, and asks the registry otherwise.

const PACKAGE = JSON.parse(await readFile(join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version: string; files: string[] };

function sh(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env) {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: 240_000 });
  if (r.error) throw r.error;
  return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

test('npm pack gives a package that installs globally and runs without tsx', { timeout: 600_000 }, async () => {
  await withTempDir(async (dir) => {
    // The files a pack reads: package.json, the sources that prepack compiles, what `files` ships.
    const copy = join(dir, 'checkout');
    for (const name of [
      'package.json',
      'package-lock.json',
      'README.md',
      'tsconfig.json',
      'tsconfig.build.json',
      'bin',
      'src',
      'builder',
      'build_defs',
      'scripts',
      'docs',
    ])
      await cp(join(PROJECT_ROOT, name), join(copy, name), { recursive: true });
    await symlink(join(PROJECT_ROOT, 'node_modules'), join(copy, 'node_modules'));

    const pack = sh('npm', ['pack', '--json', '--loglevel=error', '--pack-destination', dir], copy);
    assert.equal(pack.code, 0, pack.stderr);
    const [info] = JSON.parse(pack.stdout) as { filename: string; files: { path: string }[] }[];
    const shipped = info!.files.map((f) => f.path);
    assert.equal(info!.filename, `falco-probes-${PACKAGE.version}.tgz`);
    // What the tool needs at run time, and not the sources, the tests or the tests' images.
    for (const path of [
      'bin/falco-probes.js',
      'dist/cli/main.js',
      'dist/cli/commands/diff-targets.js',
      'builder/Dockerfile',
      'builder/recipes/kbuild.sh',
      'builder/mock/uname',
      'build_defs/falco_probe.build_defs',
      'scripts/setup-debian.sh',
      'scripts/base-image.sh',
      'package.json',
      'README.md',
    ])
      assert.ok(shipped.includes(path), `${path} is not in the package`);
    for (const path of shipped)
      assert.doesNotMatch(path, /^(src|test|kernels|probes|generated|builder\/test-loader)\//, `${path} should not ship`);

    const prefix = join(dir, 'prefix');
    const install = (offline: boolean) =>
      sh(
        'npm',
        [
          'install',
          '--global',
          '--prefix',
          prefix,
          '--no-audit',
          '--no-fund',
          '--loglevel=error',
          offline ? '--offline' : '--prefer-offline',
          join(dir, info!.filename),
        ],
        dir,
      );
    let installed = install(true);
    if (installed.code !== 0) {
      assert.match(installed.stderr, /ENOTCACHED|only-if-cached/, installed.stderr);
      installed = install(false); // the cache lacks a dependency's metadata: ask the registry
    }
    assert.equal(installed.code, 0, installed.stderr);

    const home = join(prefix, 'lib', 'node_modules', 'falco-probes');
    assert.ok(existsSync(join(home, 'dist', 'cli', 'main.js')));
    assert.ok(!existsSync(join(home, 'src')), 'the package ships no sources');
    assert.ok(!existsSync(join(home, 'node_modules', 'tsx')), 'tsx is not installed with the package');

    // Only node's own directory and the system's on PATH; run from a directory outside this checkout.
    const env = { PATH: `${join(prefix, 'bin')}:${dirname(process.execPath)}:/usr/bin:/bin`, HOME: dir, CI: 'true' };
    const run = (...args: string[]) => sh('falco-probes', args, dir, env);
    const version = run('--version');
    assert.equal(version.code, 0, version.stderr);
    assert.equal(version.stdout, `${PACKAGE.version}\n`);
    assert.equal(run('-V').stdout, `${PACKAGE.version}\n`);
    const help = run('--help');
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^usage: falco-probes <command>/m);
    assert.match(help.stdout, /^ {2}diff-targets /m);
    assert.match(help.stdout, /^ {2}-V, --version /m);

    // A command that reads a project (YAML, the schemas, the naming rules) from the compiled tool.
    const project = join(dir, 'project');
    await makeProject(project, { oses: { debian12: [kernel('6.1.0-50-amd64'), kernel('6.1.0-51-amd64')] } });
    const listed = run('list-kernels', 'debian12', '--json', '--root', project);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(
      (JSON.parse(listed.stdout) as { name: string }[]).map((k) => k.name),
      ['6.1.0-50-amd64', '6.1.0-51-amd64'],
    );
    const generated = run('generate', '--json', '--root', project);
    assert.equal(generated.code, 0, generated.stderr);
    assert.deepEqual((await readdir(join(project, 'probes'))).sort(), ['debian12']);
    const targets = JSON.parse(await readFile(join(project, 'generated', 'targets.json'), 'utf8')) as { targets: { key: string }[] };
    assert.ok(targets.targets.length >= 2);
    assert.equal((JSON.parse(generated.stdout) as { targets: Record<string, number> }).targets['debian12'], targets.targets.length);

    // diff-targets against a copy with one target rekeyed.
    targets.targets[0]!.key = 'f'.repeat(64);
    await writeFile(join(dir, 'new.json'), JSON.stringify(targets));
    const diff = run('diff-targets', join(project, 'generated', 'targets.json'), join(dir, 'new.json'), '--json');
    assert.equal(diff.code, 0, diff.stderr);
    assert.equal((JSON.parse(diff.stdout) as { rekeyed: unknown[] }).rekeyed.length, 1);
  });
});
