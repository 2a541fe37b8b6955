import { readFileSync } from 'node:fs';
import { FalcoProbesError, errorMessage, exitCodeFor } from '../util/errors.js';
import { commandLoaders } from './commands/index.js';
import { createContext, parseCommandArgs, type CliContext } from './context.js';

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
  return `${GLOBAL_USAGE}\ncommands:\n${lines.join('\n')}\n`;
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
  const load = commandLoaders[name];
  if (!load) {
    ctx.logger.error(`unknown command "${name}"; see falco-probes --help`);
    return 2;
  }
  try {
    const cmd = await load();
    if (args.includes('--help') || args.includes('-h')) {
      ctx.stdout.write(`${cmd.usage.trimEnd()}\n`);
      return 0;
    }
    const parsed = parseCommandArgs(cmd, args);
    return await cmd.run({ values: parsed.values as Record<string, unknown>, positionals: parsed.positionals }, ctx);
  } catch (err) {
    ctx.logger.done();
    ctx.logger.error(errorMessage(err));
    if (!(err instanceof FalcoProbesError) && err instanceof Error && err.stack) ctx.logger.debug(err.stack);
    return exitCodeFor(err);
  } finally {
    ctx.logger.done();
  }
}
