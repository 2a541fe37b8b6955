import { readFile } from 'node:fs/promises';
import { FalcoProbesError } from '../../util/errors.js';
import { parseLabels } from '../../run/select.js';
import type { Command } from '../context.js';
import { OK } from '../outcome.js';

// What a pull request does to the build graph, from two generated/targets.json
// files (the base branch's and the PR's): the targets it adds, removes and
// rekeys (same name, another key: its inputs changed, so it is built again).
// The pull_request workflow posts the markdown table and builds the labels.

/** One entry of generated/targets.json, as far as this command reads it. */
export interface TargetEntry {
  label: string;
  key: string;
  os: string;
  arch: string;
  kind: string;
  driver: string;
  driverVersion: string;
  output: string;
  labels?: string[];
  [field: string]: unknown;
}

export interface TargetsDiff {
  added: TargetEntry[];
  removed: TargetEntry[];
  rekeyed: { before: TargetEntry; after: TargetEntry }[];
  unchanged: number;
  before: number;
  after: number;
}

export function diffTargets(before: readonly TargetEntry[], after: readonly TargetEntry[]): TargetsDiff {
  const old = new Map(before.map((t) => [t.label, t]));
  const now = new Map(after.map((t) => [t.label, t]));
  const byLabel = (a: { label: string }, b: { label: string }) => (a.label < b.label ? -1 : a.label > b.label ? 1 : 0);
  const added = after.filter((t) => !old.has(t.label)).sort(byLabel);
  const removed = before.filter((t) => !now.has(t.label)).sort(byLabel);
  const rekeyed: TargetsDiff['rekeyed'] = [];
  let unchanged = 0;
  for (const t of after) {
    const o = old.get(t.label);
    if (!o) continue;
    if (o.key !== t.key) rekeyed.push({ before: o, after: t });
    else unchanged++;
  }
  rekeyed.sort((a, b) => byLabel(a.after, b.after));
  return { added, removed, rekeyed, unchanged, before: before.length, after: after.length };
}

/** Labels of the targets a PR makes out of date (added and rekeyed): what its CI builds. */
export function changedLabels(d: TargetsDiff): string[] {
  return [...d.added, ...d.rekeyed.map((r) => r.after)].map((t) => t.label).sort();
}

const short = (key: string) => key.slice(0, 12);

export function renderMarkdown(d: TargetsDiff, maxRows: number): string {
  const lines = [
    `### Targets: ${d.added.length} added, ${d.removed.length} removed, ${d.rekeyed.length} rekeyed (${d.before} → ${d.after}; ${d.unchanged} unchanged)`,
    '',
  ];
  const rows: string[] = [];
  for (const t of d.added) rows.push(`| added | \`${t.label}\` | ${t.arch} | ${t.kind} | \`${short(t.key)}\` |`);
  for (const t of d.removed) rows.push(`| removed | \`${t.label}\` | ${t.arch} | ${t.kind} | \`${short(t.key)}\` |`);
  for (const r of d.rekeyed)
    rows.push(
      `| rekeyed | \`${r.after.label}\` | ${r.after.arch} | ${r.after.kind} | \`${short(r.before.key)}\` → \`${short(r.after.key)}\` |`,
    );
  if (rows.length === 0) {
    lines.push('No target is added, removed or rekeyed: nothing to build.');
    return `${lines.join('\n')}\n`;
  }
  lines.push('| change | target | arch | kind | key |', '|---|---|---|---|---|', ...rows.slice(0, maxRows));
  if (rows.length > maxRows)
    lines.push('', `… and ${rows.length - maxRows} more (\`falco-probes diff-targets OLD NEW --format text\` lists them all).`);
  return `${lines.join('\n')}\n`;
}

export function renderText(d: TargetsDiff): string {
  const lines = [
    ...d.added.map((t) => `+ ${t.label} ${t.key}`),
    ...d.removed.map((t) => `- ${t.label} ${t.key}`),
    ...d.rekeyed.map((r) => `~ ${r.after.label} ${r.before.key} -> ${r.after.key}`),
    `${d.added.length} added, ${d.removed.length} removed, ${d.rekeyed.length} rekeyed, ${d.unchanged} unchanged`,
  ];
  return `${lines.join('\n')}\n`;
}

