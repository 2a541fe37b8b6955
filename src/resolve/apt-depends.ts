import { parseRelation, type VersionRelation } from './deb-version.js';

// `Depends:` as Debian Policy 7.1 writes it: groups separated by commas, each
// a list of alternatives separated by `|`, each `name[:arch] [(op version)]`
// with optional `[arch list]` and `<build profile>` qualifiers.

export interface DependencyAlternative {
  name: string;
  relation?: VersionRelation;
  version?: string;
}

/** One comma-separated group: the first alternative that can be satisfied is used. */
export type DependencyGroup = DependencyAlternative[];

const ALTERNATIVE_RE = /^([^\s(:[<|,]+)(?::[A-Za-z0-9-]+)?\s*(?:\(\s*([<>=]{1,2})\s*([^\s)]+)\s*\))?\s*(?:\[[^\]]*\]\s*)?(?:<[^>]*>\s*)*$/;

/** Parse a Depends value; returns the text of the first alternative it cannot read as `{ error }`. */
export function parseDepends(text: string): { groups: DependencyGroup[] } | { error: string } {
  const groups: DependencyGroup[] = [];
  if (text.trim() === '') return { groups };
  for (const groupText of text.split(',')) {
    const group: DependencyGroup = [];
    for (const altText of groupText.split('|')) {
      const alt = altText.trim();
      const m = ALTERNATIVE_RE.exec(alt);
      if (!m) return { error: alt };
      const [, name, op, version] = m as unknown as [string, string, string | undefined, string | undefined];
      if (op === undefined) {
        group.push({ name });
        continue;
      }
      const relation = parseRelation(op);
      if (!relation) return { error: alt };
      group.push({ name, relation, version: version! });
    }
    groups.push(group);
  }
  return { groups };
}

export function formatAlternative(a: DependencyAlternative): string {
  return a.relation ? `${a.name} (${a.relation} ${a.version})` : a.name;
}
