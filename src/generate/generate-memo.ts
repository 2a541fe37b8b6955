import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { writeCacheFileSync } from '../util/fs.js';
import { checkRelativePath } from '../util/names.js';

// What `generate` last wrote (`.falco-probes/cache/generate.memo`, local
// state): every generated file's path, size and sha256, under a key of the
// graph's inputs (graph-cache.ts graphCacheKey: lockfiles, definitions,
// drivers.yaml, driver identities, the tool's code) and of the published
// record that pins Please's hashes. When the key is the same and every file
// on disk still has the recorded size and sha256 (each file is read and
// hashed: nothing about it is trusted from the memo), rendering again would
// give the same bytes, so `generate` renders and writes nothing.
//
// Format 1: `falco-probes generate memo 1`, `key <sha256>`,
// `files <count> <length> <sha256 of the section>`, an empty line, then one
// line per file `<path> <size> <sha256>`. A memo that does not read back
// whole (its section's sha256) is a miss.

const FORMAT = 1;

export const generateMemoPath = (root: string) => resolvePath(root, '.falco-probes', 'cache', 'generate.memo');

export interface GeneratedFile {
  path: string;
  size: number;
  sha256: string;
}

/** The memo key: the graph's inputs and the published hashes the BUILD files pin. */
export function generateMemoKey(graphKey: string, published: ReadonlyMap<string, { file: string; sha256: string }>): string {
  const h = createHash('sha256').update(`falco-probes generate ${FORMAT}\n${graphKey}\n`);
  for (const [key, p] of [...published].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) h.update(`${key} ${p.file} ${p.sha256}\n`);
  return h.digest('hex');
}

const HEADER_RE = /^falco-probes generate memo 1\nkey ([0-9a-f]{64})\nfiles (\d{1,9}) (\d{1,12}) ([0-9a-f]{64})\n\n/;
const LINE_RE = /^(\S+) (0|[1-9][0-9]{0,15}) ([0-9a-f]{64})$/;

/** The files the memo records for `key`, or undefined (no memo, another key, or not read back whole). */
export function readGenerateMemo(root: string, key: string): GeneratedFile[] | undefined {
  let text: string;
  try {
    text = readFileSync(generateMemoPath(root), 'utf8');
  } catch {
    return undefined;
  }
  const m = HEADER_RE.exec(text);
  if (!m || m[1] !== key) return undefined;
  const section = text.slice(m[0].length);
  if (Buffer.byteLength(section) !== Number(m[3]) || createHash('sha256').update(section).digest('hex') !== m[4]) return undefined;
  const files: GeneratedFile[] = [];
  for (const line of section.split('\n').slice(0, -1)) {
    const f = LINE_RE.exec(line);
    if (!f) return undefined;
    try {
      checkRelativePath(f[1]!);
    } catch {
      return undefined;
    }
    files.push({ path: f[1]!, size: Number(f[2]), sha256: f[3]! });
  }
  return files.length === Number(m[2]) ? files : undefined;
}

/** Whether every file still has its recorded size and sha256 (each is read and hashed). */
export async function stillWritten(root: string, files: readonly GeneratedFile[]): Promise<boolean> {
  for (const f of files) {
    let fh;
    try {
      fh = await open(join(root, f.path), 'r');
    } catch {
      return false;
    }
    try {
      const st = await fh.stat();
      if (!st.isFile() || st.size !== f.size) return false;
      const bytes = Buffer.allocUnsafe(f.size);
      let at = 0;
      while (at < f.size) {
        const { bytesRead } = await fh.read(bytes, at, f.size - at, at);
        if (bytesRead === 0) return false;
        at += bytesRead;
      }
      if (createHash('sha256').update(bytes).digest('hex') !== f.sha256) return false;
    } finally {
      await fh.close();
    }
  }
  return true;
}

/** Remember what was written for `key`. Not written is not an error: the next run renders again. */
export async function writeGenerateMemo(root: string, key: string, files: readonly GeneratedFile[]): Promise<void> {
  const section = files.map((f) => `${checkRelativePath(f.path)} ${f.size} ${f.sha256}\n`).join('');
  const text = `falco-probes generate memo ${FORMAT}\nkey ${key}\nfiles ${files.length} ${Buffer.byteLength(section)} ${createHash('sha256').update(section).digest('hex')}\n\n${section}`;
  try {
    // Its section's sha256 is checked when read: no fsync (writeCacheFileSync).
    writeCacheFileSync(generateMemoPath(root), text);
  } catch {
    // a cache
  }
}
