/** The `cos:` section of a source definition (filled in by the COS resolver). */
export const cosSelectionSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {},
} as const;
