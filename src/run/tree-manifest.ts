import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/fs.js';

// What an unpacked package tree or a composed kernel root held when it was
// made: every file's size, modification time and sha256, every link's
// target. Written (atomically) before the tree is renamed into place, kept
// beside it, never inside it. Two checks against it:
// - stat-level (every use, once per process): the same paths, types, sizes,
//   modification times and link targets; one lstat per entry, no reads. An
//   edit through the file system moves the modification time, a deleted or
//   added file changes the set.
// - full (when a build from the tree failed): every file's sha256 besides.
// A tree that fails either is removed and made again by its owner.

export const MANIFEST_FORMAT = 'falco-probes-manifest-v1';

/** [path, 'f', size, mtimeMs, sha256, executable] or [path, 'l', link target]. */
export type ManifestEntry = [string, 'f', number, number, string, boolean] | [string, 'l', string];

export interface Manifest {
  format: string;
  files: number;
  bytes: number;
  entries: ManifestEntry[];
}

function walk(dir: string, rel: string, visit: (rel: string, abs: string, kind: 'f' | 'l' | 'other') => void): void {
  for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) walk(dir, r, visit);
    else visit(r, join(dir, r), e.isFile() ? 'f' : e.isSymbolicLink() ? 'l' : 'other');
  }
}

const byPath = (a: ManifestEntry, b: ManifestEntry) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);

/** The manifest of a tree, hashing every file (synchronous reads: header files are small and many). */
export function manifestOf(dir: string): Manifest {
  const entries: ManifestEntry[] = [];
  let bytes = 0;
  walk(dir, '', (rel, abs, kind) => {
    if (kind === 'l') entries.push([rel, 'l', readlinkSync(abs)]);
    else if (kind === 'f') {
      const st = lstatSync(abs);
      const sha256 = createHash('sha256').update(readFileSync(abs)).digest('hex');
      entries.push([rel, 'f', st.size, st.mtimeMs, sha256, (st.mode & 0o111) !== 0]);
      bytes += st.size;
    } else throw new Error(`${abs} is not a file, folder or link`);
  });
  entries.sort(byPath);
  return { format: MANIFEST_FORMAT, files: entries.filter((e) => e[1] === 'f').length, bytes, entries };
}

export async function writeManifest(file: string, manifest: Manifest): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(manifest));
}

/** The manifest in `file`, or undefined when it is missing or not one. */
export async function readManifest(file: string): Promise<Manifest | undefined> {
  try {
    const m = JSON.parse(await readFile(file, 'utf8')) as Manifest;
    return m.format === MANIFEST_FORMAT && Array.isArray(m.entries) ? m : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Compare `dir` with its manifest: undefined when it matches, else the first
 * difference (a path and what differs). `full` also hashes every file.
 */
export function checkTree(dir: string, manifest: Manifest, full: boolean): string | undefined {
  const expected = new Map(manifest.entries.map((e) => [e[0], e]));
  let problem: string | undefined;
  let seen = 0;
  try {
    walk(dir, '', (rel, abs, kind) => {
      if (problem) return;
      const want = expected.get(rel);
      if (!want) return void (problem = `${rel}: not in its manifest`);
      seen++;
      if (kind !== want[1])
        return void (problem = `${rel}: a ${kind === 'f' ? 'file' : kind === 'l' ? 'link' : 'special file'}, made as a ${want[1] === 'f' ? 'file' : 'link'}`);
      if (want[1] === 'l') {
        if (readlinkSync(abs) !== want[2]) problem = `${rel}: the link leads elsewhere`;
        return;
      }
      const st = lstatSync(abs);
      if (st.size !== want[2]) return void (problem = `${rel}: ${st.size} bytes, made with ${want[2]}`);
      if (st.mtimeMs !== want[3]) return void (problem = `${rel}: modified since it was made`);
      if (full && createHash('sha256').update(readFileSync(abs)).digest('hex') !== want[4])
        problem = `${rel}: its sha256 differs from the one it was made with`;
    });
  } catch (err) {
    return `cannot read it (${(err as Error).message})`;
  }
  if (problem) return problem;
  if (seen !== expected.size) {
    const missing = manifest.entries.find((e) => {
      try {
        lstatSync(join(dir, e[0]));
        return false;
      } catch {
        return true;
      }
    });
    return `${missing?.[0] ?? `${expected.size - seen} entries`}: missing`;
  }
  return undefined;
}
