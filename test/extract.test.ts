import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, readlink, realpath, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { archiveFormatOf, extractPackage, extractPackages } from '../src/fetch/extract.js';
import { FalcoProbesError } from '../src/util/errors.js';
import {
  aptDownload,
  aptSearchNames,
  aptShow,
  buildDebWithDpkg,
  buildTar,
  compress,
  isRoot,
  listTree,
  makeSampleTree,
  tool,
  type DebCompression,
} from './helpers/archive-fixtures.js';
import { PROJECT_ROOT, withTempDir } from './helpers/cli.js';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { skipOrFail } from './helpers/require.js';

// Extraction of real archives, compared with the real tools' output:
// dpkg-deb -x for .deb files (built here with dpkg-deb in each compression,
// and a real Debian kernel headers package from apt), tar for tarballs.

let work: string;
let sample: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'fp-extract-'));
  sample = join(work, 'sample');
  await makeSampleTree(sample);
});

after(async () => {
  await rm(work, { recursive: true, force: true });
});

async function dpkgReference(deb: string, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  await tool('dpkg-deb', ['-x', deb, dir]);
  return dir;
}

describe('.deb built by dpkg-deb', () => {
  for (const compression of ['xz', 'gzip', 'zstd', 'none'] as DebCompression[]) {
    test(`data.tar with ${compression} matches dpkg-deb -x`, async () => {
      const deb = await buildDebWithDpkg(sample, join(work, `build-${compression}`), compression);
      const members = (await tool('ar', ['t', deb])).toString().trim().split('\n');
      const expectedMember = { xz: 'data.tar.xz', gzip: 'data.tar.gz', zstd: 'data.tar.zst', none: 'data.tar' }[compression];
      assert.ok(members.includes(expectedMember), `dpkg-deb wrote ${members.join(',')}`);

      const ours = join(work, `ours-${compression}`);
      const summary = await extractPackage(deb, 'deb', ours);
      const reference = await dpkgReference(deb, join(work, `ref-${compression}`));
      assert.deepEqual(await listTree(ours), await listTree(reference, { relativizeAbsoluteLinks: true }));
      assert.ok(summary.files >= 7 && summary.bytes > 300_000, JSON.stringify(summary));

      // The links work inside the tree: the relative one as shipped, the absolute one rewritten.
      assert.equal(await readlink(join(ours, 'usr/src/linux-headers-9.9.9-test/scripts')), '../../lib/linux-kbuild-9.9/scripts');
      assert.equal(await readlink(join(ours, 'lib/modules/9.9.9-test/build')), '../../../usr/src/linux-headers-9.9.9-test');
      assert.equal(await readFile(join(ours, 'lib/modules/9.9.9-test/build/scripts/run.sh'), 'utf8'), '#!/bin/sh\necho kbuild\n');
      assert.equal(
        await realpath(join(ours, 'lib/modules/9.9.9-test/build')),
        join(await realpath(ours), 'usr/src/linux-headers-9.9.9-test'),
      );
      // Nothing but the destination was left beside it.
      assert.deepEqual(
        (await readdir(work)).filter((n) => n.startsWith('.')),
        [],
      );
    });
  }
});

describe('tarballs', () => {
  for (const [flag, ext] of [
    ['-z', 'tgz'],
    ['-J', 'tar.xz'],
    ['--zstd', 'tar.zst'],
    ['', 'tar'],
  ] as const) {
    test(`${ext} made by tar, with strip 1, matches tar --strip-components=1`, async () => {
      const tarball = join(work, `sample.${ext}`);
      await tool('tar', ['-c', ...(flag ? [flag] : []), '-f', tarball, '-C', work, 'sample']);
      assert.equal(archiveFormatOf(tarball), 'tgz');
      const ours = join(work, `tar-ours-${ext}`);
      await extractPackage(tarball, 'tgz', ours, { strip: 1 });
      const reference = join(work, `tar-ref-${ext}`);
      await mkdir(reference);
      await tool('tar', ['-x', '-f', tarball, '-C', reference, '--strip-components=1']);
      assert.deepEqual(await listTree(ours), await listTree(reference, { relativizeAbsoluteLinks: true }));
    });
  }

  test('modes: exec kept, setuid/setgid/sticky dropped, ownership untouched', async () => {
    const data = await buildTar([
      { name: 'bin/tool', data: 'x', mode: 0o4755, uid: 4321 },
      { name: 'bin/group', data: 'y', mode: 0o2750 },
      { name: 'shared', type: 'directory', mode: 0o1777 },
      { name: 'plain', data: 'z', mode: 0o640 },
    ]);
    const file = join(work, 'modes.tar.gz');
    await writeFile(file, await compress(data, 'gz'));
    const dest = join(work, 'modes');
    await extractPackage(file, 'tgz', dest);
    const items = await listTree(dest, { dirModes: true });
    const { stat } = await import('node:fs/promises');
    assert.equal((await stat(join(dest, 'bin/tool'))).uid, process.getuid?.(), 'files belong to whoever extracts');
    const mode = (p: string) => items.find((i) => i.path === p)?.mode;
    assert.equal(mode('bin/tool'), 0o755);
    assert.equal(mode('bin/group'), 0o750);
    assert.equal(mode('shared'), 0o777);
    assert.equal(mode('plain'), 0o640);
  });

  test('several archives form one tree; an existing destination is refused unless replace', async () => {
    const a = join(work, 'multi-a.tar');
    const b = join(work, 'multi-b.tar');
    await writeFile(a, await buildTar([{ name: 'usr/src/h/scripts', type: 'symlink', linkname: '../../lib/kbuild/scripts' }]));
    await writeFile(b, await buildTar([{ name: 'usr/lib/kbuild/scripts/x.sh', data: 'echo\n', mode: 0o755 }]));
    const dest = join(work, 'multi');
    const summary = await extractPackages(
      [
        { file: a, format: 'tgz' },
        { file: b, format: 'tgz' },
      ],
      dest,
    );
    assert.equal(summary.files, 1);
    assert.equal(await readFile(join(dest, 'usr/src/h/scripts/x.sh'), 'utf8'), 'echo\n');

    await assert.rejects(
      extractPackage(a, 'tgz', dest),
      (err: unknown) => err instanceof FalcoProbesError && /already exists/.test(err.message),
    );
    await extractPackage(b, 'tgz', dest, { replace: true });
    assert.deepEqual(
      (await listTree(dest)).map((i) => i.path),
      ['usr', 'usr/lib', 'usr/lib/kbuild', 'usr/lib/kbuild/scripts', 'usr/lib/kbuild/scripts/x.sh'],
    );
  });
});

