import type { Command } from '../context.js';

// Every command, loaded on demand so `--help` and small commands start fast.
// Add a line here for a new command; its module exports `command`.
export const commandLoaders: Record<string, () => Promise<Command>> = {
  resolve: async () => (await import('./resolve.js')).command,
  'list-kernels': async () => (await import('./list-kernels.js')).command,
};
