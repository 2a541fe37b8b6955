import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { lstat, mkdir, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, normalize, relative } from 'node:path';
import { withTempDir } from './helpers/cli.js';
import { extractKernelRoot, obtainDebianKernels } from './helpers/kernel-headers.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { sha256File } from '../src/util/hash.js';
import { createKernelRoots, createSharedKernelRoots } from '../src/run/kernel-root.js';
import { skipOrFail } from './helpers/require.js';

// A target's kernel root composed from once-unpacked package trees: the same
// tree dpkg-deb -x gives (links made relative), shared file contents, trees
// that nothing can write through, and the extractor's merge rules.

/** Every path under root: files by sha256, links by where they lead (inside root), folders. */
async function describe(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, e.name);
      const rel = relative(root, path);
      if (e.isDirectory()) {
        out.set(rel, 'dir');
        await walk(path);
      } else if (e.isSymbolicLink()) {
        const target = await readlink(path);
        const to = target.startsWith('/') ? normalize(join(root, target)) : normalize(join(dirname(path), target));
        out.set(rel, `link -> ${relative(root, to)}`);
      } else out.set(rel, `file ${(await sha256File(path)).sha256}`);
    }
  };
  await walk(root);
  return out;
}

test('a kernel root from real Debian packages equals dpkg-deb -x of them, and shares one unpacked tree per package', async (t) => {
  const obtained = await obtainDebianKernels();
  if (!obtained.ok) return skipOrFail(t, obtained.skip);
  const kernel = obtained.kernels[0]!;
  await withTempDir(async (dir) => {
    const compose = createKernelRoots(join(dir, 'trees'));
    const archives = kernel.packages.map((p) => ({ file: p.debPath, format: 'deb' as const, sha256: p.sha256 }));
    await compose(archives, join(dir, 'a'));
    const reference = await extractKernelRoot(kernel, join(dir, 'dpkg'));
    assert.deepEqual(await describe(join(dir, 'a')), await describe(reference));

    // A second target's root: no unpacking (same trees), the same inodes, its own folders.
    const t0 = performance.now();
    await createKernelRoots(join(dir, 'trees'))(archives, join(dir, 'b'));
    const composeMs = performance.now() - t0;
    const header = `usr/src/linux-headers-${kernel.release}/Makefile`;
    const [sa, sb] = [await stat(join(dir, 'a', header)), await stat(join(dir, 'b', header))];
    assert.equal(sa.ino, sb.ino);
    assert.notEqual((await stat(join(dir, 'a', 'usr/src'))).ino, (await stat(join(dir, 'b', 'usr/src'))).ino);
    assert.equal(sa.mode & 0o222, 0, 'no write bits on shared contents');
    assert.deepEqual((await readdir(join(dir, 'trees'))).sort(), kernel.packages.map((p) => p.sha256).sort());
    t.diagnostic(`composing ${kernel.packages.length} unpacked packages: ${composeMs.toFixed(0)} ms`);
  });
});

/** A .tar.gz of `files` (path -> contents) under `dir`, as a kernel archive; its tree stays in `dir/src/<name>`. */
async function tarballIn(dir: string, name: string, files: Record<string, string>) {
  const src = join(dir, 'src', name);
  for (const [path, body] of Object.entries(files)) {
    await mkdir(dirname(join(src, path)), { recursive: true });
    await writeFile(join(src, path), body);
  }
  const file = join(dir, `${name}.tar.gz`);
  execFileSync('tar', ['-C', src, '-czf', file, '.']);
  return { file, format: 'tgz' as const, sha256: (await sha256File(file)).sha256 };
}