describe('interruption', () => {
  test('an aborted extraction leaves neither the destination nor its temporary folder', async () => {
    const file = join(work, 'big.tgz');
    await writeFile(
      file,
      await compress(await buildTar(Array.from({ length: 200 }, (_, i) => ({ name: `d/f${i}`, data: Buffer.alloc(128 * 1024, i) }))), 'gz'),
    );
    const box = join(work, 'abort-box');
    const controller = new AbortController();
    const pending = extractPackage(file, 'tgz', join(box, 'dest'), { signal: controller.signal });
    setTimeout(() => controller.abort(), 20);
    await assert.rejects(pending, (e: unknown) => (e as Error).name === 'AbortError');
    assert.deepEqual(await readdir(box), []);
  });

  test('kill -9 in the middle of an extraction leaves no destination; the next extraction cleans up', { timeout: 60_000 }, async () => {
    const file = join(work, 'big.tgz'); // from the test above
    const box = join(work, 'kill-box');
    await mkdir(box);
    const script = join(work, 'extract-child.mts');
    await writeFile(
      script,
      `import { extractPackage } from ${JSON.stringify(join(PROJECT_ROOT, 'src/fetch/extract.ts'))};\n` +
        `await extractPackage(${JSON.stringify(file)}, 'tgz', ${JSON.stringify(join(box, 'dest'))});\n`,
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: PROJECT_ROOT, stdio: 'ignore' });
    const exited = new Promise<NodeJS.Signals | null>((r) => child.on('close', (_c, sig) => r(sig)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 50_000);
    try {
      // Wait until the child has written some files into its temporary folder.
      let temp: string | undefined;
      for (let i = 0; i < 2000; i++) {
        temp = (await readdir(box)).find((n) => n.startsWith('.dest.extract-'));
        if (temp && (await readdir(join(box, temp, 'd')).catch(() => [])).length > 3) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.ok(temp, 'the child started extracting');
      child.kill('SIGKILL');
      assert.equal(await exited, 'SIGKILL');
      assert.deepEqual(await readdir(box), [temp], "no destination, only the dead process's temporary folder");
      await extractPackage(file, 'tgz', join(box, 'dest'));
      assert.deepEqual(await readdir(box), ['dest']);
      assert.equal((await readdir(join(box, 'dest/d'))).length, 200);
    } finally {
      clearTimeout(timer);
      child.kill('SIGKILL');
    }
  });

  test('a temporary folder left by a killed extraction is removed by the next one', async () => {
    const box = join(work, 'stale-box');
    // pid 2^22 + 1 is above Linux's pid_max ceiling: never a live process.
    const stale = join(box, `.dest.extract-${2 ** 22 + 1}-AbCdEf`);
    await mkdir(join(stale, 'usr/src'), { recursive: true });
    const file = join(work, 'small.tar');
    await writeFile(file, await buildTar([{ name: 'a', data: 'a' }]));
    await extractPackage(file, 'tgz', join(box, 'dest'));
    assert.deepEqual(await readdir(box), ['dest']);
  });
});

describe('a real Debian package from apt', () => {
  test('linux-headers-*-amd64 extracts like dpkg-deb -x (relative and absolute links)', { timeout: 240_000 }, async (t) => {
    if (!isRoot) {
      skipOrFail(t, 'needs root: apt-get download runs as root in CI');
      return;
    }
    const names = (await aptSearchNames('^linux-headers-[0-9.]+-[0-9]+-amd64$')).filter((n) => !n.includes('+'));
    const name = names.at(-1);
    if (!name) {
      skipOrFail(t, 'no linux-headers-*-amd64 package in this apt index');
      return;
    }
    const record = await aptShow(name);
    assert.ok(record, `apt-cache show ${name}`);
    await withTempDir(async (dir) => {
      const deb = await aptDownload(name, record.Version, join(dir, 'apt'));
      const started = Date.now();
      const summary = await extractPackage(deb, 'deb', join(dir, 'ours'));
      const ms = Date.now() - started;
      const reference = await dpkgReference(deb, join(dir, 'ref'));
      const ours = await listTree(join(dir, 'ours'));
      assert.deepEqual(ours, await listTree(reference, { relativizeAbsoluteLinks: true }));
      const links = ours.filter((i) => i.type === 'symlink');
      assert.ok(
        links.some((l) => l.target?.startsWith('../../lib/linux-kbuild-')),
        'the scripts link into linux-kbuild',
      );
      assert.ok(
        links.some((l) => l.path.endsWith('/build') && l.target?.startsWith('../../../usr/src/linux-headers-')),
        'the rewritten build link',
      );
      t.diagnostic(`${name} ${record.Version}: ${summary.entries} entries, ${summary.bytes} bytes in ${ms} ms`);
    });
  });
});
