import type { ResolvedDriver, Target } from '../graph/types.js';
import { DriverSourceUnreachableError } from '../fetch/driver-source.js';

// What a build run does with its drivers' sources (fetched by
// fetch/driver-source.ts): obtain every one the targets need before
// anything is built, and say which could not be downloaded.

/**
 * The one line said about a driver whose source is unreachable: what, why,
 * how many targets it costs, and the way out. `skipping`: the run goes on
 * without them (--skip-unreachable-drivers); otherwise it stops.
 */
export function unreachableDriverLine(u: UnreachableDriver, skipping: boolean): string {
  const n = u.targets.length;
  const targets = `${n} target${n === 1 ? '' : 's'}`;
  return skipping
    ? `${u.error.message}; its ${targets} ${n === 1 ? 'was' : 'were'} not built. Serve it with ${u.error.serveWith}, or build where it can be downloaded`
    : `${u.error.message}; its ${targets} cannot be built. Serve it with ${u.error.serveWith}, or pass --skip-unreachable-drivers to build the rest without it`;
}

export interface UnreachableDriver {
  driver: ResolvedDriver;
  error: DriverSourceUnreachableError;
  /** The targets that need it. */
  targets: Target[];
}

/**
 * Obtain the source of every driver the targets need, once each (all at
 * once), before anything is built. Returns the drivers whose source could
 * not be downloaded; any other failure (a checksum, a missing folder) is
 * thrown: it is never a reason to go on without the driver.
 */
export async function obtainDriverSources(
  targets: readonly Target[],
  driverDir: (driver: ResolvedDriver) => Promise<string>,
): Promise<UnreachableDriver[]> {
  const byDriver = new Map<string, { driver: ResolvedDriver; targets: Target[] }>();
  for (const t of targets) {
    const id = `${t.driver.name}\0${t.driver.version}`;
    const entry = byDriver.get(id) ?? { driver: t.driver, targets: [] };
    entry.targets.push(t);
    byDriver.set(id, entry);
  }
  const outcomes = await Promise.allSettled([...byDriver.values()].map((e) => driverDir(e.driver)));
  const unreachable: UnreachableDriver[] = [];
  const entries = [...byDriver.values()];
  for (const [i, outcome] of outcomes.entries()) {
    if (outcome.status === 'fulfilled') continue;
    if (outcome.reason instanceof DriverSourceUnreachableError) unreachable.push({ ...entries[i]!, error: outcome.reason });
    else throw outcome.reason;
  }
  return unreachable;
}
