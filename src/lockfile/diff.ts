import { canonicalJson } from '../util/hash.js';
import type { KernelDescriptor, Lockfile } from '../config/types.js';
import { orderedDescriptor } from './lockfile.js';

export interface LockfileDiff {
  added: KernelDescriptor[];
  removed: KernelDescriptor[];
  changed: { before: KernelDescriptor; after: KernelDescriptor; fields: string[] }[];
  headerChanged: string[];
}

const id = (k: KernelDescriptor) => `${k.name}/${k.machine}`;

/** What a reviewer wants to see (of lockfiles as read, or a resolve's result before it is written): which kernels appeared, went away, or changed, and in which fields. */
export function diffLockfiles(before: Lockfile | undefined, after: Lockfile): LockfileDiff {
  const old = new Map((before?.kernels ?? []).map((k) => [id(k), k]));
  const now = new Map(after.kernels.map((k) => [id(k), k]));
  const added = after.kernels.filter((k) => !old.has(id(k)));
  const removed = (before?.kernels ?? []).filter((k) => !now.has(id(k)));
  const changed: LockfileDiff['changed'] = [];
  for (const k of after.kernels) {
    const o = old.get(id(k));
    if (!o) continue;
    // Compared as the lockfile writes them: the order of a kernel's packages in memory does not count.
    const [a, b] = [orderedDescriptor(o) as unknown as Record<string, unknown>, orderedDescriptor(k) as unknown as Record<string, unknown>];
    const fields = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter(
      (f) => canonicalJson(a[f] ?? null) !== canonicalJson(b[f] ?? null),
    );
    if (fields.length) changed.push({ before: o, after: k, fields: fields.sort() });
  }
  const headerChanged: string[] = [];
  if (before) {
    if (canonicalJson(before.source) !== canonicalJson(after.source)) headerChanged.push('source');
    if (canonicalJson(before.osRelease) !== canonicalJson(after.osRelease)) headerChanged.push('osRelease');
  }
  return { added, removed, changed, headerChanged };
}

export function formatLockfileDiff(os: string, d: LockfileDiff): string {
  const lines: string[] = [];
  for (const h of d.headerChanged) lines.push(`  ~ ${h}`);
  for (const k of d.added) lines.push(`  + ${k.name} (${k.machine})`);
  for (const k of d.removed) lines.push(`  - ${k.name} (${k.machine})`);
  for (const c of d.changed) {
    const pkgs = c.fields.includes('packages') ? ` [${diffPackages(c.before, c.after).join(', ')}]` : '';
    lines.push(`  ~ ${c.after.name} (${c.after.machine}): ${c.fields.join(', ')}${pkgs}`);
  }
  if (!lines.length) return `${os}: up to date`;
  return `${os}: ${d.added.length} added, ${d.removed.length} removed, ${d.changed.length} changed\n${lines.join('\n')}`;
}

function diffPackages(a: KernelDescriptor, b: KernelDescriptor): string[] {
  const key = (p: KernelDescriptor['packages'][number]) => canonicalJson(p);
  const inA = new Set(a.packages.map(key));
  const inB = new Set(b.packages.map(key));
  return [
    ...a.packages.filter((p) => !inB.has(key(p))).map((p) => `-${p.name} ${p.version}`),
    ...b.packages.filter((p) => !inA.has(key(p))).map((p) => `+${p.name} ${p.version}`),
  ];
}
