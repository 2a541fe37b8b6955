// Benchmark of the runner's scheduler (src/run/scheduler.ts).
//
//   node --import tsx bench/scheduler.ts [--tasks 200] [--ms 25] [--runs 3]
//
// --tasks synthetic tasks of equal length (each waits --ms milliseconds on a
// timer, as a build waits on its compiler; no CPU is burnt, so the figure
// measures scheduling, not the machine's load) run at -j 2, 4 and 8. The
// makespan is divided by the ideal, tasks x length / jobs, and by the ideal
// from the tasks' measured durations (a timer fires a little late, more so on
// a loaded machine: that part is not the scheduler's); the measured peak
// concurrency must equal -j. Prints a markdown table (best of --runs).

import { setTimeout as sleep } from 'node:timers/promises';
import { runScheduled } from '../src/run/scheduler.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const tasks = arg('--tasks', 200);
const length = arg('--ms', 50);
const runs = arg('--runs', 3);

const rows: string[] = [];
for (const jobs of [2, 4, 8]) {
  let best = { makespan: Infinity, busy: 0 };
  let peak = 0;
  for (let r = 0; r < runs; r++) {
    let running = 0;
    let busy = 0;
    const t0 = performance.now();
    await runScheduled(
      Array.from({ length: tasks }, (_, i) => i),
      async () => {
        running++;
        peak = Math.max(peak, running);
        const s = performance.now();
        await sleep(length);
        busy += performance.now() - s;
        running--;
      },
      { jobs, keepGoing: false },
    );
    const makespan = performance.now() - t0;
    if (makespan < best.makespan) best = { makespan, busy };
  }
  const ideal = (tasks * length) / jobs;
  const measuredIdeal = best.busy / jobs;
  if (peak !== jobs) throw new Error(`peak concurrency ${peak} at -j ${jobs}`);
  rows.push(
    `| ${jobs} | ${tasks} x ${length} ms | ${ideal.toFixed(0)} ms | ${best.makespan.toFixed(0)} ms | **${(best.makespan / ideal).toFixed(3)}** | ${(best.makespan / measuredIdeal).toFixed(3)} | ${peak} |`,
  );
}

process.stdout.write(
  [
    `| -j | tasks | ideal (total / N) | makespan (best of ${runs}) | makespan / ideal | makespan / (measured task time / N) | peak running |`,
    '|---|---|---|---|---|---|---|',
    ...rows,
    '',
  ].join('\n'),
);
