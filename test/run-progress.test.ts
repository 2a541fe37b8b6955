import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { createLogger, createMemoryLogger, type Logger } from '../src/util/log.js';
import { createProgress, formatDuration } from '../src/run/progress.js';
import { reportJson, summaryLine, type BuildReport } from '../src/run/runner.js';

// What a person sees: the live line on a terminal, one line per target in
// CI, and the summary; and the --json form for machines.

test('CI form: one line per finished target, failures as errors, no live line', () => {
  const logger = createMemoryLogger();
  let now = 0;
  const p = createProgress(logger, 3, 2, () => now);
  p.started('//probes/a:1');
  p.started('//probes/a:2');
  now = 12_000;
  p.finished('//probes/a:1', { ok: true, ms: 12_000, note: 'fetch 0.1s, extract 2.0s, compile 9.9s' });
  now = 15_000;
  p.finished('//probes/a:2', { ok: false, ms: 15_000, reason: '[build] make exited with 2' });
  p.skipped('//probes/a:3');
  p.stop();
  assert.deepEqual(logger.lines, [
    '[1/3] built //probes/a:1 (fetch 0.1s, extract 2.0s, compile 9.9s) in 12s',
    'error: [2/3] FAILED //probes/a:2 after 15s: [build] make exited with 2',
  ]);
  assert.deepEqual(p.counts(), { total: 3, done: 3, running: 0, failed: 1 });
});

test('terminal form: a live status line with done/total, running, failed, elapsed and an ETA', () => {
  const stream = new PassThrough() as PassThrough & { isTTY: boolean; columns: number };
  stream.isTTY = true;
  stream.columns = 200;
  let written = '';
  stream.on('data', (d) => (written += d));
  const saved = process.env['CI'];
  delete process.env['CI'];
  let logger: Logger;
  try {
    logger = createLogger({ stream });
  } finally {
    if (saved !== undefined) process.env['CI'] = saved;
  }
  assert.equal(logger.interactive, true);
  let now = 0;
  const p = createProgress(logger, 4, 2, () => now);
  p.started('x');
  p.started('y');
  now = 20_000;
  p.finished('x', { ok: true, ms: 20_000 });
  p.stop();
  // After one of four done in 20 s with 2 slots: 3 left x 20 s / 2 = 30 s.
  assert.match(written, /\r\x1b\[2K\[1\/4\] 1 running, 0 failed, 20s elapsed, ETA 30s/);
  assert.doesNotMatch(written, /built x/, 'a success is not printed as its own line on a terminal');
});

test('durations read naturally', () => {
  assert.equal(formatDuration(1234), '1.2s');
  assert.equal(formatDuration(42_000), '42s');
  assert.equal(formatDuration(125_000), '2m05s');
  assert.equal(formatDuration(3_725_000), '1h02m');
});

test('summary line and --json summary', () => {
  const report: BuildReport = {
    repository: '/r',
    dryRun: false,
    targets: 3,
    upToDate: 1,
    built: 1,
    failed: 1,
    skipped: 0,
    elapsedMs: 61_000,
    results: [
      { label: '//probes/a:1', file: 'f1', key: 'k1', status: 'up-to-date' },
      { label: '//probes/a:2', file: 'f2', key: 'k2', status: 'built', reason: 'no-probe', publish: 'published', sha256: 's' },
      {
        label: '//probes/a:3',
        file: 'f3',
        key: 'k3',
        status: 'failed',
        reason: 'no-probe',
        errorKind: 'checksum',
        error: 'sha256 mismatch',
      },
    ],
  };
  assert.equal(summaryLine(report), '3 targets: 1 built, 1 up to date, 1 failed in 1m01s; repository /r');
  const json = JSON.parse(reportJson(report)) as Record<string, unknown>;
  assert.deepEqual(
    { targets: json['targets'], built: json['built'], upToDate: json['upToDate'], failed: json['failed'], elapsedMs: json['elapsedMs'] },
    { targets: 3, built: 1, upToDate: 1, failed: 1, elapsedMs: 61_000 },
  );
  assert.equal((json['results'] as { errorKind?: string }[])[2]!.errorKind, 'checksum');
});
