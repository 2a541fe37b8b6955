import { identSchema, sha256Schema, urlSchema } from './common.js';

export const DRIVERS_SCHEMA_ID = 'https://falco-probes.invalid/schemas/drivers.schema.json';

/** A kernel release bound: x.y or x.y.z. */
const releaseBound = { type: 'string', pattern: '^[0-9]+\\.[0-9]+(\\.[0-9]+)?$' } as const;
/** A relative path inside this repository or a driver source: letters, digits and . _ + ~ - segments. */
const relativeDir = { type: 'string', pattern: '^(\\.|[A-Za-z0-9_+~-][A-Za-z0-9._+~-]*(/[A-Za-z0-9_+~-][A-Za-z0-9._+~-]*)*)$', maxLength: 512 } as const;
/**
 * The toolchain: the first line of `clang --version`, whitespace folded
 * (`Debian clang version 14.0.6`: the vendor matters, vendors patch clang),
 * or a bare version number (`14.0.6`) that any vendor's clang of that
 * version satisfies.
 */
const clangVersion = {
  type: 'string',
  pattern: '^([0-9]+(\\.[0-9]+){0,3}|[A-Za-z0-9][A-Za-z0-9 ._+~()-]{0,99}clang version [0-9]+(\\.[0-9]+){0,3}[A-Za-z0-9 ._+~()-]{0,100})$',
} as const;

const sourceSchema = {
  oneOf: [
    {
      type: 'object',
      additionalProperties: false,
      required: ['url'],
      properties: {
        url: urlSchema,
        sha256: sha256Schema,
        strip: { type: 'integer', minimum: 0, maximum: 8 },
      },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: ['path'],
      properties: { path: relativeDir },
    },
  ],
} as const;

export const driverSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'version', 'source', 'recipe', 'bpfDir', 'kinds', 'object'],
  properties: {
    name: identSchema,
    // The repository's first path level, a Make path and a BUILD string: no `/`, `%`, `:` or spaces.
    version: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$' },
    source: sourceSchema,
    recipe: { type: 'string', enum: ['kbuild', 'falco-libs'] },
    bpfDir: relativeDir,
    kinds: { type: 'array', minItems: 1, uniqueItems: true, items: { type: 'string', enum: ['bpf', 'kmod'] } },
    kernels: {
      type: 'object',
      additionalProperties: false,
      properties: { min: releaseBound, max: releaseBound },
    },
    object: { type: 'string', pattern: '^[A-Za-z0-9_][A-Za-z0-9._+-]{0,99}\\.o$' },
  },
} as const;

export const builderPinSchema = {
  oneOf: [
    {
      type: 'object',
      additionalProperties: false,
      required: ['kind', 'clang'],
      properties: { kind: { const: 'host' }, clang: clangVersion },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: ['kind', 'image', 'clang'],
      properties: {
        kind: { const: 'docker' },
        image: { type: 'string', pattern: '^sha256:[0-9a-f]{64}$' },
        clang: clangVersion,
      },
    },
  ],
} as const;

export const driversSchema = {
  $id: DRIVERS_SCHEMA_ID,
  title: 'falco-probes driver and builder pins (kernels/drivers.yaml)',
  type: 'object',
  additionalProperties: false,
  required: ['builder', 'drivers'],
  properties: {
    builder: builderPinSchema,
    drivers: { type: 'array', items: driverSchema },
  },
} as const;
