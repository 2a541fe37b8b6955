import { buildableHere, unbuildableLines, whyNotBuildable } from '../../run/buildable.js';
import type { Target } from '../../graph/types.js';
import { FalcoProbesError } from '../../util/errors.js';
import { loadBuildGraph } from '../../graph/load.js';
import { LocalRepository } from '../../repository/local.js';
import { parseShardCount } from '../../repository/shard.js';
import { planShards, renderGithubMatrix, renderPlanJson, renderPlanText } from '../../run/shard-plan.js';
import { planTargets } from '../../run/plan.js';
import { unloadedProbes } from '../../verify/run.js';
import type { Command } from '../context.js';
import { parseSelection, selectedTargets, selectionOptions, selectionUsage } from '../selection-options.js';
import { OK } from '../outcome.js';

const FORMATS = ['github-matrix', 'json', 'text'] as const;

export const command: Command = {
  name: 'plan',
  summary: 'split the out-of-date targets into N shards by key (a GitHub Actions matrix for `build --shard`)',
  usage: `usage: falco-probes plan [PATTERN...] --shards N [--format github-matrix|json|text] [options]

Finds the selected targets that are out of date against the local repository
(the same rule as build: no probe for the key, or its file missing or damaged)
and splits them into N shards by key. A target's shard depends only on its key
and N, so every machine computes the same split, each target is in exactly one
shard, and \`falco-probes build PATTERN --shard i/N\` on shard i builds exactly
the targets this plan lists for it.

  --format github-matrix   {"include":[{"shard":"1/8","targets":3},...]}: the shards that have work
  --format json            every shard with its targets (label, key, output, builder, reason)
  --json                   the same as --format json
  --format text            the same for people (default); each target names its builder:
                           host, docker, or docker:<release> for a compiler image (a module
                           whose kernel another gcc built: kernels/drivers.yaml compilerImages)

patterns (default //probes/...): //probes/..., //probes/<os>/..., //probes/<os>:<name>

options:
  --shards N             the number of shards (1 to 256)
  --shard i/N            only list shard i (json and text forms)
${selectionUsage(['label', 'repository'], '  ', 25)}
`,
  options: {
    shards: { type: 'string' },
    format: { type: 'string' },
    json: { type: 'boolean' },
    ...selectionOptions('shard', 'label', 'repository'),
  },
  allowPositionals: true,
  async run({ values, positionals }, ctx) {
    if (values['json'] === true && values['format'] !== undefined && values['format'] !== 'json')
      throw new FalcoProbesError('usage', `--json and --format ${String(values['format'])} disagree; give one`);
    const format = (values['format'] ?? (values['json'] === true ? 'json' : 'text')) as string;
    if (!(FORMATS as readonly string[]).includes(format))
      throw new FalcoProbesError('usage', `--format expects one of ${FORMATS.join(', ')}, got ${JSON.stringify(format)}`);
    const selection = parseSelection(values, ctx.root);
    const only = selection.shard;
    const count = values['shards'] !== undefined ? parseShardCount(values['shards']) : only?.count;
    if (count === undefined) throw new FalcoProbesError('usage', 'plan needs --shards N', { hint: 'see: falco-probes plan --help' });
    if (only && only.count !== count)
      throw new FalcoProbesError('usage', `--shard ${values['shard']} does not agree with --shards ${count}`);
    if (only && format === 'github-matrix')
      throw new FalcoProbesError('usage', '--shard lists one shard; the github-matrix form is for all of them');

    const graph = await loadBuildGraph(ctx.root);
    const targets = selectedTargets(graph, positionals, selection);
    const repo = await LocalRepository.read(selection.repositoryDir);
    const planned = await planTargets(targets, repo);
    const plan = planShards(planned, count);
    ctx.logger.info(
      `${plan.outOfDate} of ${plan.total} target(s) out of date; ${plan.shards.filter((s) => s.targets.length).length} of ${count} shard(s) have work`,
    );
    // Up to date yet known not to load: no shard rebuilds them (same key, same bytes), so say so here.
    const unloaded = unloadedProbes(
      planned.filter((p) => p.reason === undefined).map((p) => p.target),
      (file) => repo.entry(file),
    );
    if (unloaded.length)
      ctx.logger.warn(
        `${unloaded.length} up-to-date probe(s) did not load into their kernel at their last load test and are not rebuilt: ` +
          `${unloaded
            .slice(0, 10)
            .map((u) => `${u.target.label} (${u.verdict})`)
            .join(', ')}${unloaded.length > 10 ? ', ...' : ''}; fix their driver, or see falco-probes load-test --force`,
      );
    // Targets no builder of this machine's architecture can build (aarch64 on x86_64): shown, never hidden.
    // Whether Docker answers here is not asked: the shards may build elsewhere.
    const here = { ...buildableHere(), dockerAnswers: async () => true };
    const notes = new Map<Target, string>();
    for (const p of planned) {
      if (p.reason === undefined) continue;
      const why = await whyNotBuildable(p.target, here);
      if (why !== undefined) notes.set(p.target, why);
    }
    for (const line of unbuildableLines(notes, false)) ctx.logger.warn(line);
    ctx.stdout.write(
      format === 'github-matrix'
        ? renderGithubMatrix(plan)
        : format === 'json'
          ? renderPlanJson(plan, only, notes)
          : renderPlanText(plan, only, notes),
    );
    return OK;
  },
};
