// Runs tasks with at most `jobs` at once. The pool is held only around the
// task itself (wireit's lesson): waiting for a slot costs nothing. Without
// keepGoing the first failure stops new tasks from starting; the ones already
// running finish (a half-killed compile would only leave a mess to clean).

export type TaskOutcome<R> =
  | { status: 'ok'; value: R; ms: number }
  | { status: 'failed'; error: unknown; ms: number }
  /** Never started: an earlier failure without keepGoing, or the run was aborted. */
  | { status: 'skipped' };

export interface ScheduleOptions<T, R> {
  jobs: number;
  keepGoing: boolean;
  signal?: AbortSignal;
  onStart?: (item: T, index: number) => void;
  onFinish?: (item: T, outcome: TaskOutcome<R>, index: number) => void;
}

export async function runScheduled<T, R>(
  items: readonly T[],
  task: (item: T, index: number) => Promise<R>,
  options: ScheduleOptions<T, R>,
): Promise<TaskOutcome<R>[]> {
  if (!Number.isInteger(options.jobs) || options.jobs < 1) throw new RangeError(`jobs must be a positive integer, got ${options.jobs}`);
  // Loaded here, not at the top: a run with nothing to build never schedules anything.
  const { default: pLimit } = await import('p-limit');
  const limit = pLimit(options.jobs);
  let stopped = false;
  const outcomes: TaskOutcome<R>[] = new Array(items.length);
  await Promise.all(
    items.map((item, index) =>
      limit(async () => {
        if (stopped || options.signal?.aborted) {
          outcomes[index] = { status: 'skipped' };
          return;
        }
        options.onStart?.(item, index);
        const started = performance.now();
        let outcome: TaskOutcome<R>;
        try {
          outcome = { status: 'ok', value: await task(item, index), ms: performance.now() - started };
        } catch (error) {
          outcome = { status: 'failed', error, ms: performance.now() - started };
          if (!options.keepGoing) stopped = true;
        }
        outcomes[index] = outcome;
        options.onFinish?.(item, outcome, index);
      }),
    ),
  );
  return outcomes;
}
