// JSON Schema fragments shared by the source definition, lockfile and pin schemas.

export const identSchema = { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$' } as const;
export const sha256Schema = { type: 'string', pattern: '^[0-9a-f]{64}$' } as const;
export const archSchema = { type: 'string', enum: ['x86_64', 'aarch64'] } as const;
// `$basearch` is the one yum variable a URL may hold (substituted with the architecture by the yum resolver).
export const urlSchema = { type: 'string', pattern: '^(https?|file)://(?:[^\\s"\'`$\\\\]|\\$basearch)+$' } as const;
export const osReleaseSchema = {
  type: 'object',
  propertyNames: { pattern: '^[A-Z][A-Z0-9_]{0,63}$' },
  additionalProperties: { type: 'string', pattern: '^[A-Za-z0-9 ._:+~(),/@=-]{0,200}$' },
  required: ['ID'],
} as const;
/** A template string: placeholders are `{name}`; no shell or quoting metacharacters. */
export const templateSchema = { type: 'string', pattern: '^[A-Za-z0-9 #._:+~(),/{}-]{1,255}$' } as const;
export const regexSchema = { type: 'string', minLength: 1, maxLength: 1000 } as const;
