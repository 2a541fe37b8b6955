import { NotInSubset, parseYamlSubset, subsetScalar } from '../util/yaml-subset.js';

// The lockfile as `serializeLockfile` writes it, read by two patterns: one
// for a kernel's own fields, one for a package. A lockfile is tens of
// thousands of lines of the same two shapes; matching a whole kernel or
// package at once is about twice as fast as the YAML subset reader's
// line-by-line walk. The part before `kernels:` (a few lines) goes through
// that reader, and every value through its scalar rules, so what this
// returns is what parseYamlSubset returns for the same text (held by
// test/lockfile-canonical-reader.test.ts). Any other layout (another key
// order, a comment or blank line among the kernels, an unknown key, other
// indentation, `kernels: []`) gives undefined, and the caller reads the
// text with parseYamlSubset or the YAML parser as before. Nothing is checked
// here beyond the YAML: the schema and the rules run on the result as on
// any other.

/** A value as serializeLockfile writes it on one line: double-quoted without escapes, or plain. */
const V = `("[^"\\\\\\n]*"|[^\\n"' ][^\\n]*)`;
const KERNEL_RE = new RegExp(
  `  - name: ${V}\\n    release: ${V}\\n    version: ${V}\\n    machine: ${V}\\n    kernelVersion: ${V}\\n    targetId: ${V}\\n(?:    flavour: ${V}\\n)?    packages:\\n`,
  'y',
);
const PACKAGE_RE = new RegExp(
  `      - name: ${V}\\n        version: ${V}\\n(?:        role: ${V}\\n)?        repository: ${V}\\n        path: ${V}\\n        sha256: ${V}\\n        size: ${V}\\n`,
  'y',
);
const KERNELS_KEY = '\nkernels:\n';

/** The subset's reading of one value; a value it does not take (NotInSubset) means another layout. */
const value = subsetScalar;

/**
 * `value`, remembering the last value of one field: most fields repeat from
 * one kernel or package to the next (machine, target id, repository, role,
 * a kernel's packages' version), and the one string kept for them all is
 * fewer objects for the garbage collector to move.
 */
function field(): (token: string) => unknown {
  let lastToken: string | undefined;
  let lastValue: unknown;
  return (token) => {
    if (token !== lastToken) {
      lastValue = value(token);
      // Strings and numbers only: `[]` or `{}` (which the schema refuses) are new each time, as the subset reader makes them.
      lastToken = typeof lastValue === 'object' ? undefined : token;
    }
    return lastValue;
  };
}

/** The document parseYamlSubset would return for this lockfile text, or undefined when it is not laid out as serializeLockfile writes. */
export function readCanonicalLockfile(text: string): Record<string, unknown> | undefined {
  const at = text.indexOf(KERNELS_KEY);
  if (at < 0 || text.includes('\r') || text.includes('\t')) return undefined;
  const head = parseYamlSubset(text.slice(0, at + KERNELS_KEY.length));
  const doc = head?.value as Record<string, unknown> | undefined;
  // `kernels:` with nothing after it in the head: the last key, its list below.
  if (doc === undefined || Array.isArray(doc) || doc['kernels'] !== null || Object.keys(doc).at(-1) !== 'kernels') return undefined;
  const kernels: Record<string, unknown>[] = [];
  let pos = at + KERNELS_KEY.length;
  const [machine, kernelVersion, targetId, flavour, pkgVersion, role, repository, size] = Array.from({ length: 8 }, field);
  try {
    while (pos < text.length) {
      KERNEL_RE.lastIndex = pos;
      const k = KERNEL_RE.exec(text);
      if (k === null) return undefined;
      pos = KERNEL_RE.lastIndex;
      const packages: Record<string, unknown>[] = [];
      for (;;) {
        PACKAGE_RE.lastIndex = pos;
        const p = PACKAGE_RE.exec(text);
        if (p === null) break;
        pos = PACKAGE_RE.lastIndex;
        const pkg: Record<string, unknown> = { name: value(p[1]!), version: pkgVersion!(p[2]!) };
        if (p[3] !== undefined) pkg['role'] = role!(p[3]);
        pkg['repository'] = repository!(p[4]!);
        pkg['path'] = value(p[5]!);
        pkg['sha256'] = value(p[6]!);
        pkg['size'] = size!(p[7]!);
        packages.push(pkg);
      }
      // `packages:` with no item below is null to the subset reader: leave that to it.
      if (packages.length === 0) return undefined;
      const kernel: Record<string, unknown> = {
        name: value(k[1]!),
        release: value(k[2]!),
        version: value(k[3]!),
        machine: machine!(k[4]!),
        kernelVersion: kernelVersion!(k[5]!),
        targetId: targetId!(k[6]!),
      };
      if (k[7] !== undefined) kernel['flavour'] = flavour!(k[7]);
      kernel['packages'] = packages;
      kernels.push(kernel);
    }
  } catch (err) {
    if (err instanceof NotInSubset) return undefined;
    throw err;
  }
  if (kernels.length === 0) return undefined;
  doc['kernels'] = kernels;
  return doc;
}
