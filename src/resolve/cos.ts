import { FalcoProbesError } from '../util/errors.js';
import type { Resolver } from './types.js';

/** Google COS: filled in by the OS work (issue 6). */
export const resolveCosSource: Resolver = async (source) => {
  throw new FalcoProbesError('config', 'the cos repository type is not implemented yet', { location: { file: source.file } });
};
