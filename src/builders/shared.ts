import { FalcoProbesError } from '../util/errors.js';
import type { BuilderPin, Target } from '../graph/types.js';

// Pieces both builders (host and Docker) need in the same form.

/** The error a builder throws when its request's signal ends a build. */
export function buildCancelled(target: Target, logFile: string, signal: AbortSignal | undefined): FalcoProbesError {
  return new FalcoProbesError('build', `build of ${target.label} was cancelled`, { location: { file: logFile }, cause: signal?.reason });
}

/** A builder's pin, computed once; a failure is not remembered, so the next call tries again. */
export function memoizePin(compute: () => Promise<BuilderPin>): () => Promise<BuilderPin> {
  let pinned: Promise<BuilderPin> | undefined;
  return () => {
    pinned ??= compute().catch((err) => {
      pinned = undefined;
      throw err;
    });
    return pinned;
  };
}
