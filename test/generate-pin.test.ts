import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, withTempDir } from './helpers/cli.js';
import { startMirror } from './helpers/server.js';
import { driversText, kernel, makeProject } from './helpers/graph-project.js';
import { sha256Hex } from '../src/util/hash.js';
import { treeHash } from '../src/util/tree-hash.js';

// `falco-probes pin` against a loopback server serving real tarballs made here.

/** A GitHub-style source tarball: one top folder (`strip: 1`), with or without driver/bpf. */
async function tarball(dir: string, name: string, files: Record<string, string>): Promise<Buffer> {
  const top = join(dir, name, 'libs-9.1.0-driver');
  for (const [path, text] of Object.entries(files)) {
    await mkdir(join(top, path, '..'), { recursive: true });
    await writeFile(join(top, path), text);
  }
  const r = spawnSync('tar', ['-czf', join(dir, `${name}.tar.gz`), '-C', join(dir, name), 'libs-9.1.0-driver'], { timeout: 30_000 });
  assert.equal(r.status, 0, String(r.stderr));
  return readFile(join(dir, `${name}.tar.gz`));
}

test('pin computes the sha256 from the download, writes it keeping comments and layout, and refuses to change it without --update', async () => {
  await withTempDir(async (root) => {
    const v1 = await tarball(root, 'v1', { 'driver/bpf/Makefile': 'always-y += probe.o\n', 'driver/ppm_events_public.h': '/* */\n' });
    const v2 = await tarball(root, 'v2', { 'driver/bpf/Makefile': 'always-y += probe.o\n# changed upstream\n' });
    const mirror = await startMirror({ files: { 'libs/9.1.0+driver.tar.gz': v1 } });
    try {
      const url = `${mirror.url}/libs/9.1.0%2Bdriver.tar.gz`;
      await makeProject(root, {
        oses: { debian12: [kernel('6.1.0-50-amd64')] },
        drivers: driversText({ remote: 'unpinned', remoteUrl: url }),
      });
      const driversPath = join(root, 'kernels', 'drivers.yaml');
      const original = await readFile(driversPath, 'utf8');

      const gen0 = await runCli(['generate'], { cwd: root });
      assert.equal(gen0.code, 0, gen0.stderr);
      assert.doesNotMatch(await readFile(join(root, 'generated', 'targets.json'), 'utf8'), /"driver":"falco"/);

      const pinned = await runCli(['pin', 'falco'], { cwd: root, env: { FALCO_PROBES_CACHE: join(root, 'cache') } });
      assert.equal(pinned.code, 0, pinned.stderr);
      assert.match(pinned.stdout, new RegExp(`falco: sha256 ${sha256Hex(v1)} \\(pinned, ${v1.length} bytes`));
      // The accepted tarball stays in the cache where a build looks for it first (the build's own download path).
      assert.deepEqual(await readFile(join(root, 'cache', 'drivers', `${sha256Hex(v1)}.tar`)), v1);
      const after = await readFile(driversPath, 'utf8');
      const before = original.split('\n');
      const lines = after.split('\n');
      const urlLine = before.findIndex((l) => l.includes('url: '));
      assert.deepEqual(
        lines,
        [...before.slice(0, urlLine + 1), `      sha256: ${sha256Hex(v1)}`, ...before.slice(urlLine + 1)],
        'one line added after url:, nothing else changed',
      );

      const again = await runCli(['pin'], { cwd: root, env: { FALCO_PROBES_CACHE: join(root, 'cache') } });
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, /falco: sha256 [0-9a-f]{64} \(unchanged/);
      assert.equal(await readFile(driversPath, 'utf8'), after);

      // Upstream bytes changed: refused without --update, the file untouched.
      mirror.files.set('libs/9.1.0+driver.tar.gz', v2);
      const refused = await runCli(['pin', 'falco'], { cwd: root, env: { FALCO_PROBES_CACHE: join(root, 'cache') } });
      assert.equal(refused.code, 1);
      assert.match(
        refused.stderr,
        new RegExp(`the download's sha256 is ${sha256Hex(v2)}, but kernels/drivers\\.yaml pins ${sha256Hex(v1)}; not changing it`),
      );
      assert.match(refused.stderr, /--update/);
      assert.equal(await readFile(driversPath, 'utf8'), after);

      const updated = await runCli(['pin', 'falco', '--update'], { cwd: root, env: { FALCO_PROBES_CACHE: join(root, 'cache') } });
      assert.equal(updated.code, 0, updated.stderr);
      assert.match(updated.stdout, new RegExp(`updated from ${sha256Hex(v1)}`));
      assert.equal(await readFile(driversPath, 'utf8'), after.replace(sha256Hex(v1), sha256Hex(v2)));

      // Pinned: generate now makes falco targets.
      const gen = await runCli(['generate'], { cwd: root });
      assert.equal(gen.code, 0, gen.stderr);
      assert.doesNotMatch(gen.stderr, /notice/);
      assert.match(await readFile(join(root, 'generated', 'targets.json'), 'utf8'), /"name":"6\.1\.0-50-amd64-falco-9\.1\.0\+driver"/);
    } finally {
      await mirror.close();
    }
  });
});

