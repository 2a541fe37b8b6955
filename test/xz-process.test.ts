import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createXzDecompressor, findSystemXz } from '../src/util/xz-process.js';

// xz decoding for indexes (src/util/xz-process.ts): the system's `xz -dc`
// in a child process when there is one, lzma-native otherwise. Both give
// the same bytes, both fail on corrupt or truncated data, and a reader that
// stops early (a decompression bomb) stops xz too.

const plain = Buffer.from(
  Array.from(
    { length: 40_000 },
    (_, i) => `Package: p${i}\nVersion: 1.${i}\nSHA256: ${createHash('sha256').update(String(i)).digest('hex')}\n\n`,
  ).join(''),
);
const xz = execFileSync('xz', ['-6', '-c'], { input: plain, maxBuffer: 1 << 28 });

async function decode(input: Buffer, env?: string): Promise<Buffer> {
  const before = process.env['FALCO_PROBES_XZ'];
  if (env !== undefined) process.env['FALCO_PROBES_XZ'] = env;
  try {
    const chunks: Buffer[] = [];
    // Fed in pieces, as a download arrives.
    const pieces = Array.from({ length: Math.ceil(input.length / 7000) }, (_, i) => input.subarray(i * 7000, (i + 1) * 7000));
    await pipeline(
      Readable.from(pieces),
      env === 'native' ? (await import('../src/util/decompress.js')).createDecompressor('xz') : createXzDecompressor(),
      async (source: AsyncIterable<Buffer>) => {
        for await (const c of source) chunks.push(c);
      },
    );
    return Buffer.concat(chunks);
  } finally {
    if (before === undefined) delete process.env['FALCO_PROBES_XZ'];
    else process.env['FALCO_PROBES_XZ'] = before;
  }
}

test('the system xz is found on PATH (absolute entries only), and FALCO_PROBES_XZ=native or a PATH without it means lzma-native', () => {
  assert.match(findSystemXz() ?? '', /\/xz$/, 'these tests need xz (xz-utils) installed');
  assert.equal(findSystemXz({ PATH: '/nonexistent:relative/bin' }), null);
  assert.equal(findSystemXz({ PATH: process.env['PATH'], FALCO_PROBES_XZ: 'native' }), null);
});

test('the system xz and lzma-native give the same bytes, concatenated streams included', async () => {
  assert.ok((await decode(xz)).equals(plain));
  assert.ok((await decode(xz, 'native')).equals(plain));
  const two = Buffer.concat([xz, execFileSync('xz', ['-c'], { input: Buffer.from('second\n') })]);
  const both = Buffer.concat([plain, Buffer.from('second\n')]);
  assert.ok((await decode(two)).equals(both));
  assert.ok((await decode(two, 'native')).equals(both));
});

test('corrupt, truncated or trailing garbage: an error from either', async () => {
  const flipped = Buffer.from(xz);
  flipped[Math.floor(flipped.length / 2)]! ^= 0xff;
  for (const [what, bad] of [
    ['flipped byte', flipped],
    ['truncated', xz.subarray(0, xz.length - 100)],
    ['trailing garbage', Buffer.concat([xz, Buffer.from('garbage')])],
    ['not xz', Buffer.from('plain text, not xz')],
  ] as const) {
    await assert.rejects(decode(bad), /xz: /, `system: ${what}`);
    await assert.rejects(decode(bad, 'native'), `lzma-native: ${what}`);
  }
});

test('a reader that stops early destroys the stream, and the xz process with it', async () => {
  const d = createXzDecompressor();
  Readable.from([xz]).pipe(d);
  let got = 0;
  for await (const c of d as AsyncIterable<Buffer>) {
    got += (c as Buffer).length;
    if (got > 100_000) break; // as the index reader does past its size limit
  }
  assert.ok(d.destroyed);
  const child = (d as unknown as { child: { exitCode: number | null; signalCode: string | null; once(e: string, f: () => void): void } })
    .child;
  if (child.exitCode === null && child.signalCode === null) await new Promise<void>((resolve) => child.once('exit', resolve));
  assert.ok(child.signalCode === 'SIGKILL' || child.exitCode !== null);
});
