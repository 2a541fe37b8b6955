import { closeSync, mkdirSync, openSync, readdirSync, rmSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { KEY_STAMP_DIR } from './makefile.js';
import type { Target } from '../graph/types.js';

// The Makefile's key stamps (.falco-probes/keys/<key>, see makefile.ts):
// local state, never published. A build recipe creates its probe's stamp;
// `generate` only tidies them:
//   - it removes the stamps of keys no target has any more, so that a key
//     which comes back later (a reverted lockfile) is rebuilt instead of
//     matching a probe that was since rebuilt for another key;
//   - it creates, dated 1970 (older than any probe), the missing stamp of a
//     target whose probe the local repository already holds for that key,
//     so a fresh checkout with a restored repository rebuilds nothing.
// In the steady state this is one directory listing: no file is read or
// written, whatever the number of targets.

export interface StampSummary {
  /** Stamps created for probes the repository already holds. */
  created: number;
  /** Stamps of keys no target has. */
  removed: number;
  /** Stamps in place for current keys. */
  kept: number;
}

export function syncKeyStamps(root: string, targets: readonly Target[], publishedFor: (t: Target) => boolean): StampSummary {
  const dir = join(root, KEY_STAMP_DIR);
  let present: string[];
  try {
    present = readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    present = [];
  }
  const wanted = new Set(targets.map((t) => t.key));
  const have = new Set<string>();
  const summary: StampSummary = { created: 0, removed: 0, kept: 0 };
  for (const name of present) {
    if (wanted.has(name)) {
      have.add(name);
      summary.kept++;
    } else {
      rmSync(join(dir, name), { force: true, recursive: true });
      summary.removed++;
    }
  }
  for (const t of targets) {
    if (have.has(t.key) || !publishedFor(t)) continue;
    if (summary.created === 0) mkdirSync(dir, { recursive: true });
    const file = join(dir, t.key);
    closeSync(openSync(file, 'w'));
    utimesSync(file, 0, 0);
    have.add(t.key);
    summary.created++;
  }
  return summary;
}
