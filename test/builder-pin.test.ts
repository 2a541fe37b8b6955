import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { clangSatisfies, normalizeClangVersion } from '../src/builders/host.js';
import { parseDriversText } from '../src/config/drivers.js';
import type { FalcoProbesError } from '../src/util/errors.js';

test('a builder pin names clang by its first --version line, or by a bare version number', () => {
  const own = normalizeClangVersion(execFileSync('clang', ['--version'], { encoding: 'utf8' }));
  const number = /(\d+\.\d+\.\d+)/.exec(own)![1]!;
  assert.ok(clangSatisfies(own, own));
  assert.ok(clangSatisfies(number, own));
  assert.ok(!clangSatisfies('Ubuntu clang version 14.0.6', 'Debian clang version 14.0.6'));
  assert.ok(!clangSatisfies('15.0.7', 'Debian clang version 14.0.6'));
  assert.ok(!clangSatisfies('14.0', 'Debian clang version 14.0.6'));
});

test('drivers.yaml accepts both pin forms and refuses shell metacharacters in the clang pin', () => {
  const text = (clang: string) => `builder:\n  kind: host\n  clang: ${JSON.stringify(clang)}\ndrivers: []\n`;
  assert.doesNotThrow(() => parseDriversText(text('Debian clang version 14.0.6'), 'drivers.yaml'));
  assert.doesNotThrow(() => parseDriversText(text('14.0.6'), 'drivers.yaml'));
  assert.throws(
    () => parseDriversText(text('clang version 14 $(id)'), 'drivers.yaml'),
    (e: FalcoProbesError) => /^drivers\.yaml:3:\d+: builder\.clang must match/.test(e.format()),
  );
});

test('drivers.yaml accepts a gcc pin (the first line of gcc --version) on both builder kinds, and refuses shell metacharacters in it', () => {
  const gcc = execFileSync('gcc', ['--version'], { encoding: 'utf8' }).split('\n')[0]!;
  const host = (value: string) => `builder:\n  kind: host\n  clang: "14.0.6"\n  gcc: ${JSON.stringify(value)}\ndrivers: []\n`;
  const docker = (value: string) =>
    `builder:\n  kind: docker\n  image: sha256:${'a'.repeat(64)}\n  clang: "14.0.6"\n  gcc: ${JSON.stringify(value)}\ndrivers: []\n`;
  assert.deepEqual(parseDriversText(host(gcc), 'drivers.yaml').builder, { kind: 'host', clang: '14.0.6', gcc });
  assert.doesNotThrow(() => parseDriversText(host('gcc (Debian 12.2.0-14+deb12u1) 12.2.0'), 'drivers.yaml'));
  assert.doesNotThrow(() => parseDriversText(docker('x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0'), 'drivers.yaml'));
  for (const bad of ['gcc 12 $(id)', 'gcc `id`', 'gcc; rm -rf /', ''])
    assert.throws(
      () => parseDriversText(host(bad), 'drivers.yaml'),
      (e: FalcoProbesError) => /^drivers\.yaml:4:\d+: builder\.gcc must match/.test(e.format()),
      bad,
    );
});
