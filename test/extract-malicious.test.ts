import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readlink, realpath, rm, writeFile, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { extractPackage } from '../src/fetch/extract.js';
import type { ArchiveFormat } from '../src/fetch/types.js';
import { FalcoProbesError } from '../src/util/errors.js';
import {
  buildCpio,
  buildDebFromTar,
  buildDebWithDpkg,
  buildRpmFromCpio,
  buildTar,
  compress,
  makeSampleTree,
  type CpioEntrySpec,
  type TarEntrySpec,
} from './helpers/archive-fixtures.js';

// Hostile and broken archives, made by hand in each container (tarball, .deb,
// .rpm). Each must be refused with an error naming the archive and the entry,
// leave no destination and no temporary folder, and write nothing outside.

let work: string;
let caseNo = 0;
const outsideName = `fp-evil-${randomBytes(4).toString('hex')}`;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'fp-malicious-'));
});

after(async () => {
  await rm(work, { recursive: true, force: true });
});

interface Spec {
  name: string;
  kind: 'file' | 'dir' | 'symlink' | 'hardlink' | 'chardev' | 'fifo';
  data?: string;
  target?: string;
}

function toTar(specs: Spec[]): TarEntrySpec[] {
  return specs.map((s) => {
    switch (s.kind) {
      case 'file':
        return { name: s.name, data: s.data ?? 'x' };
      case 'dir':
        return { name: s.name, type: 'directory' };
      case 'symlink':
        return { name: s.name, type: 'symlink', linkname: s.target! };
      case 'hardlink':
        return { name: s.name, type: 'link', linkname: s.target! };
      case 'chardev':
        return { name: s.name, type: 'character-device' };
      case 'fifo':
        return { name: s.name, type: 'fifo' };
      default:
        throw new Error(`no tar form for ${String(s.kind satisfies never)}`);
    }
  });
}

function toCpio(specs: Spec[]): CpioEntrySpec[] {
  return specs.map((s) => {
    switch (s.kind) {
      case 'file':
        return { name: s.name, mode: 0o100644, data: s.data ?? 'x' };
      case 'dir':
        return { name: s.name, mode: 0o040755 };
      case 'symlink':
        return { name: s.name, mode: 0o120777, data: s.target! };
      case 'chardev':
        return { name: s.name, mode: 0o020644 };
      case 'fifo':
        return { name: s.name, mode: 0o010644 };
      case 'hardlink':
        throw new Error('cpio hard links go by inode, not by name');
      default:
        throw new Error(`no cpio form for ${String(s.kind satisfies never)}`);
    }
  });
}

type Container = 'tgz' | 'deb' | 'rpm';

async function archiveOf(container: Container, specs: Spec[]): Promise<Buffer> {
  if (container === 'rpm') return buildRpmFromCpio(buildCpio(toCpio(specs)), 'xz');
  const tar = await buildTar(toTar(specs));
  return container === 'deb' ? buildDebFromTar(tar, 'xz') : compress(tar, 'gz');
}

/** Extract `bytes` and expect a refusal; check that nothing is left anywhere. */
async function expectRefused(bytes: Buffer, format: ArchiveFormat, ext: string, pattern: RegExp): Promise<FalcoProbesError> {
  const dir = join(work, `case-${++caseNo}`);
  const archives = join(work, `archives-${caseNo}`);
  await mkdir(join(dir, 'box'), { recursive: true });
  await mkdir(archives);
  const file = join(archives, `hostile-${caseNo}.${ext}`);
  await writeFile(file, bytes);
  let caught: unknown;
  try {
    await extractPackage(file, format, join(dir, 'box', 'dest'));
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof FalcoProbesError, `expected a refusal, got ${String(caught)}`);
  assert.equal(caught.kind, 'input', caught.message);
  const text = caught.format();
  assert.ok(text.startsWith(`${file}: `), `the error names the archive: ${text}`);
  assert.match(text, pattern);
  assert.equal(caught.location.file, file);
  assert.deepEqual(await readdir(join(dir, 'box')), [], 'no destination and no temporary folder');
  assert.deepEqual(await readdir(dir), ['box'], 'nothing written beside the destination');
  await assert.rejects(access(join('/tmp', outsideName)), 'nothing written at an absolute path');
  return caught;
}

