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
          // A regular expression on the package's Filename (its pool path): the rule applies only
          // to packages from matching folders (Ubuntu's pool/main/l/linux-aws/); named groups are placeholders.
          filename: regexSchema,
          targetId: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$' },
          // This flavour's `uname -v` template, when it differs from apt.unameVersion (an RT kernel says PREEMPT_RT).
          unameVersion: templateSchema,
          kernelVersion: templateSchema,
        },
      },
    },
    follow: { type: 'array', items: regexSchema },
    // followRoles[i] is the lockfile role of a package found through follow[i] (default `common`).
    followRoles: { type: 'array', items: { type: 'string', pattern: '^[a-z][a-z0-9-]{0,31}$' } },
    unameVersion: templateSchema,
    kernelVersion: templateSchema,
    // The release the legacy falco-driver-loader script names the probe with, when it is not uname -r (Debian).
    legacyRelease: templateSchema,
    versionPattern: regexSchema,
    // Each entry names one image package; `a | b` are alternatives, the first present is used.
    image: { type: 'array', items: { type: 'string', pattern: '^[A-Za-z0-9 ._+~{}|-]{1,255}$' } },
  },
} as const;
