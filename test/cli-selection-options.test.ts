import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { main } from '../src/cli/main.js';
import { parseSelection, selectionOptions } from '../src/cli/selection-options.js';
import { createMemoryLogger } from '../src/util/log.js';
import { withTempDir } from './helpers/cli.js';

// build, plan and load-test take their target selection (--label, --shard,
// --repository, --wait-lock, -j) from one option module: the same value is
// refused with the same words by each, before anything is read.

async function run(args: string[], root: string) {
  const out = new Writable({
    write(_chunk, _enc, done) {
      done();
    },
  });
  const logger = createMemoryLogger();
  const code = await main(['--root', root, ...args], { logger, stdout: out });
  return { code, stderr: logger.lines.join('\n') };
}

test('one parser: the group read from values, with defaults', () => {
  const s = parseSelection({ label: ['os=debian12'], shard: '2/4', repository: 'out', 'wait-lock': true, jobs: '3' }, '/p');
  assert.deepEqual(s, { labels: ['os=debian12'], shard: { index: 2, count: 4 }, repositoryDir: '/p/out', waitLock: true, jobs: 3 });
  const d = parseSelection({}, '/p');
  assert.equal(d.repositoryDir, '/p/repository');
  assert.equal(d.waitLock, false);
  assert.ok(d.jobs >= 1);
  assert.deepEqual(Object.keys(selectionOptions('label', 'shard')), ['label', 'shard']);
});

test('build, plan and load-test refuse a bad --label, --shard or -j with the same words, exit 2, before reading the project', async () => {
  await withTempDir(async (dir) => {
    // No kernels/ at all: a command that got past its options would fail otherwise.
    const root = join(dir, 'empty');
    const cases: [string[], RegExp][] = [
      [['--label', 'colour=blue'], /label/],
      [['--shard', '5/4'], /shard/],
    ];
    for (const [bad, words] of cases) {
      const said = new Set<string>();
      for (const cmd of [['build'], ['plan', '--shards', '4'], ['load-test']]) {
        const r = await run([...cmd, ...bad], root);
        assert.equal(r.code, 2, `${cmd.join(' ')} ${bad.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, words);
        said.add(r.stderr.replace(/^.*?error: /s, ''));
      }
      assert.equal(said.size, 1, `one message for ${bad.join(' ')}: ${[...said].join(' | ')}`);
    }
    for (const cmd of ['build', 'load-test']) {
      const r = await run([cmd, '-j', '0'], root);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /--jobs/);
    }
  });
});
