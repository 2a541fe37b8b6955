import { FalcoProbesError, type ErrorLocation } from '../util/errors.js';
import {
  checkKernelVersion,
  checkOsReleaseEntry,
  checkPackageName,
  checkRelativePath,
  checkRelease,
  checkTargetName,
  checkUnameVersion,
  checkVersion,
} from '../util/names.js';
import type { YamlPath } from '../util/yaml-subset.js';
import type { KernelDescriptor, Lockfile } from '../config/types.js';

// The lockfile's one rule set, after its schema (schema.ts): every value
// that reaches a path, a target name or a shell passes the strict name rules
// of util/names.ts, and no kernel appears twice. Both readers use it: the
// YAML parser with positions (lockfile.ts) and the fast subset reader
// (load.ts). A failure is a configuration error at the value's position,
// named by the entry it is in.

/** Where a node of the lockfile is, for an error message (looked up only on failure). */
export type Where = (path: YamlPath) => ErrorLocation;

/**
 * Hostile kernel names first, before the schema judges the rest, so that the
 * message shows the name itself (the schema's message only names the
 * pattern it failed).
 */
export function checkKernelNames(value: unknown, where: Where): void {
  const kernels = (value as { kernels?: unknown }).kernels;
  if (!Array.isArray(kernels)) return;
  kernels.forEach((k, i) => {
    const name = (k as { name?: unknown } | null)?.name;
    if (typeof name === 'string') inConfig(() => checkTargetName(name), where, ['kernels', i, 'name'], `kernels[${i}]`);
  });
}

/** Every rule of a schema-valid lockfile. */
export function checkLockfileRules(lock: Lockfile, where: Where): void {
  for (const [k, v] of Object.entries(lock.osRelease)) inConfig(() => checkOsReleaseEntry(k, v), where, ['osRelease', k]);
  const seen = new Set<string>();
  lock.kernels.forEach((k, i) => {
    try {
      checkKernelFields(k);
    } catch {
      // Find the field again, one check at a time, to name it and its position.
      const entry = `kernel "${k.name}"`;
      inConfig(() => checkTargetName(k.name), where, ['kernels', i, 'name'], entry);
      inConfig(() => checkRelease(k.release), where, ['kernels', i, 'release'], entry);
      inConfig(() => checkUnameVersion(k.version), where, ['kernels', i, 'version'], entry);
      inConfig(() => checkKernelVersion(k.kernelVersion), where, ['kernels', i, 'kernelVersion'], entry);
      k.packages.forEach((p, j) => {
        const pkg = `${entry}, package "${p.name}"`;
        inConfig(() => checkPackageName(p.name), where, ['kernels', i, 'packages', j, 'name'], pkg);
        inConfig(() => checkVersion(p.version), where, ['kernels', i, 'packages', j, 'version'], pkg);
        inConfig(() => checkRelativePath(p.path), where, ['kernels', i, 'packages', j, 'path'], pkg);
      });
      checkKernelFields(k); // not reached unless the checks disagree
    }
    const id = `${k.name}/${k.machine}`;
    if (seen.has(id))
      throw new FalcoProbesError('config', `kernel "${k.name}" (${k.machine}) appears twice`, { location: where(['kernels', i, 'name']) });
    seen.add(id);
  });
}

/** Every name rule of one kernel entry, without locating the failure (the common case is no failure). */
function checkKernelFields(k: KernelDescriptor): void {
  checkTargetName(k.name);
  checkRelease(k.release);
  checkUnameVersion(k.version);
  checkKernelVersion(k.kernelVersion);
  for (const p of k.packages) {
    checkPackageName(p.name);
    checkVersion(p.version);
    checkRelativePath(p.path);
  }
}

/**
 * Run a name check; its failure becomes a configuration error (exit 2) at
 * the node's position, named by the entry it is in. The position is looked
 * up only on failure: it may cost a second parse.
 */
function inConfig(check: () => unknown, where: Where, path: YamlPath, entry?: string): void {
  try {
    check();
  } catch (err) {
    if (err instanceof FalcoProbesError && err.kind === 'input')
      throw new FalcoProbesError('config', entry ? `${entry}: ${err.message}` : err.message, { location: where(path) });
    throw err;
  }
}
