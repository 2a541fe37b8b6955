// A fast reader for the block-style YAML that `serializeLockfile` writes.
//
// The general YAML parser takes about a second per thousand kernels, which
// would make `generate` on a large fleet slow. Lockfiles are machine
// written in a small subset: block mappings and sequences indented with
// spaces, one `key: value` per line, plain, single- or double-quoted
// scalars without escapes, `[]` and `{}`, flow sequences of plain words
// (`kinds: [bpf, kmod]`, as drivers.yaml writes them), whole-line comments. This reader
// accepts exactly that subset and returns `undefined` for anything else, so
// the caller falls back to the full parser (which also gives every error
// its line and column). Where it accepts a text it returns what the YAML
// 1.2 core schema would (test/graph-yaml-subset.test.ts compares the two).

export type YamlPath = readonly (string | number)[];
export type Position = { line: number; column: number };

export interface SubsetResult {
  value: unknown;
  /** Line and column (1-based) of the key or item at a path; only when parsed with `track`. */
  positionOf(path: YamlPath): Position | undefined;
}

/** Thrown by `subsetScalar` (and inside the reader) for text outside the subset. */
export class NotInSubset extends Error {}

const fail = (): never => {
  throw new NotInSubset();
};

// Plain scalars the core schema reads as something other than a string. An
// unsigned decimal integer is read here; the others go to the full parser.
const NON_STRING_RES = [
  /^(?:~|[Nn]ull|NULL)?$/,
  /^(?:[Tt]rue|TRUE|[Ff]alse|FALSE)$/,
  /^(?:[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$/,
  /^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$/,
  /^[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)$/,
  /^0o[0-7]+$/,
  /^[-+]?[0-9]+$/,
  /^0x[0-9a-fA-F]+$/,
];
/** The same test as the list, as one pattern (one match per scalar instead of eight: lockfiles have tens of thousands). */
const NON_STRING_RE = new RegExp(`^(?:${NON_STRING_RES.map((re) => re.source.slice(1, -1)).join('|')})$`);
const looksNonString = (t: string) => NON_STRING_RE.test(t);
/** First characters that start something other than a plain scalar (YAML indicators), and space. */
const INDICATOR = new Uint8Array(128);
for (const ch of ' -?:,[]{}#&*!|>\'"%@`') INDICATOR[ch.charCodeAt(0)] = 1;
/** First characters of every non-string plain scalar except digits: ~ . + n N t T f F. */
const MAYBE_NON_STRING = new Uint8Array(128);
for (const ch of '~.+nNtTfF') MAYBE_NON_STRING[ch.charCodeAt(0)] = 1;

/** What the subset reads a one-line scalar as (plain, quoted, `[]`, `{}`, a flow list of words); throws NotInSubset for anything else. */
export function subsetScalar(t: string): unknown {
  const c = t.charCodeAt(0);
  if (c === 34 /* " */) {
    if (t.length < 2 || t.charCodeAt(t.length - 1) !== 34) fail();
    const inner = t.slice(1, -1);
    if (inner.includes('"') || inner.includes('\\')) fail();
    return inner;
  }
  if (c === 39 /* ' */) {
    if (t.length < 2 || t.charCodeAt(t.length - 1) !== 39) fail();
    const inner = t.slice(1, -1);
    if (inner.replace(/''/g, '').includes("'")) fail();
    return inner.replace(/''/g, "'");
  }
  if (t === '[]') return [];
  if (c === 91 /* [ */) return flowWords(t);
  if (t === '{}') return {};
  const last = t.charCodeAt(t.length - 1);
  // `: ` and ` #` both hold a space, which most values do not: one scan for those.
  if (c >= 128 || INDICATOR[c] || last === 32 || last === 58 /* : */ || (t.includes(' ') && (t.includes(': ') || t.includes(' #')))) fail();
  if (c >= 48 && c <= 57) {
    if (t.length <= 15 && /^[0-9]+$/.test(t)) return Number(t);
    if (looksNonString(t)) fail();
  } else if (MAYBE_NON_STRING[c] && looksNonString(t)) fail();
  return t;
}

/** `[a, b]`: plain words (letters, digits, `._+~/-`) separated by `, `; anything else is not in the subset. */
const FLOW_WORDS_RE = /^\[[A-Za-z0-9_][A-Za-z0-9._+~/-]*(?:, [A-Za-z0-9_][A-Za-z0-9._+~/-]*)*\]$/;
function flowWords(t: string): unknown[] {
  if (!FLOW_WORDS_RE.test(t)) fail();
  return t
    .slice(1, -1)
    .split(', ')
    .map((w) => subsetScalar(w));
}

const KEY_START = new Uint8Array(128);
const KEY_CHAR = new Uint8Array(128);
for (let k = 0; k < 128; k++) {
  const ch = String.fromCharCode(k);
  if (/[A-Za-z0-9_]/.test(ch)) KEY_START[k] = 1;
  if (/[A-Za-z0-9_./-]/.test(ch)) KEY_CHAR[k] = 1;
}

/**
 * Parse `text` if it is in the subset; `undefined` means "use the full YAML
 * parser". With `track`, remember where each key and item starts (costs
 * memory; callers parse again with it only to report an error).
 */
export function parseYamlSubset(text: string, options: { track?: boolean } = {}): SubsetResult | undefined {
  if (text.includes('\r') || text.includes('\t') || text.charCodeAt(0) === 0xfeff) return undefined;
  const positions = options.track ? new Map<object, Map<string | number, Position>>() : undefined;
  const len = text.length;

  // The current line: [cStart, end) is its content after `indent` spaces.
  let pos = 0;
  let lineNo = 0;
  let indent = 0;
  let cStart = 0;
  let end = 0;
  let eof = false;

  /** Make the line at `pos`, or the next one that is neither blank nor a comment, current. */
  const load = (): void => {
    for (;;) {
      if (pos >= len) {
        eof = true;
        return;
      }
      let e = text.indexOf('\n', pos);
      if (e < 0) e = len;
      let k = pos;
      while (text.charCodeAt(k) === 32) k++;
      if (k === e || text.charCodeAt(k) === 35 /* # */) {
        pos = e + 1;
        lineNo++;
        continue;
      }
      indent = k - pos;
      cStart = k;
      end = e;
      return;
    }
  };
  const advance = (): void => {
    pos = end + 1;
    lineNo++;
    load();
  };
  const seqItemAt = (s: number) => text.charCodeAt(s) === 45 /* - */ && (s + 1 === end || text.charCodeAt(s + 1) === 32);
  const record = (container: object, at: string | number, column: number): void => {
    if (!positions) return;
    let m = positions.get(container);
    if (!m) positions.set(container, (m = new Map()));
    m.set(at, { line: lineNo + 1, column: column + 1 });
  };
  /** The offset of the `:` ending a `key:` at `s`, or -1 when the text there is not a key. */
  const keyEnd = (s: number): number => {
    if (!KEY_START[text.charCodeAt(s)]) return -1;
    let k = s + 1;
    while (k < end && KEY_CHAR[text.charCodeAt(k)]) k++;
    if (text.charCodeAt(k) !== 58 /* : */ || k >= end) return -1;
    if (k + 1 < end && text.charCodeAt(k + 1) !== 32) return -1;
    return k;
  };

  // The same few keys repeat on every line: reuse one string per key rather
  // than slicing a new one each time (found by first character and length,
  // confirmed by comparing the text).
  const keys = new Map<number, string[]>();
  const keyAt = (s: number, colon: number): string => {
    const id = text.charCodeAt(s) * 1024 + Math.min(colon - s, 1023);
    const known = keys.get(id);
    if (known) for (const k of known) if (text.startsWith(k, s) && s + k.length === colon) return k;
    const key = text.slice(s, colon);
    if (key === '__proto__' || looksNonString(key)) fail();
    if (known) known.push(key);
    else keys.set(id, [key]);
    return key;
  };

  const parseBlock = (blockIndent: number): unknown => (seqItemAt(cStart) ? parseSeq(blockIndent) : parseMap(blockIndent, -1));

  /** The value of `key:` with nothing after it: a nested block, a sequence at the same indent, or null. */
  const parseNested = (parentIndent: number): unknown => {
    advance();
    if (eof) return null;
    if (indent > parentIndent) return parseBlock(indent);
    if (indent === parentIndent && seqItemAt(cStart)) return parseSeq(parentIndent);
    return null;
  };

  const parseSeq = (seqIndent: number): unknown[] => {
    const items: unknown[] = [];
    while (!eof) {
      if (indent < seqIndent) break;
      if (indent > seqIndent) fail();
      if (!seqItemAt(cStart)) break;
      record(items, items.length, indent);
      if (cStart + 1 === end) {
        items.push(parseNested(seqIndent));
        continue;
      }
      let s = cStart + 2;
      while (text.charCodeAt(s) === 32) s++;
      if (seqItemAt(s)) fail();
      if (keyEnd(s) >= 0) items.push(parseMap(seqIndent + (s - cStart), s));
      else {
        items.push(subsetScalar(text.slice(s, end)));
        advance();
      }
    }
    return items;
  };

  /** A mapping whose keys sit at `mapIndent`; `first` >= 0 is where its first key starts on the current line (after `- `). */
  const parseMap = (mapIndent: number, first: number): Record<string, unknown> => {
    const map: Record<string, unknown> = {};
    let s = first;
    for (;;) {
      if (s < 0) {
        if (eof || indent < mapIndent) break;
        if (indent > mapIndent || seqItemAt(cStart)) fail();
        s = cStart;
      }
      const colon = keyEnd(s);
      if (colon < 0) fail();
      const key = keyAt(s, colon);
      if (Object.hasOwn(map, key)) fail();
      record(map, key, mapIndent);
      if (colon + 2 >= end) map[key] = parseNested(mapIndent);
      else {
        map[key] = subsetScalar(text.slice(colon + 2, end));
        advance();
      }
      s = -1;
    }
    return map;
  };

  try {
    load();
    if (eof || indent !== 0) return undefined;
    const value = parseBlock(0);
    if (!eof) return undefined;
    if (value === null || typeof value !== 'object') return undefined;
    const positionOf = (path: YamlPath): Position | undefined => {
      let node: unknown = value;
      let at: Position | undefined;
      for (const seg of path) {
        if (node === null || typeof node !== 'object') break;
        const p = positions?.get(node)?.get(seg);
        if (!p) break;
        at = p;
        node = (node as Record<string | number, unknown>)[seg];
      }
      return at;
    };
    return { value, positionOf };
  } catch (err) {
    if (err instanceof NotInSubset) return undefined;
    throw err;
  }
}
