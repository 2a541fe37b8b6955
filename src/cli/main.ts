import { readFileSync } from 'node:fs';
import { FalcoProbesError, errorMessage, exitCodeFor } from '../util/errors.js';
import { signalExitCode } from '../run/interrupt.js';
import { commandAliases, commandLoaders } from './commands/index.js';
import { createContext, parseCommandArgs, type CliContext, type Command } from './context.js';
import type { Outcome } from './outcome.js';

const GLOBAL_USAGE = `falco-probes: pre-build Falco eBPF probes for every kernel of every OS, as a content-keyed build graph

usage: falco-probes <command> [options]
       falco-probes <command> --help

global options:
  --root DIR      project root holding kernels/, probes/, generated/ (default: the working directory, or $FALCO_PROBES_ROOT)
  -h, --help      show help
  -V, --version   print the version of falco-probes
`;

/** The package's version: package.json two levels up, from src/cli/ and from dist/cli/ alike. */
export function toolVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : 'unknown';
}

async function globalHelp(): Promise<string> {
  const lines: string[] = [];
  for (const [name, load] of Object.entries(commandLoaders)) {
    const cmd = await load();
    lines.push(`  ${name.padEnd(16)} ${cmd.summary}`);
  }
  const aliases = Object.entries(commandAliases).map(([old, { name, until }]) => `  ${old.padEnd(16)} the old name of ${name} (${until})`);
  return `${GLOBAL_USAGE}\ncommands:\n${lines.join('\n')}\n${aliases.length ? `\nold names, still accepted:\n${aliases.join('\n')}\n` : ''}`;
}

/**
 * The exit status of a command's outcome: the one place, with exitCodeFor for
 * errors, where the CLI's statuses are decided (each command's usage text lists them).
 */
export function exitStatusOf(outcome: Outcome): number {
  switch (outcome.kind) {
    case 'ok':
      return 0;
    case 'not-ok':
      return 1;
    case 'interrupted':
      return signalExitCode(outcome.signal);
    default:
      throw new FalcoProbesError('internal', `a command returned ${JSON.stringify(outcome)}, not an outcome`);
  }
}

/** Run the CLI; returns the exit code. The single place where failures become messages. */
export async function main(argv: string[], ctxOverride?: Partial<CliContext>): Promise<number> {
  let root: string | undefined;
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--root') {
      root = argv[++i];
      if (root === undefined) {
        process.stderr.write('error: --root needs a directory\n');
        return 2;
      }
    } else if (a.startsWith('--root=')) root = a.slice('--root='.length);
    else rest.push(a);
  }
  const ctx = { ...createContext(root), ...ctxOverride };
  const [name, ...args] = rest;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    ctx.stdout.write(await globalHelp());
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-V' || name === 'version') {
    ctx.stdout.write(`${toolVersion()}\n`);
    return 0;
  }
  const alias = Object.hasOwn(commandAliases, name) ? commandAliases[name] : undefined;
  if (alias) ctx.logger.warn(`"${name}" is the old name of "${alias.name}", accepted ${alias.until}; use falco-probes ${alias.name}`);
  const load = Object.hasOwn(commandLoaders, alias?.name ?? name) ? commandLoaders[alias?.name ?? name] : undefined;
  if (!load) {
    ctx.logger.error(`unknown command "${name}"; see falco-probes --help`);
    return 2;
  }
  let cmd: Command | undefined;
  try {
    cmd = await load();
    if (args.includes('--help') || args.includes('-h')) {
      ctx.stdout.write(`${cmd.usage.trimEnd()}\n`);
      return 0;
    }
    const parsed = parseCommandArgs(cmd, args);
    return exitStatusOf(await cmd.run({ values: parsed.values as Record<string, unknown>, positionals: parsed.positionals }, ctx));
  } catch (err) {
    ctx.logger.done();
    ctx.logger.error(errorMessage(err));
    if (!(err instanceof FalcoProbesError) && err instanceof Error && err.stack) ctx.logger.debug(err.stack);
    return cmd?.answersByExitStatus ? 2 : exitCodeFor(err);
  } finally {
    ctx.logger.done();
  }
}
