import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCli, withTempDir } from './helpers/cli.js';
import { OS, writeProject } from './build-e2e-project.js';
import { syntheticKernel } from './build-e2e-project.js';
import { shardOf } from '../src/repository/shard.js';
import type { BuildReport } from '../src/run/runner.js';

// build's --shard, --builder and --verify-load options, answered without a compile.

const kernel = syntheticKernel;

test('--shard i/N builds exactly the targets whose key falls in shard i; the shards cover every target once', async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, 'project');
    await writeProject(root, {
      kernels: Array.from({ length: 9 }, (_, i) => kernel(`6.1.0-${i + 1}-amd64`)),
      mirrorUrl: 'http://127.0.0.1:9/none',
      builderClang: '14.0.6',
    });
    const all = JSON.parse((await runCli(['build', '--dry-run', '--json'], { cwd: root })).stdout) as BuildReport;
    assert.equal(all.results.length, 9);
    const seen: string[] = [];
    for (let i = 1; i <= 3; i++) {
      const r = await runCli(['build', '--dry-run', '--json', '--shard', `${i}/3`], { cwd: root });
      assert.equal(r.code, 0, r.stderr);
      const shard = JSON.parse(r.stdout) as BuildReport;
      for (const t of shard.results) assert.equal(shardOf(t.key, 3), i, t.label);
      seen.push(...shard.results.map((t) => t.label));
    }
    assert.deepEqual(seen.sort(), all.results.map((t) => t.label).sort());
    for (const bad of ['0/3', '4/3', '1/0', 'x', '1/3/5']) {
      const r = await runCli(['build', '--dry-run', '--shard', bad], { cwd: root });
      assert.equal(r.code, 2, `${bad}: ${r.stderr}`);
    }
  });
});

test('--builder and --docker-* options are checked before anything runs', async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, 'project');
    await writeProject(root, { kernels: [kernel('6.1.0-1-amd64')], mirrorUrl: 'http://127.0.0.1:9/none', builderClang: '14.0.6' });
    for (const args of [
      ['--builder', 'podman'],
      ['--docker-memory', '512'],
      ['--builder', 'docker', '--docker-recipe', 'make'],
      ['--builder', 'docker', '--docker-cpus', '0'],
    ]) {
      const r = await runCli(['build', '--dry-run', ...args], { cwd: root });
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /--builder|--docker/);
    }
    const help = await runCli(['build', '--help'], { cwd: root });
    assert.match(help.stdout, /--shard I\/N/);
    assert.match(help.stdout, /--builder host\|docker/);
    assert.match(help.stdout, /--verify-load/);
  });
});

test('--builder docker without a daemon says how to start one or use the host builder', async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, 'project');
    await writeProject(root, { kernels: [kernel('6.1.0-1-amd64')], mirrorUrl: 'http://127.0.0.1:9/none', builderClang: '14.0.6' });
    const r = await runCli(['build', '--dry-run', '--builder', 'docker', `//probes/${OS}/...`], {
      cwd: root,
      env: { DOCKER_HOST: `unix://${join(dir, 'no-daemon.sock')}` },
    });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /docker/i);
    assert.match(r.stderr, /--builder host|docker-daemon\.sh/);
  });
});
