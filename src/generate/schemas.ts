import { sourceDefinitionSchema } from '../config/schema/source-definition.js';
import { lockfileSchema } from '../lockfile/schema.js';
import { driversSchema } from '../config/schema/drivers.js';

// generated/*.schema.json: the JSON Schemas the loaders validate with, for
// editors (the YAML files name them in a `yaml-language-server` comment).

const SCHEMAS: readonly { $id: string }[] = [sourceDefinitionSchema, lockfileSchema, driversSchema];

/** File name (under generated/) to text. */
export function renderSchemas(): Map<string, string> {
  const files = new Map<string, string>();
  for (const schema of SCHEMAS) {
    const name = schema.$id.slice(schema.$id.lastIndexOf('/') + 1);
    files.set(name, `${JSON.stringify({ $schema: 'http://json-schema.org/draft-07/schema#', ...schema }, null, 2)}\n`);
  }
  return files;
}
