import type { KeyObject } from 'node:crypto';
import pLimit from 'p-limit';
import { errorMessage } from '../util/errors.js';
import { legacyPathOf } from './falco-url.js';
import { requireIndex, type RepositorySource } from './remote.js';
import { parseSignatureFile, verifyRepositorySignature } from './signature.js';
import { parseSums } from './sums.js';
import { INDEX_FILE, SIGNATURE_FILE, SUMS_FILE } from './types.js';

// Verify a repository (a directory or a URL) the way a careful client would:
// the signature over index.json and SHA256SUMS, SHA256SUMS against the index,
// and every listed file's size and sha256 against both. Every finding names
// the file (its path or URL); all files are checked, not only up to the first
// failure. A malformed index throws (nothing else can be checked without it).

export interface VerifyOptions {
  /** When given, the repository must carry a valid signature by this key. */
  publicKey?: KeyObject;
  /** Files hashed at once (HTTP requests or disk reads). */
  concurrency?: number;
}

export interface VerifyReport {
  problems: string[];
  warnings: string[];
  /** Files whose bytes were checked. */
  filesChecked: number;
  bytesChecked: number;
  signature: 'verified' | 'not-checked' | 'absent' | 'failed';
}

/** A probe-like file (not the metadata, nor a site's own files such as CNAME or index.html, nor hidden ones). */
function looksLikeProbe(path: string): boolean {
  return /\.k?o$/.test(path) && !path.split('/').some((s) => s.startsWith('.'));
}

export async function verifyRepository(source: RepositorySource, options: VerifyOptions = {}): Promise<VerifyReport> {
  const report: VerifyReport = { problems: [], warnings: [], filesChecked: 0, bytesChecked: 0, signature: 'not-checked' };
  const problem = (where: string, what: string) => report.problems.push(`${where}: ${what}`);
  const { index, bytes: indexBytes } = await requireIndex(source);

  const sumsBytes = await source.readSmall(SUMS_FILE);
  let sums: Map<string, string> | undefined;
  if (!sumsBytes) problem(source.where(SUMS_FILE), 'missing');
  else {
    try {
      sums = parseSums(sumsBytes.toString('utf8'), source.where(SUMS_FILE));
    } catch (err) {
      report.problems.push(errorMessage(err));
    }
  }

  const sigBytes = await source.readSmall(SIGNATURE_FILE);
  if (options.publicKey) {
    if (!sigBytes) {
      report.signature = 'absent';
      problem(source.where(SIGNATURE_FILE), 'missing: the repository is not signed, but --public-key asks for a signature');
    } else if (!sumsBytes) {
      report.signature = 'failed';
      problem(source.where(SIGNATURE_FILE), `cannot be checked without ${SUMS_FILE}`);
    } else {
      try {
        verifyRepositorySignature(
          parseSignatureFile(sigBytes.toString('utf8'), source.where(SIGNATURE_FILE)),
          options.publicKey,
          indexBytes,
          sumsBytes,
          source.where(SIGNATURE_FILE),
        );
        report.signature = 'verified';
      } catch (err) {
        report.signature = 'failed';
        report.problems.push(errorMessage(err));
      }
    }
  } else {
    report.signature = sigBytes ? 'not-checked' : 'absent';
    report.warnings.push(
      sigBytes
        ? `${source.where(SIGNATURE_FILE)}: signature not checked (pass --public-key)`
        : `${source.where(INDEX_FILE)}: the repository is not signed`,
    );
  }

  // What must be downloadable: every indexed probe, plus the no-arch copies SHA256SUMS lists.
  const expected = new Map<string, { sha256: string; size: number }>();
  const aliases = new Map<string, string>();
  for (const p of index.probes) {
    expected.set(p.file, { sha256: p.sha256, size: p.size });
    const legacy = legacyPathOf(p);
    if (legacy !== undefined) aliases.set(legacy, p.file);
  }
  if (sums) {
    for (const p of index.probes) {
      const listed = sums.get(p.file);
      if (listed === undefined) problem(source.where(SUMS_FILE), `does not list ${p.file}, which the index has`);
      else if (listed !== p.sha256) problem(source.where(SUMS_FILE), `lists ${p.file} with sha256 ${listed}, the index says ${p.sha256}`);
    }
    for (const [path, sha256] of sums) {
      if (expected.has(path)) continue;
      const of = aliases.get(path);
      const primary = of !== undefined ? index.probes.find((p) => p.file === of) : undefined;
      if (!primary) problem(source.where(SUMS_FILE), `lists ${path}, which the index does not know`);
      else if (primary.sha256 !== sha256)
        problem(
          source.where(SUMS_FILE),
          `lists ${path} with sha256 ${sha256}, but it is the no-arch copy of ${of} (sha256 ${primary.sha256})`,
        );
      else expected.set(path, { sha256, size: primary.size });
    }
  }

  const limit = pLimit(options.concurrency ?? (source.kind === 'http' ? 8 : 4));
  const files = [...expected].sort(([a], [b]) => (a < b ? -1 : 1));
  const results = await Promise.all(
    files.map(([path, want]) =>
      limit(async () => {
        try {
          return { path, want, got: await source.hashFile(path, want.size + 1) };
        } catch (err) {
          return { path, want, error: errorMessage(err) };
        }
      }),
    ),
  );
  for (const r of results) {
    const where = source.where(r.path);
    if ('error' in r) {
      problem(where, `cannot be read: ${r.error}`);
      continue;
    }
    if (!r.got) {
      problem(where, 'missing (the index lists it)');
      continue;
    }
    report.filesChecked++;
    report.bytesChecked += r.got.size;
    if (r.got.size !== r.want.size) problem(where, `${r.got.size} bytes, the index says ${r.want.size}`);
    else if (r.got.sha256 !== r.want.sha256)
      problem(where, `sha256 ${r.got.sha256} differs from the index's ${r.want.sha256}: the file was altered or damaged`);
  }

  if (source.listFiles) {
    for (const path of await source.listFiles()) {
      if (!expected.has(path) && looksLikeProbe(path))
        report.warnings.push(`${source.where(path)}: not in the index (an unpublished or stray file)`);
    }
  }
  return report;
}
