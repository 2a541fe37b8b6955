import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { createLogger, createMemoryLogger, type Logger } from '../src/util/log.js';
import { createProgress, formatDuration } from '../src/run/progress.js';
import { reportJson, summaryLine, type BuildReport } from '../src/run/runner.js';
import { LOAD_TEST_WORDS } from '../src/verify/run.js';

// What a person sees: the live line on a terminal, one line per target in
// CI, and the summary; and the --json form for machines. Build and the load
// test share the one progress (run/progress.ts), each with its own words.

test('CI form: one line per finished target, failures as errors, no live line', () => {
  const logger = createMemoryLogger();
  let now = 0;
  const p = createProgress(logger, 3, 2, { now: () => now });
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

/** A logger on a terminal (a TTY stream, CI unset), and what it wrote. */
function terminalLogger(): { logger: Logger; written: () => string } {
  const stream = new PassThrough() as PassThrough & { isTTY: boolean; columns: number };
  stream.isTTY = true;
  stream.columns = 200;
  let written = '';
  stream.on('data', (d) => (written += d));
  const saved = process.env['CI'];
  delete process.env['CI'];
  try {
    return { logger: createLogger({ stream }), written: () => written };
  } finally {
    if (saved !== undefined) process.env['CI'] = saved;
  }
}

test('terminal form: a live status line with done/total, running, failed, elapsed and an ETA', () => {
  const { logger, written } = terminalLogger();
  assert.equal(logger.interactive, true);
  let now = 0;
  const p = createProgress(logger, 4, 2, { now: () => now });
  p.started('x');
  p.started('y');
  now = 20_000;
  p.finished('x', { ok: true, ms: 20_000 });
  p.stop();
  // After one of four done in 20 s with 2 slots: 3 left x 20 s / 2 = 30 s.
  assert.match(written(), /\r\x1b\[2K\[1\/4\] 1 running, 0 failed, 20s elapsed, ETA 30s/);
  assert.doesNotMatch(written(), /built x/, 'a success is not printed as its own line on a terminal');
});

test("the load test's words: loaded (its message and accelerator), a verdict that is not loaded in capitals, FAILED, cancelled; its times before the reason", () => {
  const logger = createMemoryLogger();
  let now = 0;
  const p = createProgress(logger, 5, 2, { now: () => now, words: LOAD_TEST_WORDS });
  for (const n of [1, 2, 3, 4]) p.started(`//probes/a:${n}`);
  now = 6_000;
  p.finished('//probes/a:1', { ok: true, ms: 6_000, note: 'loaded 2 programs; tcg' });
  p.finished('//probes/a:2', {
    ok: false,
    ms: 6_000,
    word: 'REFUSED',
    reason: "prog 'read_past_value': invalid access to map value, value_size=8 off=8 size=8 (tcg)",
  });
  p.finished('//probes/a:3', { ok: false, ms: 1_000, reason: '[input] 0.1.0/x86_64/p.o is missing' });
  p.cancelled('//probes/a:4');
  p.skipped('//probes/a:5');
  p.stop();
  assert.deepEqual(logger.lines, [
    '[1/5] loaded //probes/a:1 (loaded 2 programs; tcg) in 6.0s',
    "error: [2/5] REFUSED //probes/a:2 after 6.0s: prog 'read_past_value': invalid access to map value, value_size=8 off=8 size=8 (tcg)",
    'error: [3/5] FAILED //probes/a:3 after 1.0s: [input] 0.1.0/x86_64/p.o is missing',
    '[4/5] cancelled //probes/a:4',
  ]);
  assert.deepEqual(p.counts(), { total: 5, done: 5, running: 0, failed: 2 });
});

test("the load test on a terminal: each verdict's line too, and the live line counts VMs", () => {
  const { logger, written } = terminalLogger();
  assert.equal(logger.interactive, true);
  let now = 0;
  const p = createProgress(logger, 3, 2, { now: () => now, words: LOAD_TEST_WORDS });
  p.started('x');
  assert.match(written(), /\[0\/3\] 1 VM running, 0 failed, 0\.0s elapsed, ETA \?/);
  p.started('y');
  now = 8_000;
  p.finished('x', { ok: true, ms: 8_000, note: 'loaded 2 programs; kvm' });
  p.stop();
  assert.match(written(), /\[1\/3\] loaded x \(loaded 2 programs; kvm\) in 8\.0s/, 'a verdict is a line of its own on a terminal');
  // Two left, 8 s each, two slots: 8 s.
  assert.match(written(), /\[1\/3\] 1 VM running, 0 failed, 8\.0s elapsed, ETA 8\.0s/);
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

test('the no-op replay (bin/noop-stamp.js, which loads nothing of the tool) writes elapsed times as formatDuration does', async () => {
  const bin: string = '../bin/noop-stamp.js'; // plain JavaScript without declarations
  const { duration } = (await import(bin)) as { duration: (ms: number) => string };
  for (const ms of [0, 49, 950, 9_949, 9_950, 10_000, 59_499, 59_500, 61_000, 3_599_499, 3_600_000, 7_384_000, 90_061_000])
    assert.equal(duration(ms), formatDuration(ms), `${ms} ms`);
});
