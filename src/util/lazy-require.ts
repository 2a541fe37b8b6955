import { createRequire } from 'node:module';

// Heavy dependencies loaded on first use, synchronously. `yaml`, `ajv` and
// `fast-glob` are CommonJS packages (an `import` of them runs the same
// CommonJS module), and loading them costs more than a whole no-op build
// (bench/noop.ts): a command that is served by its memos never loads them.
// Synchronous, so that the checks that need them stay synchronous functions.

const require = createRequire(import.meta.url);

export const lazyYaml = (): typeof import('yaml') => require('yaml') as typeof import('yaml');

export const lazyAjv = (): typeof import('ajv').Ajv => (require('ajv') as typeof import('ajv')).Ajv;
