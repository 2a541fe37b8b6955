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
// CommonJS (bin/package.json): Node starts a CommonJS entry a few
// milliseconds sooner than an ES module, which counts on that path; the
// tool itself is ES modules, loaded with import().
'use strict';
const { existsSync, readdirSync, statSync } = require('node:fs');
const { join } = require('node:path');

const root = `${join(__dirname, '..')}/`;

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

async function run() {
  const argv = process.argv.slice(2);
  // A no-op `build`'s stamp is read and its finds started first, to run while the rest is decided.
  let noop;
  let target;
  if (argv.includes('build')) {
    try {
      noop = require('./noop-stamp.js');
      target = noop.startReplay(argv);
    } catch {
      target = undefined;
    }
  }
  const hasSources = existsSync(`${root}src/cli/main.ts`);
  const built = process.env.FALCO_PROBES_FROM_SOURCE === '1' && hasSources ? -1 : builtAt();
  if (!hasSources && !existsSync(`${root}dist/cli/main.js`)) {
    noop?.cancelReplay(target);
    process.stderr.write(`error: ${root} has neither src/ nor a compiled dist/; reinstall falco-probes (its package ships dist/)\n`);
    return 2;
  }
  const compiled = !hasSources || (built >= 0 && !newerThan(`${root}src`, built));
  if (target) {
    try {
      const context = noop.stampContext(target, root, compiled);
      if (context) {
        globalThis[noop.STAMP_GLOBAL] = context;
        if (await noop.replayNoop(context, target)) return 0;
      } else noop.cancelReplay(target);
    } catch {
      // Any doubt about the stamp: the normal path decides, without one (a context that failed once is not asked again).
      delete globalThis[noop.STAMP_GLOBAL];
      noop.cancelReplay(target);
    }
  }
  let main;
  if (compiled) ({ main } = await import('../dist/cli/main.js'));
  else {
    const { register } = await import('tsx/esm/api');
    register();
    ({ main } = await import('../src/cli/main.ts'));
  }
  return main(argv);
}

run().then((code) => {
  process.exitCode = code;
});