test('pin refuses what is not the driver tarball, and drivers it cannot pin', async () => {
  await withTempDir(async (root) => {
    const noBpf = await tarball(root, 'nobpf', { 'userspace/libsinsp/x.cpp': '//\n' });
    const mirror = await startMirror({ files: { 'error.tar.gz': '<html>rate limited</html>\n', 'nobpf.tar.gz': noBpf } });
    try {
      await makeProject(root, {
        oses: { debian12: [kernel('6.1.0-50-amd64')] },
        drivers: driversText({ remote: 'unpinned', remoteUrl: `${mirror.url}/error.tar.gz` }),
      });
      const driversPath = join(root, 'kernels', 'drivers.yaml');
      const original = await readFile(driversPath, 'utf8');

      const html = await runCli(['pin', 'falco'], { cwd: root, env: { FALCO_PROBES_CACHE: join(root, 'cache') } });
      assert.equal(html.code, 1);
      assert.match(html.stderr, /error\.tar\.gz: not a readable tarball/);

      await writeFile(driversPath, original.replace('error.tar.gz', 'nobpf.tar.gz'));
      const nobpf = await runCli(['pin', 'falco'], { cwd: root, env: { FALCO_PROBES_CACHE: join(root, 'cache') } });
      assert.equal(nobpf.code, 1);
      assert.match(nobpf.stderr, /the tarball has no driver\/bpf\/ after dropping 1 leading path component\(s\); not pinning it/);

      await writeFile(driversPath, original.replace('error.tar.gz', 'missing.tar.gz'));
      const missing = await runCli(['pin', 'falco'], { cwd: root, env: { FALCO_PROBES_CACHE: join(root, 'cache') } });
      assert.equal(missing.code, 1);
      // The same words as a build's download (one path for both): what, why, and how to serve it.
      assert.match(missing.stderr, /source http:\/\/127\.0\.0\.1:\d+\/missing\.tar\.gz is unreachable \(HTTP 404\)/);
      assert.match(missing.stderr, /hint: serve it with --driver-mirror http:\/\/127\.0\.0\.1:\d+\/=URL/);

      const local = await runCli(['pin', 'example'], { cwd: root, env: { FALCO_PROBES_CACHE: join(root, 'cache') } });
      assert.equal(local.code, 2);
      assert.match(local.stderr, /driver example has a local source \(drivers\/example\); its identity is its tree hash/);

      const unknown = await runCli(['pin', 'nosuch'], { cwd: root, env: { FALCO_PROBES_CACHE: join(root, 'cache') } });
      assert.equal(unknown.code, 2);
      assert.match(unknown.stderr, /no driver named "nosuch"/);
      assert.doesNotMatch(await readFile(driversPath, 'utf8'), /sha256:/, 'nothing was pinned');
    } finally {
      await mirror.close();
    }
  });
});

