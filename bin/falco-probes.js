#!/usr/bin/env node
// Entry point. Runs the compiled tool (dist/, written by `npm run build`)
// when it is at least as new as every file under src/; otherwise the
// TypeScript sources through tsx, so an edited checkout never runs stale
// code. The compiled tool starts several times faster (no transpiling).
// FALCO_PROBES_FROM_SOURCE=1 always runs the sources.
// An installed package (npm pack; npm i -g) ships dist/ and no src/: it runs
// dist/ and needs no tsx (a devDependency).
// A `build` whose last run was a complete no-op with nothing changed since
// ends in ./noop-stamp.js, before either is loaded (docs/PERFORMANCE.md).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

/** mtime of dist/BUILT (written last by `npm run build`), or -1 when there is none. */
function builtAt() {
  try {
    return statSync(`${root}dist/BUILT`).mtimeMs;
  } catch {
    return -1;
  }
}

/** Whether any file under `dir` was modified after `time`. */
function newerThan(dir, time) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory() ? newerThan(path, time) : statSync(path).mtimeMs > time) return true;
  }
  return false;
}

const hasSources = existsSync(`${root}src/cli/main.ts`);
const built = process.env.FALCO_PROBES_FROM_SOURCE === '1' && hasSources ? -1 : builtAt();
if (!hasSources && !existsSync(`${root}dist/cli/main.js`)) {
  process.stderr.write(`error: ${root} has neither src/ nor a compiled dist/; reinstall falco-probes (its package ships dist/)\n`);
  process.exit(2);
}
const compiled = !hasSources || (built >= 0 && !newerThan(`${root}src`, built));
const argv = process.argv.slice(2);
let replayed = false;
if (argv.includes('build')) {
  try {
    const { STAMP_GLOBAL, replayNoop, stampContext } = await import('./noop-stamp.js');
    const context = stampContext(argv, root, compiled);
    if (context) {
      replayed = replayNoop(context);
      globalThis[STAMP_GLOBAL] = context;
    }
  } catch {
    // Any doubt about the stamp: the normal path decides (and writes it again).
    replayed = false;
  }
}
if (replayed) process.exitCode = 0;
else {
  let main;
  if (compiled) ({ main } = await import('../dist/cli/main.js'));
  else {
    const { register } = await import('tsx/esm/api');
    register();
    ({ main } = await import('../src/cli/main.ts'));
  }
  process.exitCode = await main(argv);
}
