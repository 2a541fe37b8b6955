import { identSchema, sha256Schema, urlSchema } from './common.js';

export const DRIVERS_SCHEMA_ID = 'https://falco-probes.invalid/schemas/drivers.schema.json';

/** A kernel release bound: x.y or x.y.z. */
const releaseBound = { type: 'string', pattern: '^[0-9]+\\.[0-9]+(\\.[0-9]+)?$' } as const;
/** A relative path inside this repository or a driver source: letters, digits and . _ + ~ - segments. */
const relativeDir = {
  type: 'string',
  pattern: '^(\\.|[A-Za-z0-9_+~-][A-Za-z0-9._+~-]*(/[A-Za-z0-9_+~-][A-Za-z0-9._+~-]*)*)$',
  maxLength: 512,
} as const;
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

/** A Debian package version (`0.23.2-6`, `1:6.1.176-1~deb12u1`). */
const debVersion = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9.+~:_-]{0,127}$' } as const;
/** A package archive's URI path, as apt's sources name it (`/debian`, `/ubuntu`). */
const aptPath = { type: 'string', pattern: '^/([A-Za-z0-9._+~-]+(/[A-Za-z0-9._+~-]+)*)?/?$', maxLength: 256 } as const;

/**
 * The kernel modules' compiler: the first line of `gcc --version`
 * (`gcc (Debian 12.2.0-14+deb12u1) 12.2.0`), which must be the compiler the
 * kernels were built with. Safe characters only: it reaches messages and
 * generated files.
 */
const gccVersion = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9 ._+~()-]{0,199}$' } as const;

const sourceSchema = {
  oneOf: [
    {
      // A tarball: pinned by the sha256 of its bytes or by the tree hash of its
      // unpacked content (after strip); neither is "unpinned" (no targets).
      type: 'object',
      additionalProperties: false,
      required: ['url'],
      properties: {
        url: urlSchema,
        sha256: sha256Schema,
        tree: sha256Schema,
        strip: { type: 'integer', minimum: 0, maximum: 8 },
      },
    },
    {
      // A package of a Debian archive, pinned like a kernel package.
      type: 'object',
      additionalProperties: false,
      required: ['deb', 'dir'],
      properties: {
        deb: {
          type: 'object',
          additionalProperties: false,
          required: ['archive', 'name', 'version', 'path', 'sha256', 'size'],
          properties: {
            archive: identSchema,
            mirrors: { type: 'array', minItems: 1, items: urlSchema },
            aptPath,
            name: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$' },
            version: debVersion,
            path: { type: 'string', pattern: '^[A-Za-z0-9_+~%-][A-Za-z0-9._+~%/-]{0,1023}$' },
            sha256: sha256Schema,
            size: { type: 'integer', minimum: 1 },
          },
        },
        dir: relativeDir,
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
  // bpfDir and object (kind bpf), kmodDir and module (kind kmod): required by kind, checked in config/drivers.ts.
  required: ['name', 'version', 'source', 'recipe', 'kinds'],
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
    kmodDir: relativeDir,
    // kbuild names a module after its object: no dots before .ko.
    module: { type: 'string', pattern: '^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}\\.ko$' },
  },
} as const;

export const builderPinSchema = {
  oneOf: [
    {
      type: 'object',
      additionalProperties: false,
      required: ['kind', 'clang'],
      properties: { kind: { const: 'host' }, clang: clangVersion, gcc: gccVersion },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: ['kind', 'image', 'clang'],
      properties: {
        kind: { const: 'docker' },
        image: { type: 'string', pattern: '^sha256:[0-9a-f]{64}$' },
        clang: clangVersion,
        gcc: gccVersion,
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
    // Builder images of other Debian releases, for kernel modules whose kernel another gcc built.
    compilerImages: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['release', 'image', 'clang', 'gcc'],
        properties: {
          release: { type: 'string', pattern: '^[a-z]{2,32}$' },
          image: { type: 'string', pattern: '^sha256:[0-9a-f]{64}$' },
          clang: clangVersion,
          gcc: gccVersion,
        },
      },
    },
    drivers: { type: 'array', items: driverSchema },
  },
} as const;
