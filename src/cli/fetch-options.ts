import { resolve } from 'node:path';
import { FalcoProbesError } from '../util/errors.js';
import type { FetchVia } from '../fetch/types.js';
import type { Builder } from '../builders/types.js';
import type { UrlRewrite } from '../fetch/driver-source.js';
import type { Target } from '../graph/types.js';
import type { PipelineOptions } from '../run/pipeline.js';
import { parseMirrorOverrides, parsePositiveInt, type CliContext } from './context.js';

// The option group of every command that fetches a lockfile's packages
// (build, build-probe, load-test): where packages come from, how, and
// where they are kept. One definition, one usage text, one parser.

export const fetchOptions = {
  mirror: { type: 'string', multiple: true },
  'fetch-via': { type: 'string' },
  cache: { type: 'string' },
  downloads: { type: 'string' },
} as const;

/** The usage lines, indented by `indent`, descriptions starting at column `column`. */
export function fetchOptionsUsage(indent: string, column: number): string {
  const line = (flag: string, text: string) => `${indent}${flag.padEnd(column - indent.length - 1)} ${text}`;
  const more = (text: string) => `${' '.repeat(column)}${text}`;
  return [
    line('--mirror NAME=URL', "fetch package archive NAME's packages from URL (repeatable); NAME may also be"),
    more('the archive of a driver shipped in a package (--mirror debian=URL)'),
    line('--fetch-via MODE', "http (the lockfile's mirrors), apt (apt-get download), or auto (default):"),
    more("the mirrors, then the mirrors apt's sources name for the same archive, then apt"),
    line('--cache DIR', 'package cache (default: $XDG_CACHE_HOME/falco-probes/packages)'),
    line('--downloads N', 'at most N downloads at once (default 4)'),
  ].join('\n');
}

export function parseFetchVia(value: unknown): FetchVia {
  if (value === undefined) return 'auto';
  if (value === 'http' || value === 'apt' || value === 'auto') return value;
  throw new FalcoProbesError('usage', `--fetch-via expects http, apt or auto, got ${JSON.stringify(value)}`);
}

export interface FetchChoice {
  mirrorOverrides: Map<string, string[]>;
  via: FetchVia;
  /** --cache, resolved (absent: the default cache). */
  cacheDir?: string;
  downloads: number;
}

/**
 * What a build's pipeline (run/pipeline.ts) takes from the command line: the
 * project, this group's choice, the driver mirrors and the builder (build and
 * build-probe alike).
 */
export function pipelineOptions(
  ctx: Pick<CliContext, 'root' | 'kernelsDir' | 'logger'>,
  fetch: FetchChoice,
  run: { targets: readonly Target[]; signal: AbortSignal; driverMirrors: readonly UrlRewrite[]; builder?: Builder | undefined },
): PipelineOptions {
  return {
    projectRoot: ctx.root,
    kernelsDir: ctx.kernelsDir,
    targets: run.targets,
    mirrorOverrides: fetch.mirrorOverrides,
    via: fetch.via,
    downloads: fetch.downloads,
    logger: ctx.logger,
    signal: run.signal,
    driverMirrors: run.driverMirrors,
    ...(run.builder ? { builder: run.builder } : {}),
    ...(fetch.cacheDir !== undefined ? { cacheDir: fetch.cacheDir } : {}),
  };
}

/** The group's values, checked (a bad value is a usage error naming the option). */
export function parseFetchOptions(values: Record<string, unknown>): FetchChoice {
  const cache = values['cache'];
  return {
    mirrorOverrides: parseMirrorOverrides(values['mirror']),
    via: parseFetchVia(values['fetch-via']),
    downloads: parsePositiveInt(values['downloads'], '--downloads', 4),
    ...(cache !== undefined ? { cacheDir: resolve(String(cache)) } : {}),
  };
}
