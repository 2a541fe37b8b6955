import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadBuildGraph } from '../src/graph/load.js';
import { renderProject } from '../src/generate/generate.js';
import { targetRecord } from '../src/generate/targets-json.js';
import { withTempDir } from './helpers/cli.js';
import { kernel, makeProject } from './helpers/graph-project.js';

// The rendered files, read back: targets.json is the documented record per
// target, and every target appears once in each output, in the same order.

test('targets.json holds targetRecord(t) for every target, in target order', async () => {
  await withTempDir(async (root) => {
    await makeProject(root, {
      oses: {
        debian12: [kernel('6.1.0-50-amd64'), kernel('6.12.9+deb12-amd64')],
        arm: [kernel('5.10.0-30-arm64', { machine: 'aarch64' })],
      },
    });
    const graph = await loadBuildGraph(root);
    const files = renderProject(graph);
    const parsed = JSON.parse(files.get('generated/targets.json')!) as { version: number; targets: unknown[] };
    assert.equal(parsed.version, 1);
    assert.deepEqual(parsed.targets, graph.targets.map(targetRecord));
    assert.deepEqual(
      graph.targets.map((t) => t.label),
      [
        '//probes/arm:5.10.0-30-arm64-example-1.0.0',
        '//probes/arm:5.10.0-30-arm64-falco-9.1.0+driver',
        '//probes/debian12:6.1.0-50-amd64-example-1.0.0',
        '//probes/debian12:6.1.0-50-amd64-falco-9.1.0+driver',
        '//probes/debian12:6.12.9+deb12-amd64-example-1.0.0',
        '//probes/debian12:6.12.9+deb12-amd64-falco-9.1.0+driver',
      ],
    );
    const makefile = files.get('generated/Makefile')!;
    const build = files.get('probes/debian12/BUILD')!;
    for (const t of graph.targets) {
      assert.equal(makefile.split(`\nrepository/${t.output}: .falco-probes/keys/${t.key}\n`).length, 2, `one Make rule for ${t.label}`);
      if (t.os === 'debian12') assert.equal(build.split(`name = "${t.name}",`).length, 2, `one Please rule for ${t.label}`);
    }
  });
});
