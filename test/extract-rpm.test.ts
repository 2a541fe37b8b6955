import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { extractPackage } from '../src/fetch/extract.js';
import { FalcoProbesError } from '../src/util/errors.js';
import {
  buildCpio,
  buildRpmFromCpio,
  buildRpmWithRpmbuild,
  listTree,
  makeSampleTree,
  tool,
  type RpmPayload,
} from './helpers/archive-fixtures.js';

// RPMs built for real with rpmbuild (xz, zstd and gzip payloads), extracted
// and compared with `rpm2cpio | cpio -idm`; and hand-made cpio payloads for
// what rpmbuild does not vary: the crc format and hard link groups.

let work: string;
let sample: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'fp-extract-rpm-'));
  sample = join(work, 'sample');
  await makeSampleTree(sample);
});

after(async () => {
  await rm(work, { recursive: true, force: true });
});

async function cpioReference(rpm: string, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const payload = await tool('rpm2cpio', [rpm]);
  await tool('cpio', ['-idm', '--quiet', '--no-absolute-filenames'], { cwd: dir, input: payload });
  return dir;
}

describe('.rpm built by rpmbuild', () => {
  for (const payload of ['xz', 'zstd', 'gzip'] as RpmPayload[]) {
    test(`${payload} payload matches rpm2cpio | cpio -idm`, { timeout: 120_000 }, async () => {
      const rpm = await buildRpmWithRpmbuild(sample, join(work, `build-${payload}`), payload);
      const compressor = (await tool('rpm', ['-qp', '--qf', '%{PAYLOADCOMPRESSOR}', rpm])).toString();
      assert.equal(compressor, payload);
      const ours = join(work, `ours-${payload}`);
      const summary = await extractPackage(rpm, 'rpm', ours);
      const reference = await cpioReference(rpm, join(work, `ref-${payload}`));
      const oursList = await listTree(ours);
      assert.deepEqual(oursList, await listTree(reference, { relativizeAbsoluteLinks: true }));
      // The sample's hard link survived as a hard link, and the absolute link was made relative.
      assert.equal(oursList.find((i) => i.path === 'usr/share/doc/sample/Makefile.hardlink')?.nlink, 2);
      assert.equal(oursList.find((i) => i.path === 'lib/modules/9.9.9-test/build')?.target, '../../../usr/src/linux-headers-9.9.9-test');
      assert.ok(summary.bytes > 300_000);
    });
  }
});

describe('hand-made cpio payloads', () => {
  test('crc (070702) format with hard link groups, data on the last name (rpm) or the first', async () => {
    const cpio = buildCpio(
      [
        { name: './usr', mode: 0o040755 },
        { name: './usr/a', mode: 0o100644, ino: 10, nlink: 3 },
        { name: './usr/b', mode: 0o100644, ino: 10, nlink: 3 },
        { name: './usr/c', mode: 0o100644, ino: 10, nlink: 3, data: 'shared\n' },
        { name: './usr/d', mode: 0o100755, ino: 20, nlink: 2, data: 'first\n' },
        { name: './usr/e', mode: 0o100755, ino: 20, nlink: 2 },
        { name: './usr/empty1', mode: 0o100644, ino: 30, nlink: 2 },
        { name: './usr/empty2', mode: 0o100644, ino: 30, nlink: 2 },
        { name: './usr/link', mode: 0o120777, data: 'c' },
      ],
      '070702',
    );
    for (const compressor of ['gzip', 'xz', 'zstd'] as const) {
      const file = join(work, `crc-${compressor}.rpm`);
      await writeFile(file, await buildRpmFromCpio(cpio, compressor));
      const dest = join(work, `crc-${compressor}`);
      await extractPackage(file, 'rpm', dest);
      for (const n of ['a', 'b', 'c']) assert.equal(await readFile(join(dest, 'usr', n), 'utf8'), 'shared\n');
      assert.equal((await stat(join(dest, 'usr/a'))).ino, (await stat(join(dest, 'usr/c'))).ino);
      assert.equal((await stat(join(dest, 'usr/a'))).nlink, 3);
      assert.equal(await readFile(join(dest, 'usr/e'), 'utf8'), 'first\n');
      assert.equal((await stat(join(dest, 'usr/e'))).mode & 0o777, 0o755);
      assert.equal((await stat(join(dest, 'usr/empty2'))).nlink, 2);
      assert.equal(await readFile(join(dest, 'usr/link'), 'utf8'), 'shared\n');
    }
    // And GNU cpio agrees (on the bare payload: rpm2cpio wants a signed package).
    const ref = join(work, 'crc-ref');
    await mkdir(ref);
    await tool('cpio', ['-idm', '--quiet', '--no-absolute-filenames'], { cwd: ref, input: cpio });
    assert.deepEqual(await listTree(join(work, 'crc-gzip')), await listTree(ref));
  });

  test('a crc payload whose byte sum is wrong is refused', async () => {
    const cpio = buildCpio([{ name: './f', mode: 0o100644, data: 'hello\n' }], '070702');
    // Flip one data byte after the header was summed.
    const at = cpio.indexOf('hello');
    cpio[at] = 'j'.charCodeAt(0);
    const file = join(work, 'badsum.rpm');
    await writeFile(file, await buildRpmFromCpio(cpio, 'gzip'));
    await assert.rejects(
      extractPackage(file, 'rpm', join(work, 'badsum')),
      (e: unknown) => e instanceof FalcoProbesError && /badsum\.rpm: payload of evil, gz cpio: .*fails its cpio checksum/.test(e.format()),
    );
  });
});
