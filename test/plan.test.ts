import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, withTempDir } from './helpers/cli.js';
import { kernel, makeProject } from './helpers/graph-project.js';
import { sha256Hex } from '../src/util/hash.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { loadBuildGraph } from '../src/graph/load.js';
import { writeIndex } from '../src/repository/index-file.js';
import { entryFor } from '../src/repository/local.js';
import { MAX_SHARDS, inShard, parseShard, parseShardCount, shardOf, splitByShard } from '../src/repository/shard.js';

// Sharding: a target's shard is a function of its key and N only, the same on
// every machine; every out-of-date target is in exactly one shard; `plan`
// through the real binary in a real project (graph from lockfiles and
// drivers.yaml, out-of-date against a local repository).

test('shardOf: first 48 bits of the key modulo N, 1-based, checked against BigInt arithmetic', () => {
  assert.equal(shardOf('0'.repeat(64), 8), 1);
  assert.equal(shardOf('f'.repeat(64), 8), 8); // 0xffffffffffff % 8 = 7
  assert.equal(shardOf(`00000000000a${'0'.repeat(52)}`, 4), 3); // 10 % 4 = 2
  for (let i = 0; i < 500; i++) {
    const key = sha256Hex(`target ${i}`);
    for (const n of [1, 2, 3, 8, 13, 256]) {
      const want = Number(BigInt(`0x${key.slice(0, 12)}`) % BigInt(n)) + 1;
      assert.equal(shardOf(key, n), want);
      assert.ok(inShard(key, { index: want, count: n }));
    }
  }
  assert.throws(() => shardOf('not a key', 4), FalcoProbesError);
});

test('splitByShard: every key in exactly one shard, independent of order and of the other keys, balanced', () => {
  const keys = Array.from({ length: 2000 }, (_, i) => sha256Hex(`kernel ${i}`));
  const shards = splitByShard(keys, (k) => k, 8);
  assert.equal(shards.length, 8);
  const all = shards.flat();
  assert.equal(all.length, keys.length);
  assert.equal(new Set(all).size, keys.length);
  for (const s of shards) assert.ok(s.length > 250 * 0.75 && s.length < 250 * 1.25, `shard size ${s.length}`);
  // Another machine sees the keys in another order, and only some of them (others are up to date there): same shard for each.
  const subset = [...keys].reverse().filter((_, i) => i % 3 === 0);
  const again = splitByShard(subset, (k) => k, 8);
  for (const [i, s] of again.entries()) for (const k of s) assert.ok(shards[i]!.includes(k));
});

test('parseShard and parseShardCount: malformed or out-of-range arguments are usage errors', () => {
  assert.deepEqual(parseShard('3/8'), { index: 3, count: 8 });
  assert.deepEqual(parseShard('256/256'), { index: 256, count: 256 });
  for (const bad of ['0/8', '9/8', '3/0', 'x/8', '3/8/1', '3', '-1/8', '1/257', '', ' /8', '1.5/8']) {
    assert.throws(
      () => parseShard(bad),
      (e: unknown) => e instanceof FalcoProbesError && e.kind === 'usage',
      bad,
    );
  }
  assert.equal(parseShardCount('8'), 8);
  for (const bad of ['0', '-2', `${MAX_SHARDS + 1}`, 'eight', '2.5']) assert.throws(() => parseShardCount(bad), FalcoProbesError, bad);
});

const KERNELS = () => [
  ...['6.1.0-47', '6.1.0-48', '6.1.0-49', '6.1.0-50', '6.1.0-51', '6.1.0-52', '6.1.0-53'].map((r) => kernel(`${r}-amd64`)),
  kernel('6.12.9+deb12-amd64'),
  kernel('6.12.10+deb12-amd64'),
  kernel('6.1.0-50-arm64', { machine: 'aarch64' }),
];

