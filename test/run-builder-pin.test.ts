import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHostBuilder } from '../src/builders/host.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { builderSatisfies, checkBuilderPin } from '../src/run/runner.js';
import type { TargetPipeline } from '../src/run/build-target.js';
import type { BuilderPin, Target } from '../src/graph/types.js';

// The runner refuses to build when this machine's toolchain is not the one
// the keys name (they would lie), before anything is fetched. The real host
// builder names this machine's clang.

const keyedFor = (builder: BuilderPin) => ({ label: '//probes/x:k', builder }) as unknown as Target;

test("the host builder's pin against the keys' pin: equal line or bare version passes, anything else is refused with the fix", async () => {
  const builder = createHostBuilder();
  const pin = await builder.pin();
  assert.equal(pin.kind, 'host');
  const clang = (pin as { clang: string }).clang;
  const version = /(\d+\.\d+\.\d+)/.exec(clang)![1]!;
  const pipeline = { builder } as unknown as TargetPipeline;
  await checkBuilderPin(pipeline, [keyedFor({ kind: 'host', clang })]);
  await checkBuilderPin(pipeline, [keyedFor({ kind: 'host', clang: version })]);
  for (const other of [
    { kind: 'host', clang: '1.2.3' },
    { kind: 'host', clang: `Other ${clang}` },
    { kind: 'docker', image: 'sha256:abc', clang },
  ] as BuilderPin[]) {
    await assert.rejects(checkBuilderPin(pipeline, [keyedFor({ kind: 'host', clang }), keyedFor(other)]), (err: unknown) => {
      assert.ok(err instanceof FalcoProbesError);
      assert.equal(err.kind, 'config');
      assert.match(err.message, /probes built here would carry keys that lie/);
      assert.match(err.hint ?? '', new RegExp(`set \`builder\` in kernels/drivers.yaml to .*${version.replace(/\./g, '\\.')}`));
      return true;
    });
  }
});

test('docker pins need the same image', () => {
  const a: BuilderPin = { kind: 'docker', image: 'sha256:aaa', clang: '14.0.6' };
  assert.equal(builderSatisfies(a, { ...a }), true);
  assert.equal(builderSatisfies(a, { ...a, image: 'sha256:bbb' }), false);
  assert.equal(builderSatisfies(a, { kind: 'host', clang: '14.0.6' }), false);
});