test('merge rules: folders merge, a later file replaces an earlier one, a folder never meets a file', async () => {
  await withTempDir(async (dir) => {
    const tarball = (name: string, files: Record<string, string>) => tarballIn(dir, name, files);
    const one = await tarball('one', { 'usr/a.h': 'one a', 'usr/shared/x': 'one x' });
    const two = await tarball('two', { 'usr/b.h': 'two b', 'usr/shared/x': 'two x' });
    const bad = await tarball('bad', { 'usr/a.h/inner': 'a folder where one has a file' });
    const compose = createKernelRoots(join(dir, 'trees'));
    await compose([one, two], join(dir, 'root'));
    assert.equal(await readFile(join(dir, 'root/usr/a.h'), 'utf8'), 'one a');
    assert.equal(await readFile(join(dir, 'root/usr/b.h'), 'utf8'), 'two b');
    assert.equal(await readFile(join(dir, 'root/usr/shared/x'), 'utf8'), 'two x');
    // The replaced name was unlinked, not written through: the first tree still holds its own bytes.
    assert.equal(await readFile(join(dir, 'trees', one.sha256, 'usr/shared/x'), 'utf8'), 'one x');
    await assert.rejects(compose([one, bad], join(dir, 'root2')), (err: unknown) => {
      assert.ok(err instanceof FalcoProbesError);
      assert.equal(err.kind, 'input');
      assert.match(err.message, /cannot merge usr\/a\.h into the kernel tree: a folder where another package has a file or link/);
      return true;
    });
    // A hostile archive is refused by the extractor and leaves no tree at its address.
    const evil = join(dir, 'evil.tar');
    execFileSync('tar', ['-C', join(dir, 'src', 'one'), '-cf', evil, '--transform', 's,^\\./usr,../../escape,', './usr']);
    const evilArchive = { file: evil, format: 'tgz' as const, sha256: (await sha256File(evil)).sha256 };
    await assert.rejects(compose([evilArchive], join(dir, 'root3')), /refusing entry/);
    await assert.rejects(lstat(join(dir, 'trees', evilArchive.sha256)), { code: 'ENOENT' });
    await assert.rejects(lstat(join(dir, 'escape')), { code: 'ENOENT' });
  });
});

test('shared kernel roots: one per ordered list of packages, composed once (also when asked at once), whole or absent', async () => {
  await withTempDir(async (dir) => {
    const tarball = (name: string, files: Record<string, string>) => tarballIn(dir, name, files);
    const one = await tarball('one', { 'usr/a.h': 'one a', 'usr/shared/x': 'one x' });
    const two = await tarball('two', { 'usr/b.h': 'two b', 'usr/shared/x': 'two x' });
    const bad = await tarball('bad', { 'usr/a.h/inner': 'a folder where one has a file' });
    const roots = join(dir, 'kernel-roots');
    const shared = createSharedKernelRoots(join(dir, 'trees'), roots);

    const [a, b] = await Promise.all([shared([one, two]), shared([one, two])]);
    assert.equal(a, b, 'asked at once: one root');
    assert.equal(await readFile(join(a, 'usr/shared/x'), 'utf8'), 'two x');
    const again = await createSharedKernelRoots(join(dir, 'trees'), roots)([one, two]);
    assert.equal(again, a, 'a later run (a new process) finds it');
    assert.equal((await stat(join(again, 'usr'))).ino, (await stat(join(a, 'usr'))).ino, 'not composed again');

    // The order decides which file wins, so it is another root.
    const reversed = await shared([two, one]);
    assert.notEqual(reversed, a);
    assert.equal(await readFile(join(reversed, 'usr/shared/x'), 'utf8'), 'one x');

    // A failed composition leaves neither a root nor a temporary folder.
    await assert.rejects(shared([one, bad]), /cannot merge usr\/a\.h/);
    assert.deepEqual((await readdir(roots)).sort(), [a, reversed].map((p) => p.slice(roots.length + 1)).sort());

    // A temporary folder of a process that died while composing is swept; the root is then made whole.
    const three = await tarball('three', { 'usr/c.h': 'three c' });
    const id = (await shared([three])).slice(roots.length + 1);
    await rm(join(roots, id), { recursive: true });
    const dead = join(roots, `.${id}.999999999.0badc0de.tmp`);
    await mkdir(join(dead, 'usr'), { recursive: true });
    assert.equal(await readFile(join(await createSharedKernelRoots(join(dir, 'trees'), roots)([three]), 'usr/c.h'), 'utf8'), 'three c');
    await assert.rejects(lstat(dead), { code: 'ENOENT' });
  });
});
