import { resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { FalcoProbesError } from '../util/errors.js';
import { createLogger, type Logger } from '../util/log.js';
import type { Outcome } from './outcome.js';

export interface CliContext {
  /** The project root: where kernels/, probes/, generated/ live (`--root`, `FALCO_PROBES_ROOT`, or the working directory). */
  root: string;
  kernelsDir: string;
  logger: Logger;
  stdout: NodeJS.WritableStream;
}

export interface Command {
  name: string;
  summary: string;
  /** Full help text printed by `falco-probes <name> --help`. */
  usage: string;
  options: NonNullable<ParseArgsConfig['options']>;
  allowPositionals?: boolean;
  /**
   * The command is a question its exit status answers (0 yes, 1 no): every
   * error it throws, whatever its kind, exits 2, so that a failure never reads as "no".
   */
  answersByExitStatus?: boolean;
  /** Run the command: an outcome, or a thrown error (a FalcoProbesError's kind says which); main.ts makes either an exit status. */
  run(args: { values: Record<string, unknown>; positionals: string[] }, ctx: CliContext): Promise<Outcome>;
}

export function createContext(root?: string): CliContext {
  const r = resolve(root ?? process.env['FALCO_PROBES_ROOT'] ?? process.cwd());
  return { root: r, kernelsDir: resolve(r, 'kernels'), logger: createLogger(), stdout: process.stdout };
}

export function parseCommandArgs(cmd: Command, argv: string[]) {
  try {
    return parseArgs({ args: argv, options: cmd.options, allowPositionals: cmd.allowPositionals ?? true, strict: true });
  } catch (err) {
    throw new FalcoProbesError('usage', `${cmd.name}: ${(err as Error).message}`, { hint: `see: falco-probes ${cmd.name} --help` });
  }
}

/** `--mirror NAME=URL` (repeatable) into a map of package archive name (a source definition's `repositories:` entry) to mirror list. */
export function parseMirrorOverrides(values: unknown): Map<string, string[]> {
  const map = new Map<string, string[]>();
  const list = Array.isArray(values) ? (values as string[]) : values === undefined ? [] : [String(values)];
  for (const item of list) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new FalcoProbesError('usage', `--mirror expects NAME=URL, got ${JSON.stringify(item)}`);
    const name = item.slice(0, eq);
    const url = item.slice(eq + 1);
    try {
      const u = new URL(url);
      if (!['http:', 'https:', 'file:'].includes(u.protocol)) throw new Error('scheme');
    } catch {
      throw new FalcoProbesError('usage', `--mirror ${name}: not an http(s) URL: ${JSON.stringify(url)}`);
    }
    map.set(name, [...(map.get(name) ?? []), url]);
  }
  return map;
}

/** Parse a positive integer option such as `-j`. */
export function parsePositiveInt(value: unknown, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new FalcoProbesError('usage', `${flag} expects a positive whole number, got ${JSON.stringify(value)}`);
  return n;
}
