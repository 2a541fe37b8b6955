import { archSchema, identSchema, osReleaseSchema, urlSchema } from './common.js';
import { aptSelectionSchema } from './apt.js';
import { yumSelectionSchema } from './yum.js';
import { cosSelectionSchema } from './cos.js';

export const SOURCE_DEFINITION_SCHEMA_ID = 'https://falco-probes.invalid/schemas/source-definition.schema.json';

export const sourceDefinitionSchema = {
  $id: SOURCE_DEFINITION_SCHEMA_ID,
  title: 'falco-probes source definition (kernels/<os>.yaml)',
  type: 'object',
  additionalProperties: false,
  required: ['id', 'type', 'targetId', 'architectures', 'minimumKernel', 'osRelease', 'repositories'],
  properties: {
    id: identSchema,
    description: { type: 'string', maxLength: 200 },
    type: { type: 'string', enum: ['apt', 'yum', 'cos'] },
    targetId: identSchema,
    architectures: { type: 'array', minItems: 1, uniqueItems: true, items: archSchema },
    minimumKernel: { type: 'string', pattern: '^[0-9]+\\.[0-9]+(\\.[0-9]+)?$' },
    osRelease: osReleaseSchema,
    repositories: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'mirrors'],
        properties: {
          name: identSchema,
          mirrors: { type: 'array', minItems: 1, items: urlSchema },
          mirrorList: { type: 'boolean' },
          suite: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$' },
          components: { type: 'array', minItems: 1, items: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$' } },
          keyring: { type: 'string', pattern: '^[A-Za-z0-9._/-]{1,200}$' },
          checkValidUntil: { type: 'boolean' },
        },
      },
    },
    apt: aptSelectionSchema,
    yum: yumSelectionSchema,
    cos: cosSelectionSchema,
  },
  allOf: [
    { if: { properties: { type: { const: 'apt' } } }, then: { required: ['apt'] } },
    { if: { properties: { type: { const: 'yum' } } }, then: { required: ['yum'] } },
  ],
} as const;
