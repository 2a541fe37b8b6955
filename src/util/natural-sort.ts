/**
 * Compare version-like strings so that digit runs compare as numbers:
 * `4.14.9 < 4.14.10`, `6.1.0-9 < 6.1.0-10`. Ties fall back to plain code-unit
 * order so the result is a total order (needed for deterministic output).
 */
export function compareNatural(a: string, b: string): number {
  const re = /(\d+|\D+)/g;
  const pa = a.match(re) ?? [];
  const pb = b.match(re) ?? [];
  const n = Math.min(pa.length, pb.length);
  for (let i = 0; i < n; i++) {
    const x = pa[i]!;
    const y = pb[i]!;
    const xd = x.charCodeAt(0) >= 48 && x.charCodeAt(0) <= 57;
    const yd = y.charCodeAt(0) >= 48 && y.charCodeAt(0) <= 57;
    if (xd && yd) {
      const xi = BigInt(x);
      const yi = BigInt(y);
      if (xi !== yi) return xi < yi ? -1 : 1;
      if (x.length !== y.length) return x.length - y.length; // 01 after 1
    } else if (x !== y) {
      if (xd !== yd) return xd ? 1 : -1; // a number sorts after text at the same place ("rc" < "1")
      return x < y ? -1 : 1;
    }
  }
  if (pa.length !== pb.length) return pa.length - pb.length;
  return a < b ? -1 : a > b ? 1 : 0;
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
