import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ValidateFunction } from 'ajv';
import { FalcoProbesError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { checkRelativePath } from '../util/names.js';
import { parseYamlText } from '../config/yaml-load.js';
import { lazyAjv, lazyYaml } from '../util/lazy-require.js';
import { isValid, UnsupportedSchema } from '../util/json-schema-lite.js';
import { INDEX_FILE, INDEX_VERSION, SUMS_FILE, type ProbeEntry, type RepositoryIndex } from './types.js';

// index.json and SHA256SUMS: read, validate, serialize, write. Both are
// written atomically (temporary file, then rename), index last-but-one and
// SHA256SUMS last, so a reader always finds two complete files; a kill
// between the two renames leaves SHA256SUMS one probe behind, which the next
// write repairs (the index is the source of truth).

const sha256 = { type: 'string', pattern: '^[0-9a-f]{64}$' } as const;
const text = { type: 'string', minLength: 1, maxLength: 255 } as const;

export const indexSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['version', 'probes'],
  properties: {
    version: { const: INDEX_VERSION },
    probes: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['file', 'key', 'sha256', 'size', 'os', 'kernel', 'driver', 'driverVersion', 'arch', 'kind'],
        properties: {
          file: { type: 'string', minLength: 1, maxLength: 1024 },
          key: sha256,
          sha256,
          size: { type: 'integer', minimum: 0 },
          os: text,
          kernel: text,
          driver: text,
          driverVersion: text,
          arch: text,
          kind: text,
          load: {
            type: 'object',
            additionalProperties: false,
            required: ['verdict', 'kernelImageSha256'],
            properties: {
              verdict: { enum: ['loaded', 'refused', 'no-boot', 'timeout', 'unknown'] },
              kernelImageSha256: sha256,
              message: { type: 'string', maxLength: 4096 },
            },
          },
        },
      },
    },
  },
} as const;

let validator: ValidateFunction | undefined;
/** The index schema: the small validator's answer when it is yes, ajv's otherwise. */
function validate(value: unknown): boolean {
  try {
    if (isValid(indexSchema, value)) return true;
  } catch (err) {
    if (!(err instanceof UnsupportedSchema)) throw err;
  }
  validator ??= new (lazyAjv())({ allErrors: false, strict: true }).compile(indexSchema);
  return validator(value);
}

export function emptyIndex(): RepositoryIndex {
  return { version: INDEX_VERSION, probes: [] };
}

/**
 * Parse and validate index.json text. The happy path is JSON.parse plus one
 * schema check (fast for 10,000 probes); only a failure pays for positions.
 */
export function parseIndexText(source: string, file: string): RepositoryIndex {
  let value: unknown;
  try {
    value = JSON.parse(source);
  } catch (err) {
    const message = (err as Error).message;
    const at = /position (\d+)/.exec(message);
    const pos = at ? lineColumn(source, Number(at[1])) : yamlErrorPosition(source);
    throw new FalcoProbesError('config', `malformed repository index: ${message.replace(/ in JSON at position \d+.*$/, '')}`, {
      location: { file, ...pos },
      hint: 'the index is rewritten after every published probe; restore it from a backup, or remove it to rebuild every probe',
    });
  }
  if (!validate(value)) {
    // YAML 1.2 is a superset of JSON: the shared loader gives the error a line and column.
    try {
      parseYamlText(source, file, indexSchema);
    } catch (err) {
      if (err instanceof FalcoProbesError) {
        throw new FalcoProbesError('config', `malformed repository index: ${err.message}`, {
          location: err.location,
          ...(err.details ? { details: err.details } : {}),
        });
      }
      throw err;
    }
    throw new FalcoProbesError('config', 'malformed repository index', { location: { file } });
  }
  const index = value as RepositoryIndex;
  const seen = new Set<string>();
  index.probes.forEach((p, i) => {
    // Positions cost a scan of the text: computed only for an entry that fails.
    const where = () => ({ file, ...(lineOfNeedle(source, `"file"`, i) ?? {}) });
    try {
      checkRelativePath(p.file);
    } catch (err) {
      throw new FalcoProbesError('config', `malformed repository index: probes[${i}].file: ${(err as Error).message}`, {
        location: where(),
      });
    }
    if (p.file === INDEX_FILE || p.file === SUMS_FILE || p.file.startsWith('.'))
      throw new FalcoProbesError('config', `malformed repository index: probes[${i}].file names a reserved file "${p.file}"`, {
        location: where(),
      });
    if (seen.has(p.file))
      throw new FalcoProbesError('config', `malformed repository index: "${p.file}" is listed twice`, { location: where() });
    seen.add(p.file);
  });
  return index;
}

/** Node 20's JSON.parse does not always say where; the YAML parser (a JSON superset) usually can. */
function yamlErrorPosition(source: string): { line: number; column: number } | Record<string, never> {
  const { LineCounter, parseDocument } = lazyYaml();
  const lineCounter = new LineCounter();
  const doc = parseDocument(source, { lineCounter, prettyErrors: false });
  const first = doc.errors[0];
  if (!first) return {};
  const p = lineCounter.linePos(first.pos[0]);
  return { line: p.line, column: p.col };
}

function lineColumn(source: string, offset: number): { line: number; column: number } {
  let line = 1;
  let last = -1;
  for (let i = 0; i < offset && i < source.length; i++) {
    if (source.charCodeAt(i) === 10) {
      line++;
      last = i;
    }
  }
  return { line, column: offset - last };
}

/** The position of the n-th occurrence of `needle` (index.json is written one key per line, so this finds probes[n]). */
function lineOfNeedle(source: string, needle: string, n: number): { line: number; column: number } | undefined {
  let at = -1;
  for (let i = 0; i <= n; i++) {
    at = source.indexOf(needle, at + 1);
    if (at < 0) return undefined;
  }
  return lineColumn(source, at);
}

/** Read `<root>/index.json`; a missing file is an empty repository. */
export async function readIndex(root: string): Promise<RepositoryIndex> {
  const file = join(root, INDEX_FILE);
  let source: string;
  try {
    source = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyIndex();
    throw new FalcoProbesError('config', `cannot read the repository index: ${(err as Error).message}`, { location: { file } });
  }
  return parseIndexText(source, file);
}

function orderedEntry(p: ProbeEntry): ProbeEntry {
  return {
    file: p.file,
    key: p.key,
    sha256: p.sha256,
    size: p.size,
    os: p.os,
    kernel: p.kernel,
    driver: p.driver,
    driverVersion: p.driverVersion,
    arch: p.arch,
    kind: p.kind,
    ...(p.load !== undefined ? { load: p.load } : {}),
  };
}

function byFile(a: ProbeEntry, b: ProbeEntry): number {
  return a.file < b.file ? -1 : a.file > b.file ? 1 : 0;
}

/** Stable text: probes sorted by file, fixed key order, one entry per line group. */
export function serializeIndex(index: RepositoryIndex): string {
  const probes = [...index.probes].sort(byFile).map(orderedEntry);
  return `${JSON.stringify({ version: INDEX_VERSION, probes }, null, 2)}\n`;
}

/** `<sha256>  <file>` per probe, as `sha256sum -c` reads it. */
export function serializeSums(index: RepositoryIndex): string {
  return [...index.probes]
    .sort(byFile)
    .map((p) => `${p.sha256}  ${p.file}\n`)
    .join('');
}

export async function writeIndex(root: string, index: RepositoryIndex): Promise<void> {
  await writeFileAtomic(join(root, INDEX_FILE), serializeIndex(index));
  await writeFileAtomic(join(root, SUMS_FILE), serializeSums(index));
}
