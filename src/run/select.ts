import { FalcoProbesError } from '../util/errors.js';
import { compareNatural } from '../util/natural-sort.js';
import type { Target } from '../graph/types.js';

// Please-style target patterns and label filters:
//   //probes/...              everything
//   //probes/<os>/...         every target of one OS (also //probes/<os> and //probes/<os>:all)
//   //probes/<os>:<name>      one target by its Please/Make name, or every target of a kernel
// Several patterns select the union; labels (`os=debian12`, `driver=example`,
// `arch=x86_64`, `kind=bpf`) then narrow it: different keys must all match,
// several values of one key are alternatives.

export const DEFAULT_PATTERN = '//probes/...';
export const LABEL_KEYS = ['os', 'driver', 'arch', 'kind', 'flavour'] as const;
export type LabelKey = (typeof LABEL_KEYS)[number];

type Pattern = { kind: 'all' } | { kind: 'os'; os: string } | { kind: 'name'; os: string; name: string };

const PATTERN_HELP = 'patterns look like //probes/..., //probes/<os>/..., //probes/<os>:<kernel>';

export function parsePattern(text: string): Pattern {
  const m = /^\/\/probes(?:\/(?<os>[^/:]+))?(?<rest>\/\.\.\.|:[^/:]+)?$/.exec(text);
  if (!m?.groups) throw new FalcoProbesError('usage', `not a target pattern: ${JSON.stringify(text)}`, { hint: PATTERN_HELP });
  const { os, rest } = m.groups;
  if (os === '...' && rest === undefined) return { kind: 'all' };
  if (os === undefined || os === '...') {
    if (rest === '/...') return { kind: 'all' };
    throw new FalcoProbesError('usage', `not a target pattern: ${JSON.stringify(text)}`, { hint: PATTERN_HELP });
  }
  if (rest === undefined || rest === '/...' || rest === ':all') return { kind: 'os', os };
  return { kind: 'name', os, name: rest.slice(1) };
}

export function labelOf(target: Target, key: LabelKey): string | undefined {
  switch (key) {
    case 'os':
      return target.os;
    case 'driver':
      return target.driver.name;
    case 'arch':
      return target.arch;
    case 'kind':
      return target.kind;
    case 'flavour':
      return target.kernel.flavour;
  }
}

export function parseLabels(items: readonly string[]): Map<LabelKey, Set<string>> {
  const labels = new Map<LabelKey, Set<string>>();
  for (const item of items) {
    const eq = item.indexOf('=');
    const key = item.slice(0, eq) as LabelKey;
    if (eq <= 0 || !LABEL_KEYS.includes(key))
      throw new FalcoProbesError(
        'usage',
        `--label expects KEY=VALUE with KEY one of ${LABEL_KEYS.join(', ')}, got ${JSON.stringify(item)}`,
      );
    const set = labels.get(key) ?? new Set<string>();
    set.add(item.slice(eq + 1));
    labels.set(key, set);
  }
  return labels;
}

/** Levenshtein distance, bounded work for the short names we compare. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

/** Up to `max` candidates close to `wanted`: small edit distance, or one a prefix of the other. */
export function nearMatches(wanted: string, candidates: Iterable<string>, max = 5): string[] {
  const limit = Math.max(2, Math.floor(wanted.length / 4));
  const scored: { name: string; score: number }[] = [];
  for (const c of new Set(candidates)) {
    const d = editDistance(wanted, c);
    const prefix = c.startsWith(wanted) || wanted.startsWith(c);
    if (d <= limit || prefix) scored.push({ name: c, score: prefix ? Math.min(d, limit) : d });
  }
  return scored
    .sort((x, y) => x.score - y.score || compareNatural(x.name, y.name))
    .slice(0, max)
    .map((s) => s.name);
}

function unknown(what: string, wanted: string, candidates: Iterable<string>, where = ''): FalcoProbesError {
  const near = nearMatches(wanted, candidates);
  return new FalcoProbesError('usage', `unknown ${what} "${wanted}"${where}`, {
    hint: near.length ? `did you mean: ${near.join(', ')}` : `see: falco-probes list-kernels <os>`,
  });
}

export interface SelectOptions {
  patterns: readonly string[];
  labels?: readonly string[];
  /** OS ids that exist even when they have no targets (a lockfile with no kernels). */
  knownOs?: readonly string[];
}

/** The targets the patterns and labels select, in the order of `targets`. */
export function selectTargets(targets: readonly Target[], options: SelectOptions): Target[] {
  const patterns = (options.patterns.length ? options.patterns : [DEFAULT_PATTERN]).map(parsePattern);
  const labels = parseLabels(options.labels ?? []);
  const byOs = new Map<string, Target[]>();
  for (const os of options.knownOs ?? []) byOs.set(os, []);
  for (const t of targets) {
    const list = byOs.get(t.os) ?? [];
    list.push(t);
    byOs.set(t.os, list);
  }

  const chosen = new Set<Target>();
  for (const p of patterns) {
    if (p.kind === 'all') {
      for (const t of targets) chosen.add(t);
      continue;
    }
    const ofOs = byOs.get(p.os);
    if (!ofOs) throw unknown('OS', p.os, byOs.keys());
    if (p.kind === 'os') {
      for (const t of ofOs) chosen.add(t);
      continue;
    }
    const hits = ofOs.filter((t) => t.name === p.name);
    const byKernel = hits.length ? hits : ofOs.filter((t) => t.kernel.name === p.name);
    if (!byKernel.length) throw unknown('kernel', p.name, [...ofOs.map((t) => t.name), ...ofOs.map((t) => t.kernel.name)], ` in ${p.os}`);
    for (const t of byKernel) chosen.add(t);
  }

  for (const [key, values] of labels) {
    const known = new Set(targets.map((t) => labelOf(t, key)).filter((v): v is string => v !== undefined));
    if (key === 'os') for (const os of byOs.keys()) known.add(os);
    for (const v of values) if (!known.has(v)) throw unknown(`value of label ${key}:`, v, known);
  }
  return targets.filter((t) => chosen.has(t) && [...labels].every(([key, values]) => values.has(labelOf(t, key) ?? '')));
}
