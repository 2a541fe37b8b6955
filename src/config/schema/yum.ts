import { templateSchema } from './common.js';

const packageNameSchema = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$' } as const;
const flavourSchema = { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,31}$' } as const;
const targetIdSchema = { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$' } as const;

/** The `yum:` section of a source definition. */
export const yumSelectionSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['devel', 'unameVersion', 'kernelVersion'],
  properties: {
    // A package name, or { name, flavour, targetId, unameVersion, kernelVersion, kernel } for a
    // package whose kernels are a flavour of their own (Oracle's kernel-uek-devel).
    devel: {
      type: 'array',
      minItems: 1,
      items: {
        anyOf: [
          packageNameSchema,
          {
            type: 'object',
            additionalProperties: false,
            required: ['name'],
            properties: {
              name: packageNameSchema,
              flavour: flavourSchema,
              targetId: targetIdSchema,
              unameVersion: templateSchema,
              kernelVersion: templateSchema,
              kernel: { type: 'array', items: packageNameSchema },
            },
          },
        ],
      },
    },
    kernel: { type: 'array', items: packageNameSchema },
    unameVersion: templateSchema,
    kernelVersion: templateSchema,
    flavour: flavourSchema,
    targetId: targetIdSchema,
    // `host` for repositories whose location hrefs climb out of the repository
    // (Amazon Linux's `../../../../../blobstore/...`); see src/resolve/yum-locations.ts.
    packageRoot: { type: 'string', enum: ['repository', 'host'] },
  },
} as const;