const extOf: Record<Container, string> = { tgz: 'tgz', deb: 'deb', rpm: 'rpm' };
const formatOf: Record<Container, ArchiveFormat> = { tgz: 'tgz', deb: 'deb', rpm: 'rpm' };

const hostile: { title: string; specs: Spec[]; pattern: RegExp; containers?: Container[] }[] = [
  {
    title: 'an absolute path',
    specs: [
      { name: './ok', kind: 'file' },
      { name: `/tmp/${outsideName}`, kind: 'file' },
    ],
    pattern: new RegExp(`entry "/tmp/${outsideName}": absolute path`),
  },
  { title: 'a ../ traversal', specs: [{ name: '../outside', kind: 'file' }], pattern: /entry "\.\.\/outside": "\.\." in/ },
  {
    title: 'a traversal inside the path',
    specs: [{ name: 'a/../../outside', kind: 'file' }],
    pattern: /entry "a\/\.\.\/\.\.\/outside": "\.\." in/,
  },
  {
    title: 'a relative symlink out of the tree',
    specs: [{ name: 'usr/link', kind: 'symlink', target: '../../outside' }],
    pattern: /entry "usr\/link": symlink target "\.\.\/\.\.\/outside" points outside the tree/,
  },
  {
    title: 'writing through a symlink to /etc',
    specs: [
      { name: 'link', kind: 'symlink', target: '/etc' },
      { name: `link/${outsideName}`, kind: 'file' },
    ],
    pattern: new RegExp(`entry "link/${outsideName}": its parent "link" is a symlink`),
  },
  {
    title: 'writing through a symlink that stays inside',
    specs: [
      { name: 'real', kind: 'dir' },
      { name: 'link', kind: 'symlink', target: 'real' },
      { name: 'link/file', kind: 'file' },
    ],
    pattern: /entry "link\/file": its parent "link" is a symlink/,
  },
  {
    title: 'a symlink that climbs through another symlink',
    specs: [
      { name: 'a/b/up', kind: 'symlink', target: '../..' },
      { name: 'x', kind: 'symlink', target: 'a/b/up/..' },
    ],
    pattern: /entry "x": symlink target "a\/b\/up\/\.\." uses "\.\." after a name/,
  },
  {
    title: 'a hard link to an absolute path',
    specs: [{ name: 'h', kind: 'hardlink', target: '/etc/passwd' }],
    pattern: /entry "h": absolute path "\/etc\/passwd"/,
    containers: ['tgz', 'deb'],
  },
  {
    title: 'a hard link out of the tree',
    specs: [{ name: 'h', kind: 'hardlink', target: '../outside' }],
    pattern: /entry "h": "\.\." in "\.\.\/outside"/,
    containers: ['tgz', 'deb'],
  },
  {
    title: 'a hard link to a file not extracted yet',
    specs: [
      { name: 'h', kind: 'hardlink', target: 'later' },
      { name: 'later', kind: 'file' },
    ],
    pattern: /entry "h": hard link to "later", which is not a regular file extracted before it/,
    containers: ['tgz', 'deb'],
  },
  {
    title: 'a hard link to a symlink',
    specs: [
      { name: 's', kind: 'symlink', target: 'x' },
      { name: 'h', kind: 'hardlink', target: 's' },
    ],
    pattern: /entry "h": hard link to "s", which is not a regular file/,
    containers: ['tgz', 'deb'],
  },
  {
    title: 'a character device',
    specs: [{ name: 'dev/null', kind: 'chardev' }],
    pattern: /entry "dev\/null": character device entries are not extracted/,
  },
  { title: 'a fifo', specs: [{ name: 'pipe', kind: 'fifo' }], pattern: /entry "pipe": fifo entries are not extracted/ },
  {
    title: 'a file under a file',
    specs: [
      { name: 'f', kind: 'file' },
      { name: 'f/g', kind: 'file' },
    ],
    pattern: /entry "f\/g": its parent "f" is a file/,
  },
  {
    title: 'a file replacing a folder',
    specs: [
      { name: 'd/x', kind: 'file' },
      { name: 'd', kind: 'file' },
    ],
    pattern: /entry "d": a directory of this name was already extracted/,
  },
];

