// Debian version comparison, as dpkg does it (deb-version(7)):
// `[epoch:]upstream[-revision]`; the epoch compares as a number; upstream and
// revision compare by alternating runs of non-digits (character by character,
// `~` before everything, even the end of the string; letters before other
// characters) and digits (as numbers).

export interface DebVersion {
  epoch: string;
  upstream: string;
  revision: string;
}

export function parseDebVersion(v: string): DebVersion {
  const colon = v.indexOf(':');
  const epoch = colon >= 0 ? v.slice(0, colon) : '0';
  const rest = colon >= 0 ? v.slice(colon + 1) : v;
  const dash = rest.lastIndexOf('-');
  return dash >= 0 ? { epoch, upstream: rest.slice(0, dash), revision: rest.slice(dash + 1) } : { epoch, upstream: rest, revision: '' };
}

/** The upstream part: no epoch, no Debian revision (`1:6.12.117-1~deb12u1` -> `6.12.117`). */
export function upstreamVersion(v: string): string {
  return parseDebVersion(v).upstream;
}

const isDigit = (c: number) => c >= 48 && c <= 57;
const isLetter = (c: number) => (c >= 65 && c <= 90) || (c >= 97 && c <= 122);

/** dpkg's `order()`: the weight of one character of a non-digit run (NaN stands for the end of the run). */
function order(c: number): number {
  if (Number.isNaN(c) || isDigit(c)) return 0;
  if (isLetter(c)) return c;
  if (c === 126 /* ~ */) return -1;
  return c + 256;
}

/** Compare two runs of digits as numbers of any length (no overflow). */
function compareDigits(a: string, b: string): number {
  const x = a.replace(/^0+/, '');
  const y = b.replace(/^0+/, '');
  if (x.length !== y.length) return x.length < y.length ? -1 : 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

/** dpkg's `verrevcmp()`, for the upstream part or the revision. */
function compareFragment(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    // Non-digit run: compare character by character; a shorter run weighs 0 at its end.
    while ((i < a.length && !isDigit(a.charCodeAt(i))) || (j < b.length && !isDigit(b.charCodeAt(j)))) {
      const ac = order(i < a.length ? a.charCodeAt(i) : NaN);
      const bc = order(j < b.length ? b.charCodeAt(j) : NaN);
      if (ac !== bc) return ac < bc ? -1 : 1;
      i++;
      j++;
    }
    const si = i;
    while (i < a.length && isDigit(a.charCodeAt(i))) i++;
    const sj = j;
    while (j < b.length && isDigit(b.charCodeAt(j))) j++;
    const d = compareDigits(a.slice(si, i), b.slice(sj, j));
    if (d !== 0) return d;
  }
  return 0;
}

/** Negative, zero or positive as `a` is older than, equal to or newer than `b`. */
export function compareDebVersions(a: string, b: string): number {
  if (a === b) return 0;
  const x = parseDebVersion(a);
  const y = parseDebVersion(b);
  return compareDigits(x.epoch, y.epoch) || compareFragment(x.upstream, y.upstream) || compareFragment(x.revision, y.revision);
}

export type VersionRelation = '=' | '>=' | '<=' | '<<' | '>>';

/** Parse a relation as written in `Depends`; the obsolete `<` and `>` mean `<=` and `>=` (Debian Policy 7.1). */
export function parseRelation(op: string): VersionRelation | undefined {
  switch (op) {
    case '=':
    case '>=':
    case '<=':
    case '<<':
    case '>>':
      return op;
    case '<':
      return '<=';
    case '>':
      return '>=';
    default:
      return undefined;
  }
}

export function satisfiesRelation(version: string, relation: VersionRelation, wanted: string): boolean {
  const c = compareDebVersions(version, wanted);
  switch (relation) {
    case '=':
      return c === 0;
    case '>=':
      return c >= 0;
    case '<=':
      return c <= 0;
    case '<<':
      return c < 0;
    case '>>':
      return c > 0;
  }
}
