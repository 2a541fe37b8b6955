import { identSchema, regexSchema } from './common.js';

/**
 * The `cos:` section of a source definition: where the COS build ids are listed
 * (a GCS JSON API object listing) and fetched, and which milestones to take.
 * See src/resolve/cos.ts and docs/OS.md.
 */
export const cosSelectionSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['listing', 'headers', 'milestones'],
  properties: {
    // Repository names (from `repositories:`), so that `--mirror` can point either elsewhere.
    listing: identSchema,
    headers: identSchema,
    milestones: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['milestone', 'build'],
        properties: {
          milestone: { type: 'integer', minimum: 1, maximum: 9999 },
          build: { type: 'integer', minimum: 1, maximum: 99999999 },
        },
      },
    },
    buildIdPattern: regexSchema,
    maxHeadersBytes: { type: 'integer', minimum: 1024, maximum: 16 * 1024 ** 3 },
  },
} as const;
