import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { runScheduled } from '../src/run/scheduler.js';

// Synthetic tasks that really wait (timers), with the number running at once
// measured from inside the tasks themselves.

function meter() {
  let running = 0;
  let peak = 0;
  return {
    enter() {
      running++;
      peak = Math.max(peak, running);
    },
    leave() {
      running--;
    },
    get peak() {
      return peak;
    },
    get running() {
      return running;
    },
  };
}

for (const jobs of [1, 2, 4, 8]) {
  test(`never more than -j ${jobs} at once, and every task finishes`, async () => {
    const m = meter();
    const items = Array.from({ length: 40 }, (_, i) => i);
    const finished: number[] = [];
    const outcomes = await runScheduled(
      items,
      async (i) => {
        m.enter();
        try {
          // Uneven lengths so that slots free up in a mixed order.
          await sleep(2 + ((i * 7) % 5));
          return i * 2;
        } finally {
          m.leave();
        }
      },
      { jobs, keepGoing: false, onFinish: (i) => finished.push(i) },
    );
    assert.equal(m.peak, jobs, `peak concurrency ${m.peak} with -j ${jobs}`);
    assert.equal(m.running, 0);
    assert.deepEqual(
      outcomes.map((o) => (o.status === 'ok' ? o.value : undefined)),
      items.map((i) => i * 2),
    );
    assert.deepEqual(
      [...finished].sort((a, b) => a - b),
      items,
    );
  });
}

test('without keep-going: no new task starts after the first failure; running ones finish', async () => {
  const m = meter();
  const started: number[] = [];
  const outcomes = await runScheduled(
    Array.from({ length: 20 }, (_, i) => i),
    async (i) => {
      started.push(i);
      m.enter();
      try {
        if (i === 3) {
          await sleep(5);
          throw new Error('task 3 broke');
        }
        await sleep(20);
        return i;
      } finally {
        m.leave();
      }
    },
    { jobs: 4, keepGoing: false },
  );
  const failed = outcomes.flatMap((o, i) => (o.status === 'failed' ? [i] : []));
  const skipped = outcomes.flatMap((o, i) => (o.status === 'skipped' ? [i] : []));
  const ok = outcomes.flatMap((o, i) => (o.status === 'ok' ? [i] : []));
  assert.deepEqual(failed, [3]);
  // 0..2 were running when 3 failed and finish normally; nothing after the failure starts.
  assert.deepEqual(ok, [0, 1, 2]);
  assert.deepEqual(started, [0, 1, 2, 3]);
  assert.deepEqual(
    skipped,
    Array.from({ length: 16 }, (_, i) => i + 4),
  );
  const error = (outcomes[3] as { error: Error }).error;
  assert.equal(error.message, 'task 3 broke');
});

test('with keep-going: every other task still runs after failures', async () => {
  const outcomes = await runScheduled(
    Array.from({ length: 12 }, (_, i) => i),
    async (i) => {
      await sleep(1);
      if (i % 5 === 0) throw new Error(`task ${i} broke`);
      return i;
    },
    { jobs: 3, keepGoing: true },
  );
  assert.deepEqual(
    outcomes.map((o) => o.status),
    outcomes.map((_, i) => (i % 5 === 0 ? 'failed' : 'ok')),
  );
});

test('an aborted run starts nothing new', async () => {
  const controller = new AbortController();
  const outcomes = await runScheduled(
    Array.from({ length: 10 }, (_, i) => i),
    async (i) => {
      if (i === 1) controller.abort();
      await sleep(2);
      return i;
    },
    { jobs: 2, keepGoing: true, signal: controller.signal },
  );
  assert.deepEqual(
    outcomes.map((o) => o.status),
    ['ok', 'ok', ...Array(8).fill('skipped')],
  );
});

test('N stay in flight: each finished task is replaced at once, so the makespan of equal tasks is total / N', async () => {
  // Checked by structure, not by the clock (timings belong in bench/scheduler.ts): tasks end only when
  // the test releases them, and after each release exactly min(N, not yet finished) are running.
  for (const jobs of [2, 4]) {
    const count = 12;
    const releases: (() => void)[] = [];
    let active = 0;
    let finished = 0;
    // Lets the scheduler react (its first start loads p-limit): turns of the event loop until
    // `n` tasks run, bounded by a count of turns, never by the clock; then one more turn, so a
    // start beyond `n` would be seen.
    const settle = async (n: number) => {
      for (let i = 0; i < 100_000 && active < n; i++) await new Promise<void>((r) => setImmediate(r));
      await new Promise<void>((r) => setImmediate(r));
    };
    const run = runScheduled(
      Array.from({ length: count }, (_, i) => i),
      () =>
        new Promise<void>((resolve) => {
          active++;
          releases.push(() => {
            active--;
            finished++;
            resolve();
          });
        }),
      { jobs, keepGoing: false },
    );
    await settle(jobs);
    assert.equal(active, jobs, `-j ${jobs}: ${jobs} started at once`);
    while (finished < count) {
      releases.shift()!();
      await settle(Math.min(jobs, count - finished));
      assert.equal(active, Math.min(jobs, count - finished), `-j ${jobs}: after ${finished} finished`);
    }
    await run;
  }
});

test('rejects a job count that is not a positive integer', async () => {
  await assert.rejects(
    runScheduled([1], async () => 1, { jobs: 0, keepGoing: false }),
    RangeError,
  );
});
