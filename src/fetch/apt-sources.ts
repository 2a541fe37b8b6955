import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

// The package archives this machine's apt is configured with, read from
// apt's own sources: `sources.list`, then `sources.list.d/*.list` (one-line
// format) and `sources.list.d/*.sources` (deb822), in apt's order (the
// folder's files sorted by name, both formats together).
//
// Why: a driver shipped in a Debian package (kernels/drivers.yaml,
// `source.deb`) names its archive by its URI path (`/debian`), never by a
// host, so no mirror host goes into a checked-in file; the host is the one
// this machine already uses for that archive. `apt-get download` cannot be
// used instead: it only finds packages of the suites apt knows, and a
// driver may come from another suite (sid) of the same archive, whose pool
// is shared.
//
// Only `deb` entries count (not `deb-src`), only http(s) and file URIs, and
// not entries marked `Enabled: no`. Options in brackets (`[signed-by=...]`)
// are skipped over. Nothing else of apt's configuration is read.

/** The environment variable that moves apt's configuration folder (tests, odd hosts). */
export const APT_ETC_ENV = 'FALCO_PROBES_APT_ETC';
export const DEFAULT_APT_ETC = '/etc/apt';

export interface AptSourcesOptions {
  /** apt's configuration folder (default: $FALCO_PROBES_APT_ETC, else /etc/apt). */
  etcDir?: string;
  env?: NodeJS.ProcessEnv;
}

export interface AptSourceEntry {
  /** `deb` or `deb-src`. */
  type: string;
  uri: string;
  suites: string[];
  components: string[];
  /** The file that names it. */
  file: string;
}

export function aptEtcDir(options: AptSourcesOptions = {}): string {
  return options.etcDir ?? ((options.env ?? process.env)[APT_ETC_ENV] || DEFAULT_APT_ETC);
}

/** Every enabled entry of apt's sources, in apt's file order. Missing files and folders are no entries. */
export async function readAptSources(options: AptSourcesOptions = {}): Promise<AptSourceEntry[]> {
  const etc = aptEtcDir(options);
  const files: string[] = [join(etc, 'sources.list')];
  const parts = join(etc, 'sources.list.d');
  const names = await readdir(parts).catch(() => [] as string[]);
  for (const name of names.sort()) if (/^[A-Za-z0-9_.-]+\.(list|sources)$/.test(name)) files.push(join(parts, name));
  const entries: AptSourceEntry[] = [];
  for (const file of files) {
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text === undefined) continue;
    entries.push(...(file.endsWith('.sources') ? parseDeb822Sources(text, file) : parseOneLineSources(text, file)));
  }
  return entries;
}