test('pin --tree pins by the unpacked tree hash (kept in the cache), refuses a changed tree without --update; a kmod-only driver pins by sha256 too', async () => {
  await withTempDir(async (root) => {
    const v1 = await tarball(root, 'v1', { 'driver/bpf/Makefile': 'always-y += probe.o\n', 'driver/main.c': '/* module */\n' });
    const v2 = await tarball(root, 'v2', {
      'driver/bpf/Makefile': 'always-y += probe.o\n',
      'driver/main.c': '/* module, changed upstream */\n',
    });
    const mirror = await startMirror({ files: { 'libs/9.1.0+driver.tar.gz': v1 } });
    try {
      const url = `${mirror.url}/libs/9.1.0%2Bdriver.tar.gz`;
      await makeProject(root, {
        oses: { debian12: [kernel('6.1.0-50-amd64')] },
        drivers: driversText({ remote: 'unpinned', remoteUrl: url }),
      });
      const driversPath = join(root, 'kernels', 'drivers.yaml');
      const original = await readFile(driversPath, 'utf8');
      const cache = join(root, 'cache');
      const tree1 = await treeHash(join(root, 'v1', 'libs-9.1.0-driver'));
      const tree2 = await treeHash(join(root, 'v2', 'libs-9.1.0-driver'));

      const pinned = await runCli(['pin', 'falco', '--tree', '--cache', cache], { cwd: root });
      assert.equal(pinned.code, 0, pinned.stderr);
      assert.match(
        pinned.stdout,
        new RegExp(`^falco: tree ${tree1} \\(pinned, unpacked tree, from ${mirror.url}/libs/9\\.1\\.0%2Bdriver\\.tar\\.gz\\)$`, 'm'),
      );
      const urlLine = original.split('\n').findIndex((l) => l.includes('url: '));
      const lines = original.split('\n');
      assert.equal(
        await readFile(driversPath, 'utf8'),
        [...lines.slice(0, urlLine + 1), `      tree: ${tree1}`, ...lines.slice(urlLine + 1)].join('\n'),
      );
      assert.deepEqual(await readdir(join(cache, 'drivers')), [`tree-${tree1}`], 'the verified tree is kept for the build');

      // Without --tree a driver already pinned by tree keeps its form: unchanged.
      const again = await runCli(['pin', '--cache', cache], { cwd: root });
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, new RegExp(`falco: tree ${tree1} \\(unchanged`));

      mirror.files.set('libs/9.1.0+driver.tar.gz', v2);
      const refused = await runCli(['pin', 'falco', '--cache', cache], { cwd: root });
      assert.equal(refused.code, 1);
      assert.match(
        refused.stderr,
        new RegExp(`the download's tree hash is ${tree2}, but kernels/drivers\\.yaml pins ${tree1}; not changing it`),
      );
      const updated = await runCli(['pin', 'falco', '9.1.0+driver', '--update', '--cache', cache], { cwd: root });
      assert.equal(updated.code, 0, updated.stderr);
      assert.match(updated.stdout, new RegExp(`updated from ${tree1}`));
      assert.match(await readFile(driversPath, 'utf8'), new RegExp(`\\n      tree: ${tree2}\\n`));

      // A kernel-module-only driver (no bpfDir): pinned by sha256, its kmodDir checked in the tarball.
      const kmodOnly = original.replace(
        '    bpfDir: driver/bpf\n    object: probe.o\n    kinds: [bpf]\n',
        '    kinds: [kmod]\n    kmodDir: driver\n    module: falco.ko\n',
      );
      assert.notEqual(kmodOnly, original);
      await writeFile(driversPath, kmodOnly);
      const bySha = await runCli(['pin', 'falco'], { cwd: root, env: { FALCO_PROBES_CACHE: join(root, 'cache') } });
      assert.equal(bySha.code, 0, bySha.stderr);
      assert.match(bySha.stdout, new RegExp(`falco: sha256 ${sha256Hex(v2)} \\(pinned`));
    } finally {
      await mirror.close();
    }
  });
});