test('plan through the real binary: out-of-date targets only, each in one shard, the same on another machine, and what build --dry-run would build', async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, 'project');
    await makeProject(root, { oses: { debian12: KERNELS(), other: [kernel('5.10.0-30-amd64')] } });
    const graph = await loadBuildGraph(root);
    assert.ok(graph.targets.length >= 20, `${graph.targets.length} targets`);
    // A third of the targets are already in the local repository with their current keys.
    const upToDate = graph.targets.filter((_, i) => i % 3 === 0);
    const repo = join(root, 'repository');
    const entries = [];
    for (const t of upToDate) {
      const bytes = Buffer.from(`probe of ${t.label}`);
      await mkdir(join(repo, t.output, '..'), { recursive: true });
      await writeFile(join(repo, t.output), bytes);
      entries.push(entryFor(t, { sha256: sha256Hex(bytes), size: bytes.length }));
    }
    await writeIndex(repo, { version: 1, probes: entries });
    const stale = graph.targets.filter((t) => !upToDate.includes(t));

    const json = await runCli(['plan', '--shards', '4', '--format', 'json'], { cwd: root });
    assert.equal(json.code, 0, json.stderr);
    const plan = JSON.parse(json.stdout) as {
      shards: number;
      total: number;
      outOfDate: number;
      plan: { shard: string; targets: { label: string; key: string }[] }[];
    };
    assert.equal(plan.total, graph.targets.length);
    assert.equal(plan.outOfDate, stale.length);
    assert.deepEqual(
      plan.plan.map((s) => s.shard),
      ['1/4', '2/4', '3/4', '4/4'],
    );
    const listed = plan.plan.flatMap((s) => s.targets.map((t) => t.label));
    assert.equal(listed.length, new Set(listed).size, 'no target in two shards');
    assert.deepEqual([...listed].sort(), stale.map((t) => t.label).sort(), 'every out-of-date target, and only those');
    for (const s of plan.plan) for (const t of s.targets) assert.equal(`${shardOf(t.key, 4)}/4`, s.shard);

    // Another machine: another path, a copy of the same inputs.
    const elsewhere = join(dir, 'elsewhere', 'checkout');
    await cp(root, elsewhere, { recursive: true });
    const there = await runCli(['plan', '--shards', '4', '--format', 'json'], { cwd: elsewhere });
    assert.equal(there.stdout, json.stdout);

    // The runner's own view of what is out of date agrees with the plan.
    const dry = await runCli(['build', '--dry-run'], { cwd: root });
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual(dry.stdout.trim().split('\n').sort(), [...listed].sort());

    const matrix = await runCli(['plan', '--shards', '4', '--format', 'github-matrix'], { cwd: root });
    assert.equal(matrix.code, 0, matrix.stderr);
    const m = JSON.parse(matrix.stdout) as { include: { shard: string; targets: number }[] };
    assert.deepEqual(
      m.include,
      plan.plan.filter((s) => s.targets.length).map((s) => ({ shard: s.shard, targets: s.targets.length })),
    );
    assert.equal(
      m.include.reduce((n, s) => n + s.targets, 0),
      stale.length,
    );

    const one = await runCli(['plan', '--shard', '2/4', '--format', 'text'], { cwd: root });
    assert.equal(one.code, 0, one.stderr);
    assert.match(one.stdout, /^shard 2\/4: \d+ target\(s\)$/m);
    assert.doesNotMatch(one.stdout, /^shard [134]\/4/m);
    for (const t of plan.plan[1]!.targets) assert.ok(one.stdout.includes(`  ${t.label}  [host]  (`), t.label);

    const os = await runCli(['plan', '//probes/other/...', '--shards', '2', '--format', 'json'], { cwd: root });
    const forOther = JSON.parse(os.stdout) as { outOfDate: number; plan: { targets: { label: string }[] }[] };
    assert.ok(forOther.plan.flatMap((s) => s.targets).every((t) => t.label.startsWith('//probes/other:')));
    assert.equal(forOther.outOfDate, stale.filter((t) => t.os === 'other').length);
  });
});

test('plan: bad --shard / --shards / --format arguments exit 2 before reading anything', async () => {
  await withTempDir(async (dir) => {
    await makeProject(dir, { oses: { debian12: [kernel('6.1.0-50-amd64')] } });
    // The parsers' every case is in the unit test above; these show the CLI turns them into exit 2.
    const cases: [string[], RegExp][] = [
      [['plan', '--shards', '0'], /--shards expects a whole number from 1 to 256, got "0"/],
      [['plan', '--shard', '5/4'], /--shard 5\/4: the shard number must be between 1 and 4/],
      [['plan', '--shards', '8', '--shard', '1/4'], /does not agree with --shards 8/],
      [['plan', '--shards', '4', '--format', 'yaml'], /--format expects one of github-matrix, json, text/],
      [['plan'], /plan needs --shards N/],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli(args, { cwd: dir })));
    cases.forEach(([args, re], i) => {
      assert.equal(results[i]!.code, 2, `${args.join(' ')}: ${results[i]!.stderr}`);
      assert.match(results[i]!.stderr, re, args.join(' '));
    });
  });
});

test('build --dry-run --shard i/N lists exactly what plan lists for shard i', async () => {
  await withTempDir(async (dir) => {
    const help = await runCli(['build', '--help'], { cwd: dir });
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /--shard\b/, 'build --help documents --shard (src/cli/commands/build.ts)');
    await makeProject(dir, { oses: { debian12: KERNELS() } });
    const plan = JSON.parse((await runCli(['plan', '--shards', '3', '--format', 'json'], { cwd: dir })).stdout) as {
      plan: { shard: string; targets: { label: string }[] }[];
    };
    for (const s of plan.plan) {
      const dry = await runCli(['build', '--dry-run', '--shard', s.shard], { cwd: dir });
      assert.equal(dry.code, 0, dry.stderr);
      assert.deepEqual(dry.stdout.trim().split('\n').filter(Boolean).sort(), s.targets.map((x) => x.label).sort(), s.shard);
    }
    const bad = await runCli(['build', '--dry-run', '--shard', '4/3'], { cwd: dir });
    assert.equal(bad.code, 2);
  });
});
