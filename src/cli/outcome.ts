import { receivedSignal } from '../run/interrupt.js';

// What a command's run ends with, when it ends without an error. A command
// returns an Outcome or throws (a FalcoProbesError says what went wrong by its
// kind); main.ts alone turns either into an exit status (exitStatusOf and
// errors.ts's exitCodeFor), so no command holds an exit code.
//
//   ok            0: done, and the answer is yes
//   not-ok        1: the command ran to its end and the answer is no: a stale
//                 file (--check), a target that failed, a probe that did not
//                 load, a repository with problems, a probe not published
//   interrupted   128 + the signal's number (SIGINT 130, SIGTERM 143), as a
//                 shell reports a process the signal stopped

export type Outcome = { kind: 'ok' } | { kind: 'not-ok' } | { kind: 'interrupted'; signal: NodeJS.Signals };

export const OK: Outcome = Object.freeze({ kind: 'ok' });
export const NOT_OK: Outcome = Object.freeze({ kind: 'not-ok' });

/** `ok` when `good`, else `not-ok`. */
export function okIf(good: boolean): Outcome {
  return good ? OK : NOT_OK;
}

/** The outcome of a run that `abort` (withInterrupts's signal) stopped: interrupted by the signal that came. */
export function interrupted(abort: AbortSignal): Outcome {
  return { kind: 'interrupted', signal: receivedSignal(abort) ?? 'SIGINT' };
}

const RANK = { ok: 0, 'not-ok': 1, interrupted: 2 } as const;

/** The worse of two steps' outcomes (interrupted over not-ok over ok): a build followed by its load test. */
export function worse(a: Outcome, b: Outcome): Outcome {
  return RANK[b.kind] > RANK[a.kind] ? b : a;
}