for (const c of hostile) {
  describe(c.title, () => {
    for (const container of c.containers ?? (['tgz', 'deb', 'rpm'] as Container[])) {
      test(`is refused in a ${container}`, async () => {
        await expectRefused(await archiveOf(container, c.specs), formatOf[container], extOf[container], c.pattern);
      });
    }
  });
}

describe('absolute symlinks are kept inside the tree', () => {
  test('link -> /etc becomes a relative link to <root>/etc', async () => {
    const file = join(work, 'abs.tgz');
    await writeFile(file, await compress(await buildTar(toTar([{ name: 'usr/lib/link', kind: 'symlink', target: '/etc' }])), 'gz'));
    const dest = join(work, 'abs');
    await extractPackage(file, 'tgz', dest);
    assert.equal(await readlink(join(dest, 'usr/lib/link')), '../../etc');
    await mkdir(join(dest, 'etc'));
    assert.equal(await realpath(join(dest, 'usr/lib/link')), join(await realpath(dest), 'etc'));
  });
});

describe('a NUL in a cpio name', () => {
  test('is refused', async () => {
    await expectRefused(
      await buildRpmFromCpio(buildCpio([{ name: 'a\0/etc/passwd', mode: 0o100644, data: 'x' }]), 'gzip'),
      'rpm',
      'rpm',
      /NUL in a path/,
    );
  });
});

describe('limits against archive bombs', () => {
  test('total bytes', async () => {
    const file = join(work, 'bomb.tgz');
    // 64 MiB of zeros compress to about 64 KiB.
    await writeFile(file, await compress(await buildTar([{ name: 'zeros', data: Buffer.alloc(64 * 1024 * 1024) }]), 'gz'));
    const dest = join(work, 'bomb', 'dest');
    await assert.rejects(
      extractPackage(file, 'tgz', dest, { maxBytes: 16 * 1024 * 1024 }),
      (e: unknown) =>
        e instanceof FalcoProbesError && /bomb\.tgz: refusing entry "zeros": the files would exceed 16777216 bytes/.test(e.format()),
    );
    assert.deepEqual(await readdir(join(work, 'bomb')), []);
  });

  test('entry count', async () => {
    const specs: Spec[] = Array.from({ length: 50 }, (_, i) => ({ name: `f${i}`, kind: 'file' as const }));
    for (const container of ['tgz', 'deb', 'rpm'] as Container[]) {
      const file = join(work, `many.${container}`);
      await writeFile(file, await archiveOf(container, specs));
      const dest = join(work, `many-${container}`, 'dest');
      await assert.rejects(
        extractPackage(file, formatOf[container], dest, { maxEntries: 20 }),
        /refusing entry "f20": more than 20 entries/,
      );
      assert.deepEqual(await readdir(join(work, `many-${container}`)), []);
    }
  });
});

