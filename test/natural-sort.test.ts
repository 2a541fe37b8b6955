import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compareNatural } from '../src/util/natural-sort.js';

// compareNatural is a scanner (it orders tens of thousands of names in
// generate); it must give exactly the order of the plain definition below,
// a split into digit and non-digit runs compared pairwise.
function reference(a: string, b: string): number {
  const re = /(\d+|\D+)/g;
  const pa = a.match(re) ?? [];
  const pb = b.match(re) ?? [];
  const n = Math.min(pa.length, pb.length);
  for (let i = 0; i < n; i++) {
    const x = pa[i]!;
    const y = pb[i]!;
    const xd = x.charCodeAt(0) >= 48 && x.charCodeAt(0) <= 57;
    const yd = y.charCodeAt(0) >= 48 && y.charCodeAt(0) <= 57;
    if (xd && yd) {
      const xi = BigInt(x);
      const yi = BigInt(y);
      if (xi !== yi) return xi < yi ? -1 : 1;
      if (x.length !== y.length) return x.length - y.length;
    } else if (x !== y) {
      if (xd !== yd) return xd ? 1 : -1;
      return x < y ? -1 : 1;
    }
  }
  if (pa.length !== pb.length) return pa.length - pb.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

test('compareNatural gives the reference order, sign and value, on kernel-like and random strings', () => {
  const words = [
    '',
    '0',
    '00',
    '01',
    '1',
    '9',
    '10',
    '007',
    '4.14.9',
    '4.14.10',
    '6.1.0-9',
    '6.1.0-10',
    '6.1.0-10-amd64',
    '6.1.0-10-cloud-amd64',
    'rc1',
    '1rc',
    'a',
    'a1',
    'a01',
    'a10',
    'b',
    'B',
    '-',
    '.',
    'x86_64',
    'aarch64',
    '99999999999999999999999',
    '99999999999999999999998',
    '6.12.9+deb12-amd64',
    '6.12.10+deb12-amd64',
    'linux-headers-6.1.0-50-amd64',
  ];
  let seed = 42;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const alphabet = '0019.-+~abZ_';
  for (let k = 0; k < 400; k++) {
    let s = '';
    const len = Math.floor(rand() * 8);
    for (let c = 0; c < len; c++) s += alphabet[Math.floor(rand() * alphabet.length)];
    words.push(s);
  }
  for (const a of words)
    for (const b of words) assert.equal(compareNatural(a, b), reference(a, b), `${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
});
