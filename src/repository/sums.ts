import { FalcoProbesError } from '../util/errors.js';
import { checkRelativePath } from '../util/names.js';
import { legacyPathOf } from './falco-url.js';
import type { RepositoryIndex } from './types.js';

// SHA256SUMS of a published repository: one `<sha256>  <path>` line per file
// a client may download, sorted by path, as `sha256sum -c` reads it. It lists
// every indexed probe and, where the repository keeps them, the legacy no-arch
// copies of x86_64 probes (which the index does not list: one entry per
// target). A local repository's SHA256SUMS (index-file.ts) is the same without
// the copies.

export interface SumLine {
  path: string;
  sha256: string;
}

/** Every downloadable file of a published repository with its sha256; legacy copies when `legacyLayout`. */
export function publishedFiles(index: RepositoryIndex, legacyLayout: boolean): SumLine[] {
  const lines: SumLine[] = [];
  for (const p of index.probes) {
    lines.push({ path: p.file, sha256: p.sha256 });
    const legacy = legacyLayout ? legacyPathOf(p) : undefined;
    if (legacy !== undefined) lines.push({ path: legacy, sha256: p.sha256 });
  }
  return lines.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

export function renderSums(lines: readonly SumLine[]): string {
  return lines.map((l) => `${l.sha256}  ${l.path}\n`).join('');
}

const LINE_RE = /^([0-9a-f]{64}) [ *]([^\s].*)$/;

/** Parse SHA256SUMS strictly: the format above, safe relative paths, each path once. */
export function parseSums(text: string, where: string): Map<string, string> {
  const out = new Map<string, string>();
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((line, i) => {
    const location = /^[a-z]+:\/\//.test(where) ? { url: where } : { file: where, line: i + 1, column: 1 };
    const m = LINE_RE.exec(line);
    if (!m) throw new FalcoProbesError('config', `malformed SHA256SUMS line ${i + 1}: expected "<sha256>  <path>"`, { location });
    const path = m[2]!;
    try {
      checkRelativePath(path);
    } catch (err) {
      throw new FalcoProbesError('config', `SHA256SUMS line ${i + 1}: ${(err as Error).message}`, { location });
    }
    if (out.has(path)) throw new FalcoProbesError('config', `SHA256SUMS lists "${path}" twice (line ${i + 1})`, { location });
    out.set(path, m[1]!);
  });
  return out;
}
