import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ByteWriter } from '../src/util/byte-writer.js';

// The writer the generated files are rendered into: its bytes are exactly
// the UTF-8 of everything written, in order, whatever the sizes of the
// pieces and however often its buffer grows.

test('ByteWriter: the UTF-8 of the pieces written, across growth and batching, with characters of 1 to 4 bytes', () => {
  const pieces: string[] = [];
  let seed = 7;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
  const alphabet = ['a', 'Z', '0', '\n', '"', 'é', 'ß', '€', '✓', '😀', '\u0000'];
  for (let i = 0; i < 5000; i++) {
    const n = next() % (i % 97 === 0 ? 40_000 : 60);
    let s = '';
    for (let k = 0; k < n; k++) s += alphabet[next() % alphabet.length];
    pieces.push(s);
  }
  const out = new ByteWriter(16); // grows many times
  for (const p of pieces) assert.equal(out.write(p), out, 'write returns the writer');
  const expected = Buffer.from(pieces.join(''), 'utf8');
  assert.equal(out.length, expected.length);
  assert.ok(out.bytes().equals(expected));
  assert.ok(out.bytes().equals(expected), 'taking the bytes twice gives the same bytes');
});

test('ByteWriter: nothing written is no bytes; one piece larger than the buffer', () => {
  assert.equal(new ByteWriter().bytes().length, 0);
  const big = 'ü'.repeat(100_000);
  assert.ok(new ByteWriter(8).write(big).bytes().equals(Buffer.from(big)));
});