/** `deb [ options ] uri suite [component...]`, one per line; `#` starts a comment. */
export function parseOneLineSources(text: string, file = ''): AptSourceEntry[] {
  const entries: AptSourceEntry[] = [];
  for (const raw of text.split('\n')) {
    let line = raw.replace(/#.*$/, '').trim();
    const type = /^(deb|deb-src)\s+/.exec(line);
    if (!type) continue;
    line = line.slice(type[0].length);
    if (line.startsWith('[')) {
      const end = line.indexOf(']');
      if (end < 0) continue; // an unterminated option list: apt refuses the line too
      line = line.slice(end + 1).trim();
    }
    const [uri, suite, ...components] = line.split(/\s+/);
    if (!uri || !suite) continue;
    entries.push({ type: type[1]!, uri, suites: [suite], components, file });
  }
  return entries;
}

/**
 * deb822 stanzas separated by blank lines: `Types`, `URIs`, `Suites`,
 * `Components` (whitespace-separated lists), `Enabled: no` to disable one.
 * Field names are case-insensitive; a line starting with a space or tab
 * continues the field before it; `#` lines are comments.
 */
export function parseDeb822Sources(text: string, file = ''): AptSourceEntry[] {
  const entries: AptSourceEntry[] = [];
  const flush = (fields: Map<string, string>) => {
    if (fields.size === 0) return;
    if ((fields.get('enabled') ?? 'yes').trim().toLowerCase() === 'no') return;
    const list = (name: string) => (fields.get(name) ?? '').split(/\s+/).filter(Boolean);
    for (const type of list('types'))
      for (const uri of list('uris')) entries.push({ type, uri, suites: list('suites'), components: list('components'), file });
  };
  let fields = new Map<string, string>();
  let last: string | undefined;
  for (const raw of text.split('\n')) {
    if (raw.startsWith('#')) continue;
    if (raw.trim() === '') {
      flush(fields);
      fields = new Map();
      last = undefined;
      continue;
    }
    if (/^[ \t]/.test(raw)) {
      if (last !== undefined) fields.set(last, `${fields.get(last)} ${raw.trim()}`);
      continue;
    }
    const colon = raw.indexOf(':');
    if (colon <= 0) continue;
    last = raw.slice(0, colon).trim().toLowerCase();
    fields.set(last, raw.slice(colon + 1).trim());
  }
  flush(fields);
  return entries;
}

function normalizedPath(path: string): string {
  return path.replace(/\/+$/, '') || '/';
}

/**
 * The base URIs of every `deb` entry of apt's sources whose URL path is
 * `path` (`/debian`; a trailing slash on either side does not count),
 * deduplicated, in file order. `http://deb.example/debian/` matches
 * `/debian`; `.../debian-security` does not.
 */
export async function aptMirrorsForPath(path: string, options: AptSourcesOptions = {}): Promise<string[]> {
  return debEntriesAt(await readAptSources(options), normalizedPath(path), new Set()).map((e) => e.url);
}

/** The `deb` entries (http, https, file) whose URL path is `path`, as base URIs not in `seen` (which grows). */
function debEntriesAt(entries: readonly AptSourceEntry[], path: string, seen: Set<string>): AptFallbackMirror[] {
  const out: AptFallbackMirror[] = [];
  for (const entry of entries) {
    if (entry.type !== 'deb') continue;
    let url: URL;
    try {
      url = new URL(entry.uri);
    } catch {
      continue;
    }
    if (!['http:', 'https:', 'file:'].includes(url.protocol) || normalizedPath(url.pathname) !== path) continue;
    const base = entry.uri.replace(/\/+$/, '');
    if (seen.has(base)) continue;
    seen.add(base);
    out.push({ url: base, path, file: entry.file });
  }
  return out;
}

/** One of apt's mirrors that stands in for a mirror that did not answer. */
export interface AptFallbackMirror {
  /** apt's base URI (no trailing slash). */
  url: string;
  /** The URL path it shares with the mirror it stands in for (`/debian`). */
  path: string;
  /** The sources file that names it. */
  file: string;
}

/**
 * apt's mirrors for the archives `mirrors` point at: for each mirror's URL
 * path in order (`https://mirror.example/debian` is `/debian`), every `deb`
 * entry of apt's sources with that path, deduplicated and without the
 * mirrors themselves. The suite is not compared: an archive's suites (trixie,
 * sid) and its pool are served from the same base, whichever suites apt
 * itself lists. A mirror whose path is `/` stands for no archive and gets no
 * fallback. Unparseable mirror URLs are skipped.
 */
export async function aptFallbackMirrors(mirrors: readonly string[], options: AptSourcesOptions = {}): Promise<AptFallbackMirror[]> {
  const paths: string[] = [];
  for (const mirror of mirrors) {
    let url: URL;
    try {
      url = new URL(mirror);
    } catch {
      continue;
    }
    const path = normalizedPath(url.pathname);
    if (path !== '/' && !paths.includes(path)) paths.push(path);
  }
  if (paths.length === 0) return [];
  const entries = await readAptSources(options);
  const tried = new Set(mirrors.map((m) => m.replace(/\/+$/, '')));
  return paths.flatMap((path) => debEntriesAt(entries, path, tried));
}
