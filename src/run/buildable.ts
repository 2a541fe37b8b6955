import { hostArch } from '../builders/host-facts.js';
import { builderLabel } from '../graph/compiler-choice.js';
import type { Arch } from '../config/types.js';
import type { Target } from '../graph/types.js';

// Targets that no builder on this machine can build, known before any build
// starts: one for another architecture (the host and Docker builders both
// compile for this machine's), or a module keyed for a compiler image
// (kernels/drivers.yaml compilerImages) when no Docker daemon answers.
// `build` stops on them, naming them, unless --skip-unbuildable says to build
// the rest; the main job passes it, so a checked-in lockfile with aarch64
// kernels builds everything this machine can.

export interface BuildableHere {
  /** This machine's architecture, as targets write it (undefined: neither x86_64 nor aarch64). */
  arch: Arch | undefined;
  /** Whether a Docker daemon answers (asked once, only when a target needs one). */
  dockerAnswers: () => Promise<boolean>;
}

export function buildableHere(): BuildableHere {
  let answer: Promise<boolean> | undefined;
  return {
    arch: hostArch(),
    dockerAnswers: () =>
      (answer ??= import('../builders/docker-client.js')
        .then(
          (m) => m.connectDocker().then(() => true),
          () => false,
        )
        .catch(() => false)),
  };
}

/** Why `target` cannot be built here, or undefined when it can. */
export async function whyNotBuildable(target: Target, here: BuildableHere): Promise<string | undefined> {
  if (target.arch !== here.arch) return `for ${target.arch}; this machine builds ${here.arch ?? process.arch} only`;
  if (target.builder.kind === 'docker' && target.builder.release !== undefined && !(await here.dockerAnswers()))
    return `keyed for the ${builderLabel(target.builder)} compiler image (${target.builder.gcc ?? 'its gcc'}), and no Docker daemon answers (DOCKER_HOST; as root: bash scripts/docker-daemon.sh start)`;
  return undefined;
}

/** One line per reason: how many targets, the reason, and the first few labels. */
export function unbuildableLines(reasons: ReadonlyMap<Target, string>, skipping: boolean): string[] {
  const byReason = new Map<string, Target[]>();
  for (const [t, why] of reasons) {
    const list = byReason.get(why);
    if (list) list.push(t);
    else byReason.set(why, [t]);
  }
  const lines: string[] = [];
  for (const [why, targets] of byReason) {
    const shown = targets.slice(0, 3).map((t) => t.label);
    const more = targets.length > shown.length ? ` and ${targets.length - shown.length} more` : '';
    lines.push(
      `${targets.length} target${targets.length === 1 ? '' : 's'} ${skipping ? 'not built' : 'cannot be built'} here: ${why} (${shown.join(', ')}${more})`,
    );
  }
  return lines;
}
