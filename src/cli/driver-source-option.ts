import { FalcoProbesError } from '../util/errors.js';
import type { UrlRewrite } from '../fetch/driver-source.js';
import type { Command } from './context.js';

// `--driver-mirror PREFIX=REPLACEMENT` (repeatable), shared by the commands
// that build (build, build-probe): a driver tarball whose URL starts with
// PREFIX is fetched from REPLACEMENT followed by the rest of the URL. Only
// where the bytes come from changes: the tarball's pin (sha256 or tree)
// still decides, and no key changes.
//
// FALCO_PROBES_DRIVER_MIRROR holds the same pairs separated by `;`: a Make
// recipe or a Please rule runs a command line fixed by `generate`, and the
// environment is how it reaches them. The command line's pairs come first.

export const DRIVER_MIRROR_ENV = 'FALCO_PROBES_DRIVER_MIRROR';

export const driverMirrorOptions = {
  'driver-mirror': { type: 'string', multiple: true },
} as const satisfies Command['options'];

/** The help line of the option, aligned like builderOptionsUsage. */
export function driverMirrorUsage(indent: string, column: number): string {
  const line = (flag: string, text: string) => `${`${indent}${flag}`.padEnd(column - 1)} ${text}`;
  const more = (text: string) => `${' '.repeat(column)}${text}`;
  return [
    line('--driver-mirror P=URL', 'fetch a driver tarball whose URL starts with P from URL + the rest'),
    more(`(http(s):// or file://; repeatable; also $${DRIVER_MIRROR_ENV}, pairs`),
    more('separated by ;). The source hash (sha256 or tree) still decides; keys do not change'),
  ].join('\n');
}

function parsePair(item: string, source: string): UrlRewrite {
  const eq = item.indexOf('=');
  if (eq <= 0) throw new FalcoProbesError('usage', `${source} expects PREFIX=URL, got ${JSON.stringify(item)}`);
  const prefix = item.slice(0, eq);
  const replacement = item.slice(eq + 1);
  let ok = false;
  try {
    ok = ['http:', 'https:', 'file:'].includes(new URL(replacement).protocol);
  } catch {
    ok = false;
  }
  if (!ok) throw new FalcoProbesError('usage', `${source} ${prefix}: not an http(s) or file URL: ${JSON.stringify(replacement)}`);
  return { prefix, replacement };
}

/** The rewrites of `--driver-mirror` (in order), then those of $FALCO_PROBES_DRIVER_MIRROR. */
export function parseDriverMirrors(values: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): UrlRewrite[] {
  const given = values['driver-mirror'];
  const list = Array.isArray(given) ? (given as string[]) : given === undefined ? [] : [String(given)];
  const rewrites = list.map((item) => parsePair(item, '--driver-mirror'));
  const fromEnv = env[DRIVER_MIRROR_ENV];
  if (fromEnv)
    for (const item of fromEnv
      .split(';')
      .map((s) => s.trim())
      .filter(Boolean))
      rewrites.push(parsePair(item, DRIVER_MIRROR_ENV));
  return rewrites;
}
