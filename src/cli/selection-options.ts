import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { DEFAULT_REPOSITORY_DIR } from '../run/paths.js';
import { parseLabels, selectTargets } from '../run/select.js';
import { inShard, parseShard, type Shard } from '../repository/shard.js';
import type { Target } from '../graph/types.js';
import { parsePositiveInt } from './context.js';

// The option group of every command that runs over the graph's targets
// against the probe repository (build, plan, load-test): which targets
// (patterns, --label, --shard), which repository, its lock, and how many
// at once. One definition of each option, one parser; each command lists
// the ones it takes, and says in its own usage what -j and --shard mean to it.

const ALL = {
  jobs: { type: 'string', short: 'j' },
  label: { type: 'string', multiple: true },
  shard: { type: 'string' },
  repository: { type: 'string' },
  'wait-lock': { type: 'boolean' },
} as const;

export type SelectionOption = keyof typeof ALL;

/** The definitions of the named options of the group, for a command's `options`. */
export function selectionOptions<K extends SelectionOption>(...names: K[]): Pick<typeof ALL, K> {
  return Object.fromEntries(names.map((n) => [n, ALL[n]])) as Pick<typeof ALL, K>;
}

/** The usage lines of the options whose text is the same for every command, indented by `indent`, descriptions at `column`. */
export function selectionUsage(names: readonly ('label' | 'repository' | 'wait-lock')[], indent: string, column: number): string {
  const line = (flag: string, text: string) => `${indent}${flag.padEnd(column - indent.length - 1)} ${text}`;
  const text: Record<(typeof names)[number], string> = {
    label: line('--label KEY=VALUE', 'only targets with this label (os, driver, arch, kind, flavour); repeatable'),
    repository: line('--repository DIR', `the local repository (default: ${DEFAULT_REPOSITORY_DIR}/ under the project root)`),
    'wait-lock': line('--wait-lock', "wait for another runner's lock on the repository instead of failing"),
  };
  return names.map((n) => text[n]).join('\n');
}

export interface Selection {
  /** --label KEY=VALUE, checked. */
  labels: string[];
  /** --shard I/N. */
  shard?: Shard;
  /** --repository, resolved against the project root. */
  repositoryDir: string;
  waitLock: boolean;
  /** -j, --jobs (default: the number of cores). */
  jobs: number;
}

/** The group's values, checked before anything is read (a bad value is a usage error naming the option). */
export function parseSelection(values: Record<string, unknown>, root: string): Selection {
  const labels = (values['label'] as string[] | undefined) ?? [];
  parseLabels(labels);
  const shard = typeof values['shard'] === 'string' ? parseShard(values['shard']) : undefined;
  return {
    labels,
    ...(shard ? { shard } : {}),
    repositoryDir: resolve(root, (values['repository'] as string | undefined) ?? DEFAULT_REPOSITORY_DIR),
    waitLock: values['wait-lock'] === true,
    jobs: parsePositiveInt(values['jobs'], '--jobs', availableParallelism()),
  };
}

/** The targets that patterns and labels select, in graph order. */
export function selectedTargets(
  graph: { targets: readonly Target[]; oses: readonly string[] },
  patterns: readonly string[],
  selection: Pick<Selection, 'labels'>,
): Target[] {
  return selectTargets(graph.targets, { patterns: [...patterns], labels: selection.labels, knownOs: graph.oses });
}

/** The targets of --shard's slice (all when there is none): a fixed split of the keys that every machine computes alike. */
export function inSelectedShard(targets: Target[], selection: Pick<Selection, 'shard'>): Target[] {
  const { shard } = selection;
  return shard ? targets.filter((t) => inShard(t.key, shard)) : targets;
}