async function readTargets(path: string): Promise<TargetEntry[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    throw new FalcoProbesError('usage', `cannot read ${path}: ${(cause as Error).message}`, { location: { file: path } });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new FalcoProbesError('input', `not JSON: ${(cause as Error).message}`, { location: { file: path } });
  }
  const targets = (parsed as { targets?: unknown } | null)?.targets;
  if (
    !Array.isArray(targets) ||
    !targets.every((t) => typeof t === 'object' && t !== null && typeof t.label === 'string' && typeof t.key === 'string')
  )
    throw new FalcoProbesError('input', 'not a targets.json: expected {"targets": [{"label": ..., "key": ...}, ...]}', {
      location: { file: path },
    });
  return targets as TargetEntry[];
}

/** `--label KEY=VALUE` on targets.json entries: the field KEY (or a `KEY:VALUE` label) equals VALUE. */
function labelFilter(items: readonly string[]): (t: TargetEntry) => boolean {
  const wanted = parseLabels(items);
  return (t) => [...wanted].every(([key, values]) => [...values].some((v) => t[key] === v || (t.labels ?? []).includes(`${key}:${v}`)));
}

const FORMATS = ['markdown', 'text', 'labels', 'json'] as const;

export const command: Command = {
  name: 'diff-targets',
  summary: "compare two generated/targets.json files: targets added, removed and rekeyed (a PR's table, the labels to build)",
  usage: `usage: falco-probes diff-targets OLD NEW [--format markdown|text|labels|json] [--label KEY=VALUE]

Compares two generated/targets.json files, such as the base branch's and a
pull request's, target by target (by label):
  added     in NEW only: built for the first time
  removed   in OLD only
  rekeyed   in both with another key: an input of its build changed, so it is
            out of date and built again (docs/KEYS.md)

  --format markdown   a table for a pull request comment (default)
  --format text       one line per target: + label key, - label key, ~ label old -> new
  --format labels     the labels of the added and rekeyed targets, one a line:
                      what the PR's CI builds (falco-probes build LABEL...)
  --format json       {added, removed, rekeyed, unchanged, before, after}
  --json              the same as --format json

  git show origin/main:generated/targets.json > /tmp/old.json
  falco-probes diff-targets /tmp/old.json generated/targets.json

options:
  --label KEY=VALUE   only targets with this label (os, driver, arch, kind, flavour); repeatable
  --max-rows N        markdown: at most N rows (default 300; a comment holds about 65,000 characters)
`,
  options: {
    format: { type: 'string' },
    json: { type: 'boolean' },
    label: { type: 'string', multiple: true },
    'max-rows': { type: 'string' },
  },
  allowPositionals: true,
  async run({ values, positionals }, ctx) {
    if (positionals.length !== 2)
      throw new FalcoProbesError('usage', 'diff-targets takes OLD and NEW (two targets.json files)', {
        hint: 'see: falco-probes diff-targets --help',
      });
    if (values['json'] === true && values['format'] !== undefined && values['format'] !== 'json')
      throw new FalcoProbesError('usage', `--json and --format ${String(values['format'])} disagree; give one`);
    const format = (values['format'] ?? (values['json'] === true ? 'json' : 'markdown')) as string;
    if (!(FORMATS as readonly string[]).includes(format))
      throw new FalcoProbesError('usage', `--format expects one of ${FORMATS.join(', ')}, got ${JSON.stringify(format)}`);
    const maxRows = values['max-rows'] === undefined ? 300 : Number(values['max-rows']);
    if (!Number.isInteger(maxRows) || maxRows < 1)
      throw new FalcoProbesError('usage', `--max-rows expects a positive whole number, got ${JSON.stringify(values['max-rows'])}`);
    const keep = labelFilter((values['label'] as string[] | undefined) ?? []);
    const [before, after] = await Promise.all(positionals.map(readTargets));
    const d = diffTargets(before!.filter(keep), after!.filter(keep));
    const out =
      format === 'markdown'
        ? renderMarkdown(d, maxRows)
        : format === 'text'
          ? renderText(d)
          : format === 'labels'
            ? changedLabels(d)
                .map((l) => `${l}\n`)
                .join('')
            : `${JSON.stringify(d, null, 2)}\n`;
    ctx.stdout.write(out);
    return OK;
  },
};
