import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync, type BigIntStats } from 'node:fs';
import { join, resolve } from 'node:path';
import { SHA256_RE } from '../util/names.js';

// A repository's memo (local state of the project that builds into it, kept
// in its `.falco-probes/cache/`, never in the repository, which is
// published): what index.json says in a form read without parsing it, and,
// per published file, git's answer to "is it unchanged?" (a stat memo, as
// git's index keeps one for the work tree).
//
// A published file's sha256 is recorded with the (device, inode, size,
// mtime_ns, ctime_ns) it had when it was read and found to hold the index's
// bytes (its stat taken on the open file before reading it). A later run
// that finds the same five values takes the recorded sha256 without reading
// the file, unless the entry is racy: git's rule, an entry whose mtime (or
// ctime) is not older than the memo's own modification time may have
// changed in the same clock tick after it was read, so it is read again. A
// file changed with its size and mtime put back still has a new ctime,
// which no user can set, so it is read again. `build --verify-all` reads
// every file. index.json itself is recorded the same way; when its stat
// differs its bytes are hashed, and only when the hash differs too is it
// parsed again.
//
// Format 1, line-oriented:
//
//   falco-probes repository memo 1
//   index <sha256 of index.json> <stat of index.json, or "-">
//   files <count> <length> <sha256 of the section>
//   <empty line>
//   <one line per index entry, sorted by file: file key sha256 size [stat]>
//
// where a stat is `dev ino size mtime_ns ctime_ns` in decimal. The section's
// sha256 is checked before it is parsed: a damaged memo is a miss (every
// file is read again, and the memo is rewritten), never trusted.

/** The memo of the repository at `repositoryRoot`, under a project's state directory (`.falco-probes`). */
export function repositoryMemoPath(stateDir: string, repositoryRoot: string): string {
  return join(stateDir, 'cache', `repository-${createHash('sha256').update(resolve(repositoryRoot)).digest('hex').slice(0, 16)}.memo`);
}
const MAGIC = 'falco-probes repository memo 1\n';

/** What the memo says of one published file, and what planning needs of its index entry. */
export interface MemoEntry {
  file: string;
  key: string;
  sha256: string;
  size: number;
  /** The file's stat when it was found to hold `sha256`, or undefined (read it). */
  stat?: string;
}

export interface RepositoryMemo {
  /** sha256 of index.json whose entries `entries` are. */
  indexSha256: string;
  /** index.json's stat when it had that sha256, or undefined. */
  indexStat?: string;
  entries: Map<string, MemoEntry>;
  /** The memo file's own mtime in nanoseconds: the racy boundary. */
  writtenNs: bigint;
}

/** The five values of a stat that say a file is unchanged, as the memo writes them. */
export function statKey(st: BigIntStats): string {
  return `${st.dev} ${st.ino} ${st.size} ${st.mtimeNs} ${st.ctimeNs}`;
}

/** git's racy rule: an entry whose times are not older than the memo's writing is read again. */
export function isRacy(st: BigIntStats, writtenNs: bigint): boolean {
  return st.mtimeNs >= writtenNs || st.ctimeNs >= writtenNs;
}

const HEADER_RE =
  /^falco-probes repository memo 1\nindex ([0-9a-f]{64}) (-|\d{1,20} \d{1,20} \d{1,20} \d{1,20} \d{1,20})\nfiles (\d{1,12}) (\d{1,12}) ([0-9a-f]{64})\n\n/;
const STAT_RE = /^\d{1,20} \d{1,20} \d{1,20} \d{1,20} \d{1,20}$/;
const SIZE_RE = /^(0|[1-9][0-9]{0,15})$/;

/** The memo at `file`, or undefined when there is none or it does not read back whole. */
export function readRepositoryMemo(file: string): RepositoryMemo | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return undefined;
  }
  let bytes: Buffer;
  let writtenNs: bigint;
  try {
    const st = fstatSync(fd, { bigint: true });
    if (!st.isFile() || st.size > 1n << 32n) return undefined;
    writtenNs = st.mtimeNs;
    bytes = Buffer.allocUnsafe(Number(st.size));
    let at = 0;
    while (at < bytes.length) {
      const n = readSync(fd, bytes, at, bytes.length - at, at);
      if (n === 0) return undefined;
      at += n;
    }
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
  const m = HEADER_RE.exec(bytes.toString('latin1', 0, Math.min(bytes.length, 400)));
  if (!m) return undefined;
  const start = m[0].length;
  const length = Number(m[4]);
  if (start + length !== bytes.length) return undefined;
  const section = bytes.subarray(start);
  if (createHash('sha256').update(section).digest('hex') !== m[5]) return undefined;
  const entries = new Map<string, MemoEntry>();
  const text = section.toString('utf8');
  let at = 0;
  while (at < text.length) {
    const end = text.indexOf('\n', at);
    if (end < 0) return undefined;
    const line = text.slice(at, end);
    at = end + 1;
    // file key sha256 size [dev ino size mtime ctime]
    const s1 = line.indexOf(' ');
    const s2 = s1 + 65;
    const s3 = s2 + 65;
    if (s1 <= 0 || line.charCodeAt(s2) !== 32 || line.charCodeAt(s3) !== 32) return undefined;
    const s4 = line.indexOf(' ', s3 + 1);
    const file = line.slice(0, s1);
    const key = line.slice(s1 + 1, s2);
    const sha256 = line.slice(s2 + 1, s3);
    const sizeText = s4 < 0 ? line.slice(s3 + 1) : line.slice(s3 + 1, s4);
    const stat = s4 < 0 ? undefined : line.slice(s4 + 1);
    if (
      !SHA256_RE.test(key) ||
      !SHA256_RE.test(sha256) ||
      !SIZE_RE.test(sizeText) ||
      (stat !== undefined && !STAT_RE.test(stat)) ||
      entries.has(file)
    )
      return undefined;
    entries.set(
      file,
      stat === undefined ? { file, key, sha256, size: Number(sizeText) } : { file, key, sha256, size: Number(sizeText), stat },
    );
  }
  if (entries.size !== Number(m[3])) return undefined;
  return { indexSha256: m[1]!, ...(m[2] !== '-' ? { indexStat: m[2]! } : {}), entries, writtenNs };
}

/** The memo's bytes. */
export function serializeRepositoryMemo(memo: { indexSha256: string; indexStat?: string; entries: Iterable<MemoEntry> }): string {
  const list = [...memo.entries].sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  const lines = list.map((e) => {
    // Names with spaces or newlines never reach the index (its paths are checked); refuse them here all the same.
    if (/[\s]/.test(e.file)) throw new Error(`cannot record ${JSON.stringify(e.file)}`);
    return `${e.file} ${e.key} ${e.sha256} ${e.size}${e.stat !== undefined ? ` ${e.stat}` : ''}\n`;
  });
  const section = lines.join('');
  const sha = createHash('sha256').update(section).digest('hex');
  return `${MAGIC}index ${memo.indexSha256} ${memo.indexStat ?? '-'}\nfiles ${list.length} ${Buffer.byteLength(section)} ${sha}\n\n${section}`;
}
