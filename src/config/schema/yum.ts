import { templateSchema } from './common.js';

/** The `yum:` section of a source definition. */
export const yumSelectionSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['devel', 'unameVersion', 'kernelVersion'],
  properties: {
    devel: { type: 'array', minItems: 1, items: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$' } },
    kernel: { type: 'array', items: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$' } },
    unameVersion: templateSchema,
    kernelVersion: templateSchema,
    flavour: { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,31}$' },
    targetId: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$' },
    // `host` for repositories whose location hrefs climb out of the repository
    // (Amazon Linux's `../../../../../blobstore/...`); see src/resolve/yum-locations.ts.
    packageRoot: { type: 'string', enum: ['repository', 'host'] },
  },
} as const;
