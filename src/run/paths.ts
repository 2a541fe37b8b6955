import { readdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { checkIdent, checkSha256, checkTargetName } from '../util/names.js';
import { processAlive } from '../util/process.js';
import { sweepTemporaries } from '../fetch/sweep.js';
import type { Target } from '../graph/types.js';

// Where a run keeps its own state under the project root (.falco-probes/,
// never published): per-target work directories and logs.

export const STATE_DIR = '.falco-probes';
export const DEFAULT_REPOSITORY_DIR = 'repository';

export interface RunPaths {
  root: string;
  state: string;
  /**
   * The target's private directory for this process: extracted packages,
   * build scratch, the built object. The pid in its name keeps compilers
   * orphaned by a killed runner (they run in their own process groups) out
   * of the next run's directory.
   */
  workDir(target: Target, purpose?: string): string;
  logFile(target: Target): string;
}

export function runPaths(projectRoot: string): RunPaths {
  const root = resolve(projectRoot);
  const state = join(root, STATE_DIR);
  return {
    root,
    state,
    // Names were checked when the lockfile was read; checked again here because they become paths.
    workDir: (t, purpose) =>
      join(state, 'work', `${checkSha256(t.key)}-${purpose ? `${checkIdent(purpose, 'work purpose')}-` : ''}${process.pid}`),
    logFile: (t) => join(state, 'logs', checkIdent(t.os, 'OS id'), `${checkTargetName(t.name)}.log`),
  };
}

/** Remove work directories of this target left by processes that are gone (kept failures, killed runs). */
export async function removeStaleWorkDirs(paths: RunPaths, target: Target): Promise<void> {
  const dir = join(paths.state, 'work');
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(`${target.key}-`)) continue;
    const pid = Number(/-(\d+)$/.exec(name)?.[1]);
    if (Number.isInteger(pid) && pid !== process.pid && !processAlive(pid)) await rm(join(dir, name), { recursive: true, force: true });
  }
}

/**
 * A run's own leftovers of processes that are gone: every work directory
 * (`<key>-[<purpose>-]<pid>`) whose pid is dead, and temporaries in
 * `.falco-probes/cache/`. Returns how many were removed.
 */
export async function sweepRunState(paths: RunPaths): Promise<number> {
  const dir = join(paths.state, 'work');
  let removed = (await sweepTemporaries(join(paths.state, 'cache'))).length;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const pid = Number(/^[0-9a-f]{64}-(?:[a-z0-9._-]+-)?(\d+)$/.exec(name)?.[1]);
    if (!Number.isInteger(pid) || pid === process.pid || processAlive(pid)) continue;
    await rm(join(dir, name), { recursive: true, force: true });
    removed++;
  }
  return removed;
}
