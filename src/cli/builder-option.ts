import { dirname, join } from 'node:path';
import { FalcoProbesError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { DockerRecipe } from '../builders/docker.js';
import type { Builder } from '../builders/types.js';
import { createKeyer } from '../graph/key.js';
import type { BuilderPin, Target } from '../graph/types.js';
import { parsePositiveInt, type Command } from './context.js';

// `--builder host|docker` and its `--docker-*` options, shared by the
// commands that compile (build, build-probe): parsing them, making the
// builder, and keying the selected targets for it.
//
// FALCO_PROBES_BUILDER gives the default: a Make recipe or a Please rule runs
// a command line fixed by `generate`, and the environment is the only way
// to move those builds into Docker without regenerating them.

export const BUILDER_ENV = 'FALCO_PROBES_BUILDER';

export const builderOptions = {
  builder: { type: 'string' },
  'docker-recipe': { type: 'string' },
  'docker-image': { type: 'string' },
  'docker-memory': { type: 'string' },
  'docker-cpus': { type: 'string' },
} as const satisfies Command['options'];

const DOCKER_ONLY = ['docker-recipe', 'docker-image', 'docker-memory', 'docker-cpus'] as const;
const DEFAULT_MEMORY_MIB = 4096;
const DEFAULT_CPUS = 1;

export type BuilderChoice = { kind: 'host' } | { kind: 'docker'; recipe: DockerRecipe; image?: string; memoryBytes: number; cpus: number };

/**
 * The help lines of these options, aligned with a command's own: `indent`
 * before each flag, descriptions starting at column `column`.
 */
export function builderOptionsUsage(indent: string, column: number): string {
  const line = (flag: string, text: string) => `${`${indent}${flag}`.padEnd(column - 1)} ${text}`;
  const more = (text: string) => `${' '.repeat(column)}${text}`;
  return [
    line('--builder host|docker', 'compile on this host or in the Docker builder image'),
    more(`(default: $${BUILDER_ENV} when set, else host); with docker,`),
    more('keys name the image (DOCKER_HOST selects the daemon)'),
    line('--docker-recipe R', 'kbuild (default) or driver-loader'),
    line('--docker-image IMAGE', "image for the recipe (driver-loader: the loader's image; never pulled)"),
    line('--docker-memory MIB', `memory limit per container (default ${DEFAULT_MEMORY_MIB})`),
    line('--docker-cpus N', `CPU limit per container (default ${DEFAULT_CPUS})`),
  ].join('\n');
}

/**
 * The builder the command line asks for; without `--builder`, the one
 * $FALCO_PROBES_BUILDER names (pass `env: {}` to ignore the environment).
 * Every value is checked before anything runs.
 */
export function parseBuilderOptions(values: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): BuilderChoice {
  const fromEnv = env[BUILDER_ENV];
  const given =
    values['builder'] !== undefined
      ? { value: values['builder'], source: '--builder' }
      : fromEnv
        ? { value: fromEnv, source: BUILDER_ENV }
        : { value: 'host', source: '' };
  if (given.value !== 'host' && given.value !== 'docker')
    throw new FalcoProbesError('usage', `${given.source} expects host or docker, got ${JSON.stringify(given.value)}`, {
      ...(given.source === BUILDER_ENV ? { hint: `set ${BUILDER_ENV} to host or docker, or unset it` } : {}),
    });
  const recipe = values['docker-recipe'] ?? 'kbuild';
  if (recipe !== 'kbuild' && recipe !== 'driver-loader')
    throw new FalcoProbesError('usage', `--docker-recipe expects kbuild or driver-loader, got ${JSON.stringify(recipe)}`);
  const memoryMiB = parsePositiveInt(values['docker-memory'], '--docker-memory', DEFAULT_MEMORY_MIB);
  const cpus = parsePositiveInt(values['docker-cpus'], '--docker-cpus', DEFAULT_CPUS);
  const image = values['docker-image'];
  if (image !== undefined && (typeof image !== 'string' || image === ''))
    throw new FalcoProbesError('usage', '--docker-image expects an image name or id');
  if (given.value === 'host') {
    const stray = DOCKER_ONLY.filter((k) => values[k] !== undefined);
    if (stray.length)
      throw new FalcoProbesError(
        'usage',
        `${stray.map((k) => `--${k}`).join(', ')} need${stray.length === 1 ? 's' : ''} --builder docker`,
        {
          ...(given.source === BUILDER_ENV ? { hint: `${BUILDER_ENV} is host here` } : {}),
        },
      );
    return { kind: 'host' };
  }
  return { kind: 'docker', recipe, memoryBytes: memoryMiB * 1024 * 1024, cpus, ...(typeof image === 'string' ? { image } : {}) };
}

/** The targets keyed again for a builder pin: the key names how the probe is built. */
export function keyTargetsFor(targets: readonly Target[], pin: BuilderPin): Target[] {
  // One encoder for all of them: the parts shared by many targets (the pin, a driver, os-release) are encoded once.
  const keyOf = createKeyer();
  // A module keyed for a compiler image keeps it: only that image has its kernel's gcc.
  return targets.map((t) =>
    t.builder.kind === 'docker' && t.builder.release !== undefined
      ? t
      : { ...t, builder: pin, key: keyOf({ kernel: t.kernel, osRelease: t.osRelease, driver: t.driver, builder: pin, kind: t.kind }) },
  );
}

export interface PreparedBuilder {
  /**
   * The Docker builder; undefined for the host builder, which the pipeline
   * makes itself (and only when something is out of date).
   */
  builder: Builder | undefined;
  /** The targets as this builder builds them: the Docker builder's keyed with its image's pin, the host builder's as given. */
  targets: Target[];
}

/**
 * Make the chosen builder and key the targets for it. The generated files
 * hold keys for the pin of kernels/drivers.yaml; the Docker builder's image
 * id is its own pin, so its targets are keyed again (this connects to the
 * daemon and finds or builds the builder image).
 */
export async function prepareBuilder(
  choice: BuilderChoice,
  targets: readonly Target[],
  logger: Logger,
  /** The package cache of --cache: the image pins are remembered beside it (docker-pins/). */
  cacheDir?: string,
): Promise<PreparedBuilder> {
  if (choice.kind === 'host') return { builder: undefined, targets: [...targets] };
  const { createDockerBuilder } = await import('../builders/docker.js');
  const builder = createDockerBuilder({
    recipe: choice.recipe,
    memoryBytes: choice.memoryBytes,
    cpus: choice.cpus,
    logger,
    ...(choice.image !== undefined ? { image: choice.image } : {}),
    ...(cacheDir !== undefined ? { pinMemoDir: join(dirname(cacheDir), 'docker-pins') } : {}),
  });
  return { builder, targets: keyTargetsFor(targets, await builder.pin()) };
}
