import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PROJECT_ROOT, withTempDir } from './helpers/cli.js';

// What can be checked of the Please setup without plz (docs/PLEASE.md): the
// pin and the PATH settings of .plzconfig, pleasew's refusal to download what
// it cannot check, and the tool wrapper finding node.

test('.plzconfig pins Please 17.31.2 and passes PATH and FALCO_PROBES_NODE to the rules', async () => {
  const text = await readFile(join(PROJECT_ROOT, '.plzconfig'), 'utf8');
  assert.match(text, /^\[please\][^[]*^version = 17\.31\.2$/m);
  const build = text.slice(text.indexOf('[build]'));
  assert.match(build, /^passunsafeenv = PATH$/m);
  assert.match(build, /^passunsafeenv = FALCO_PROBES_NODE$/m);
  const pleasew = await readFile(join(PROJECT_ROOT, 'pleasew'), 'utf8');
  assert.match(pleasew, /^PLEASE_PINNED_VERSION='17\.31\.2'$/m);
});

test('pleasew is POSIX sh and refuses, downloading nothing, without a pinned sha256', async () => {
  for (const shell of ['sh', 'dash']) {
    const r = spawnSync(shell, ['-n', join(PROJECT_ROOT, 'pleasew')], { encoding: 'utf8' });
    if (r.error) continue; // that shell is not installed
    assert.equal(r.status, 0, `${shell} -n: ${r.stderr}`);
  }
  await withTempDir(async (dir) => {
    await cp(join(PROJECT_ROOT, 'pleasew'), join(dir, 'pleasew'));
    await cp(join(PROJECT_ROOT, '.plzconfig'), join(dir, '.plzconfig'));
    // curl and wget on PATH would record a call: neither may be reached.
    const bin = join(dir, 'bin');
    await mkdir(bin);
    for (const tool of ['curl', 'wget']) {
      await writeFile(join(bin, tool), `#!/bin/sh\necho called >> "${join(dir, 'downloads')}"\nexit 1\n`);
      await chmod(join(bin, tool), 0o755);
    }
    const r = spawnSync('sh', [join(dir, 'pleasew'), 'build', '//probes/...'], {
      encoding: 'utf8',
      env: { PATH: `${bin}:/usr/bin:/bin`, HOME: dir },
    });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /no sha256 pinned for please_17\.31\.2_(linux|darwin)_(amd64|arm64)\.tar\.xz/);
    assert.match(r.stderr, /so nothing is downloaded/);
    assert.equal(spawnSync('test', ['-e', join(dir, 'downloads')]).status, 1, 'curl or wget was run');
  });
});

test('the tool wrapper runs FALCO_PROBES_NODE, else the node on PATH, else says what to do', async () => {
  await withTempDir(async (dir) => {
    // The wrapper as Please runs it: from plz-out/ under the project root.
    const tools = join(dir, 'plz-out', 'gen', 'build_defs');
    await mkdir(tools, { recursive: true });
    await cp(join(PROJECT_ROOT, 'build_defs', 'falco-probes.sh'), join(tools, 'falco-probes.sh'));
    const fake = async (name: string) => {
      const path = join(dir, name, 'node');
      await mkdir(join(dir, name));
      await writeFile(path, `#!/bin/sh\necho "${name} $*"\n`);
      await chmod(path, 0o755);
      return path;
    };
    const pinned = await fake('pinned');
    await fake('onpath');
    const run = (env: Record<string, string>) =>
      spawnSync('/bin/sh', [join(tools, 'falco-probes.sh'), 'build-probe', 'x'], { encoding: 'utf8', env });
    const basePath = '/usr/bin:/bin';
    assert.equal(
      run({ PATH: `${join(dir, 'onpath')}:${basePath}`, FALCO_PROBES_NODE: pinned }).stdout,
      `pinned ${dir}/bin/falco-probes.js --root ${dir} build-probe x\n`,
    );
    assert.equal(
      run({ PATH: `${join(dir, 'onpath')}:${basePath}` }).stdout,
      `onpath ${dir}/bin/falco-probes.js --root ${dir} build-probe x\n`,
    );
    const none = run({ PATH: join(dir, 'empty'), FALCO_PROBES_NODE: join(dir, 'missing') });
    assert.equal(none.status, 127);
    assert.match(none.stderr, /no node found .*set FALCO_PROBES_NODE/);
  });
});
