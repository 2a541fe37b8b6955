import { builderLabel } from '../graph/compiler-choice.js';
import type { PlannedTarget } from './plan.js';
import type { Target } from '../graph/types.js';
import { REASON_TEXT } from './plan.js';
import { formatShard, splitByShard, type Shard } from '../repository/shard.js';

// `plan`: the out-of-date targets split into N shards by key (shard.ts), in
// the forms CI wants: a GitHub Actions matrix of the shards that have work,
// plain text for people, JSON for scripts.

export interface ShardPlan {
  count: number;
  /** Targets considered (selected by the patterns). */
  total: number;
  outOfDate: number;
  /** Every shard, 1..count, each with its out-of-date targets in graph order. */
  shards: { shard: string; index: number; targets: PlannedTarget[] }[];
}

export function planShards(planned: readonly PlannedTarget[], count: number): ShardPlan {
  const stale = planned.filter((p) => p.reason !== undefined);
  const split = splitByShard(stale, (p) => p.target.key, count);
  return {
    count,
    total: planned.length,
    outOfDate: stale.length,
    shards: split.map((targets, i) => ({ shard: formatShard({ index: i + 1, count }), index: i + 1, targets })),
  };
}

/**
 * `{"include":[{"shard":"1/8","targets":3},...]}` with only the shards that
 * have work (an idle CI job is waste). GitHub refuses an empty matrix, so a
 * workflow guards the build job with the plan's `count` output (docs/PUBLISHING.md).
 */
export function renderGithubMatrix(plan: ShardPlan): string {
  const include = plan.shards.filter((s) => s.targets.length > 0).map((s) => ({ shard: s.shard, targets: s.targets.length }));
  return `${JSON.stringify({ include })}\n`;
}

/** Per target, why no builder on the planning machine can build it (run/buildable.ts); shown beside it. */
export type PlanNotes = ReadonlyMap<Target, string>;

export function renderPlanJson(plan: ShardPlan, only?: Shard, notes: PlanNotes = new Map()): string {
  const body = {
    shards: plan.count,
    total: plan.total,
    outOfDate: plan.outOfDate,
    plan: plan.shards
      .filter((s) => only === undefined || s.index === only.index)
      .map((s) => ({
        shard: s.shard,
        targets: s.targets.map((p) => {
          const note = notes.get(p.target);
          return {
            label: p.target.label,
            key: p.target.key,
            output: p.target.output,
            builder: builderLabel(p.target.builder),
            reason: p.reason,
            ...(note !== undefined ? { notBuildableHere: note } : {}),
          };
        }),
      })),
  };
  return `${JSON.stringify(body, null, 2)}\n`;
}

export function renderPlanText(plan: ShardPlan, only?: Shard, notes: PlanNotes = new Map()): string {
  const lines: string[] = [`${plan.outOfDate} of ${plan.total} target(s) out of date, in ${plan.count} shard(s)`];
  for (const s of plan.shards) {
    if (only !== undefined && s.index !== only.index) continue;
    lines.push(`shard ${s.shard}: ${s.targets.length} target(s)`);
    for (const p of s.targets) {
      const note = notes.get(p.target);
      lines.push(
        `  ${p.target.label}  [${builderLabel(p.target.builder)}]  (${p.reason ? REASON_TEXT[p.reason] : 'up to date'}${note !== undefined ? `; not buildable here: ${note}` : ''})`,
      );
    }
  }
  return `${lines.join('\n')}\n`;
}
