import { readFile } from 'node:fs/promises';
import { FalcoProbesError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { checkRelativePath, SHA256_RE } from '../util/names.js';
import type { RepositoryIndex } from './types.js';

// kernels/published.json: the sha256 of every artifact published for a key,
// checked in. `generate` pins Please rules with `hashes` from this record
// only, never from a repository it happens to find, so the generated files
// are a function of checked-in files alone: the same on a fresh clone, after
// `npm start`, and in CI. `publish --record FILE` adds what it published; a
// reviewer sees each new sha256 as one line of the PR's diff.

export const PUBLISHED_RECORD = 'kernels/published.json';
const FORMAT = 1;

export type PublishedRecord = Map<string, { file: string; sha256: string }>;

interface Stored {
  version: number;
  artifacts: Record<string, { file: string; sha256: string }>;
}

const KEY_RE = /^[0-9a-f]{64}$/;

/** The record, or an empty one when the file does not exist. Anything malformed is an error naming the file. */
export async function readPublishedRecord(file: string): Promise<PublishedRecord> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
    throw err;
  }
  const bad = (why: string) =>
    new FalcoProbesError('config', `not a record of published artifacts: ${why}`, {
      location: { file },
      hint: 'it is written by falco-probes publish --record; restore it from version control',
    });
  let stored: Stored;
  try {
    stored = JSON.parse(text) as Stored;
  } catch (err) {
    throw bad((err as Error).message);
  }
  if (stored?.version !== FORMAT || typeof stored.artifacts !== 'object' || stored.artifacts === null)
    throw bad(`expected {"version":${FORMAT},"artifacts":{...}}`);
  const out: PublishedRecord = new Map();
  for (const [key, entry] of Object.entries(stored.artifacts)) {
    if (!KEY_RE.test(key) || typeof entry?.file !== 'string' || typeof entry.sha256 !== 'string' || !SHA256_RE.test(entry.sha256))
      throw bad(`entry ${JSON.stringify(key)}`);
    try {
      checkRelativePath(entry.file);
    } catch {
      throw bad(`entry ${key}: unsafe file ${JSON.stringify(entry.file)}`);
    }
    out.set(key, { file: entry.file, sha256: entry.sha256 });
  }
  return out;
}

/** One line per artifact, sorted by key: stable bytes, one-line diffs. */
export function renderPublishedRecord(record: PublishedRecord): string {
  const keys = [...record.keys()].sort();
  const lines = keys.map((k) => `    ${JSON.stringify(k)}: ${JSON.stringify(record.get(k))}`);
  return `{\n  "version": ${FORMAT},\n  "artifacts": {${lines.length ? `\n${lines.join(',\n')}\n  ` : ''}}\n}\n`;
}

/** Add every entry of a published index to the record file (atomically); returns how many were new. */
export async function recordPublished(file: string, index: RepositoryIndex): Promise<number> {
  const record = await readPublishedRecord(file);
  let added = 0;
  for (const p of index.probes) {
    const have = record.get(p.key);
    if (have && have.file === p.file && have.sha256 === p.sha256) continue;
    record.set(p.key, { file: p.file, sha256: p.sha256 });
    added++;
  }
  if (added > 0) await writeFileAtomic(file, renderPublishedRecord(record));
  return added;
}
