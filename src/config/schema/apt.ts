import { regexSchema, templateSchema } from './common.js';

/** The `apt:` section of a source definition: which packages are kernels and how to follow their dependencies. */
export const aptSelectionSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['headers', 'follow', 'unameVersion', 'kernelVersion'],
  properties: {
    headers: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['flavour', 'pattern'],
        properties: {
          flavour: { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,31}$' },
          pattern: regexSchema,
          targetId: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$' },
        },
      },
    },
    follow: { type: 'array', items: regexSchema },
    unameVersion: templateSchema,
    kernelVersion: templateSchema,
    versionPattern: regexSchema,
    image: { type: 'array', items: templateSchema },
  },
} as const;