describe('truncated and corrupt archives', () => {
  const files: Spec[] = Array.from({ length: 20 }, (_, i) => ({
    name: `dir/file-${i}`,
    kind: 'file' as const,
    data: `${'content '.repeat(500)}${i}\n`,
  }));

  test('a .deb cut short (the data member runs past the end)', async () => {
    const deb = await archiveOf('deb', files);
    await expectRefused(
      deb.subarray(0, deb.length - 100),
      'deb',
      'deb',
      /ar member "data\.tar\.xz" needs \d+ bytes but only \d+ remain \(truncated archive\)/,
    );
  });

  test('a real .deb cut in half', async () => {
    const tree = join(work, 'realtree');
    await makeSampleTree(tree);
    const deb = await buildDebWithDpkg(tree, join(work, 'realdeb'), 'xz');
    const { readFile } = await import('node:fs/promises');
    const bytes = await readFile(deb);
    await expectRefused(bytes.subarray(0, Math.floor(bytes.length / 2)), 'deb', 'deb', /truncated archive/);
  });

  test('a tarball whose gzip stream is cut', async () => {
    const tgz = await archiveOf('tgz', files);
    await expectRefused(
      tgz.subarray(0, Math.floor(tgz.length * 0.6)),
      'tgz',
      'tgz',
      /corrupt or truncated gz data: unexpected end of file/,
    );
  });

  test('an uncompressed tar cut between two entries (no end-of-archive marker)', async () => {
    const tar = await buildTar(toTar(files));
    // Each entry is a 512-byte header plus its data rounded to 512 bytes: cut after the 3rd.
    const entrySize = 512 + Math.ceil(Buffer.byteLength(files[0]!.data!) / 512) * 512;
    await expectRefused(
      tar.subarray(0, entrySize * 3),
      'tgz',
      'tar',
      /tar data ends without its end-of-archive marker \(truncated archive\) \(after entry "dir\/file-\d+"\)/,
    );
  });

  test('an uncompressed tar cut inside an entry', async () => {
    const tar = await buildTar(toTar(files));
    await expectRefused(tar.subarray(0, 512 * 5 + 100), 'tgz', 'tar', /tar data ends .*\(truncated archive\) \(in entry "dir\/file-0"\)/);
  });

  test('an rpm whose payload is cut', async () => {
    const rpm = await archiveOf('rpm', files);
    await expectRefused(rpm.subarray(0, rpm.length - 40), 'rpm', 'rpm', /corrupt or truncated xz data/);
  });

  test('an rpm whose headers are cut', async () => {
    const rpm = await archiveOf('rpm', files);
    await expectRefused(rpm.subarray(0, 150), 'rpm', 'rpm', /header .*(cut short|file ends first) \(truncated archive\)/);
  });

  test('a cpio payload without its trailer', async () => {
    const cpio = buildCpio(toCpio(files));
    const cut = cpio.subarray(0, cpio.lastIndexOf('070701'));
    await expectRefused(
      await buildRpmFromCpio(cut, 'gzip'),
      'rpm',
      'rpm',
      /data ends in the middle of a cpio header .*truncated archive.*after entry "dir\/file-19"/,
    );
  });

  test('a corrupt xz payload in a .deb', async () => {
    const deb = await archiveOf('deb', files);
    const at = deb.indexOf('data.tar.xz') + 60 + 200;
    const bad = Buffer.from(deb);
    for (let i = 0; i < 16; i++) bad[at + i]! ^= 0x5a;
    await expectRefused(bad, 'deb', 'deb', /data\.tar\.xz: corrupt or truncated xz data/);
  });

  test('a corrupt gzip stream in a tarball', async () => {
    const tgz = Buffer.from(await archiveOf('tgz', files));
    for (let i = 0; i < 16; i++) tgz[100 + i]! ^= 0x5a;
    await expectRefused(tgz, 'tgz', 'tgz', /corrupt or truncated gz data|corrupt tar data/);
  });

  test('not an archive at all', async () => {
    await expectRefused(Buffer.from('<html>mirror error page</html>\n'), 'deb', 'deb', /not a Debian package \(no ar header\)/);
    await expectRefused(Buffer.from('<html>mirror error page</html>\n'), 'rpm', 'rpm', /not an RPM package/);
  });
});
