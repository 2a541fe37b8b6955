/**
 * Compare version-like strings so that digit runs compare as numbers:
 * `4.14.9 < 4.14.10`, `6.1.0-9 < 6.1.0-10`. Ties fall back to plain code-unit
 * order so the result is a total order (needed for deterministic output).
 *
 * The strings are split into runs of digits and runs of other characters;
 * runs are compared pairwise (two digit runs by value, then the longer one,
 * `01`, after `1`; a digit run after a text run; two text runs by code
 * units), then the one with fewer runs first. Written as a scan without
 * allocating: generate sorts and orders tens of thousands of names.
 */
export function compareNatural(a: string, b: string): number {
  if (a === b) return 0;
  const la = a.length;
  const lb = b.length;
  let i = 0;
  let j = 0;
  while (i < la && j < lb) {
    const ad = isDigit(a.charCodeAt(i));
    const bd = isDigit(b.charCodeAt(j));
    let ie = i + 1;
    while (ie < la && isDigit(a.charCodeAt(ie)) === ad) ie++;
    let je = j + 1;
    while (je < lb && isDigit(b.charCodeAt(je)) === bd) je++;
    if (ad !== bd) return ad ? 1 : -1; // a number sorts after text at the same place ("rc" < "1")
    if (ad) {
      // By value: leading zeros skipped (one digit kept), then the number of digits, then the digits.
      let zi = i;
      while (zi < ie - 1 && a.charCodeAt(zi) === 48) zi++;
      let zj = j;
      while (zj < je - 1 && b.charCodeAt(zj) === 48) zj++;
      const na = ie - zi;
      const nb = je - zj;
      if (na !== nb) return na < nb ? -1 : 1;
      for (let k = 0; k < na; k++) {
        const ca = a.charCodeAt(zi + k);
        const cb = b.charCodeAt(zj + k);
        if (ca !== cb) return ca < cb ? -1 : 1;
      }
      if (ie - i !== je - j) return ie - i - (je - j); // 01 after 1
    } else {
      const n = Math.min(ie - i, je - j);
      for (let k = 0; k < n; k++) {
        const ca = a.charCodeAt(i + k);
        const cb = b.charCodeAt(j + k);
        if (ca !== cb) return ca < cb ? -1 : 1;
      }
      if (ie - i !== je - j) return ie - i < je - j ? -1 : 1;
    }
    i = ie;
    j = je;
  }
  const ra = runs(a, i);
  const rb = runs(b, j);
  if (ra !== rb) return ra - rb;
  return a < b ? -1 : a > b ? 1 : 0;
}

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

/** The number of digit and non-digit runs of `s` from `from` on. */
function runs(s: string, from: number): number {
  let n = 0;
  for (let k = from; k < s.length; k++) if (k === from || isDigit(s.charCodeAt(k)) !== isDigit(s.charCodeAt(k - 1))) n++;
  return n;
}

/** True when kernel release `release` is at least `minimum` (compares the leading x.y.z numbers). */
export function releaseAtLeast(release: string, minimum: string): boolean {
  const nums = (s: string) => (s.match(/^(\d+)(?:\.(\d+))?(?:\.(\d+))?/) ?? []).slice(1).map((x) => Number(x ?? 0));
  const r = nums(release);
  const m = nums(minimum);
  if (r.length === 0) return false;
  for (let i = 0; i < 3; i++) {
    const a = r[i] ?? 0;
    const b = m[i] ?? 0;
    if (a !== b) return a > b;
  }
  return true;
}
