import type { Command } from '../context.js';

// Every command, loaded on demand so `--help` and small commands start fast.
// Add a line here for a new command; its module exports `command`.
export const commandLoaders: Record<string, () => Promise<Command>> = {
  resolve: async () => (await import('./resolve.js')).command,
  'list-kernels': async () => (await import('./list-kernels.js')).command,
  'is-uploaded': async () => (await import('./is-uploaded.js')).command,
  publish: async () => (await import('./publish.js')).command,
  verify: async () => (await import('./verify.js')).command,
  keygen: async () => (await import('./keygen.js')).command,
  pins: async () => (await import('./pins.js')).command,
  plan: async () => (await import('./plan.js')).command,
  generate: async () => (await import('./generate.js')).command,
  pin: async () => (await import('./pin.js')).command,
  build: async () => (await import('./build.js')).command,
  'build-probe': async () => (await import('./build-probe.js')).command,
  'builder-image': async () => (await import('./builder-image.js')).command,
  'load-test': async () => (await import('./verify-load.js')).command,
  'diff-targets': async () => (await import('./diff-targets.js')).command,
};

/**
 * Old command names, still accepted for a while: each runs the command it names,
 * after a one-line note on stderr. Not listed among the commands by --help.
 */
export const commandAliases: Record<string, { name: string; until: string }> = {
  'verify-load': { name: 'load-test', until: 'until the next release' },
};
