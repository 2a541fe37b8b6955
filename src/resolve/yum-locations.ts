import { FalcoProbesError } from '../util/errors.js';
import { DEFAULT_HTTP, httpGetBuffer, tryMirrors, type HttpOptions } from '../util/http.js';
import { checkRelativePath } from '../util/names.js';
import type { Arch, YumPackageRoot } from '../config/types.js';
import type { LoadedSourceDefinition } from '../config/source-definition.js';
import { mirrorsFor, type ResolveOptions } from './types.js';

// Where a yum repository's files are: its base URLs (straight from the source
// definition, from `--mirror`, or from the lines of a `mirror.list`), and how a
// package's `<location href>` becomes a path that a lockfile can hold.

export const BASEARCH = '$basearch';
/** A mirror.list is a few lines; anything bigger is not one. */
const MIRROR_LIST_MAX_BYTES = 256 * 1024;
const MIRROR_LIST_MAX_LINES = 100;
/** The URL characters a mirror list line may use (no quotes, spaces, backslashes or `$` once substituted). */
const MIRROR_URL_RE = /^https?:\/\/[A-Za-z0-9._~:/?#@!&*+,;=%-]+$/;

/** Replace yum's `$basearch` with the architecture; any other `$variable` is refused (we cannot know its value). */
export function substituteBasearch(url: string, arch: Arch, where: { url?: string; what: string }): string {
  const out = url.split(BASEARCH).join(arch);
  if (out.includes('$'))
    throw new FalcoProbesError('input', `${where.what} ${JSON.stringify(url)} uses a $variable other than ${BASEARCH}`, {
      location: where.url ? { url: where.url } : {},
      hint: `only ${BASEARCH} is substituted (with x86_64 or aarch64)`,
    });
  return out;
}

function withSlash(url: string): string {
  return url.endsWith('/') ? url : `${url}/`;
}

/**
 * Fetch a `mirror.list` and return its lines as base URLs, in order, with
 * `$basearch` substituted. Blank lines and `#` comments are skipped; a line
 * that is not an http(s) URL is an error naming the list and the line.
 */
export async function readMirrorList(listUrl: string, arch: Arch, http: HttpOptions = {}): Promise<string[]> {
  const maxBytes = Math.min(http.maxBytes ?? DEFAULT_HTTP.maxBytes, MIRROR_LIST_MAX_BYTES);
  const body = await httpGetBuffer(listUrl, { ...http, maxBytes });
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw new FalcoProbesError('input', 'mirror list is not UTF-8 text', { location: { url: listUrl } });
  }
  const bases: string[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const url = substituteBasearch(line, arch, { url: listUrl, what: `line ${i + 1}` });
    if (!MIRROR_URL_RE.test(url))
      throw new FalcoProbesError('input', `line ${i + 1} is not an http(s) URL: ${JSON.stringify(line.slice(0, 200))}`, {
        location: { url: listUrl },
        hint: 'a mirror.list holds one repository base URL per line',
      });
    bases.push(withSlash(url));
    if (bases.length > MIRROR_LIST_MAX_LINES)
      throw new FalcoProbesError('input', `more than ${MIRROR_LIST_MAX_LINES} URLs; this is not a mirror list`, {
        location: { url: listUrl },
      });
  }
  if (bases.length === 0) throw new FalcoProbesError('input', 'mirror list names no repository URL', { location: { url: listUrl } });
  return bases;
}

/**
 * Run `fn` with the base URL (ending in `/`) of repository `repoName` for
 * `arch`, trying mirrors in order: network failures move on to the next one.
 * A repository with `mirrorList: true` lists mirror.list URLs, each expanded to
 * its lines; a `--mirror` override is always a base URL, never a mirror list.
 * `$basearch` is substituted in every URL.
 */
export async function withYumBase<T>(
  source: LoadedSourceDefinition,
  repoName: string,
  arch: Arch,
  options: ResolveOptions,
  fn: (base: string) => Promise<T>,
): Promise<T> {
  const repo = source.definition.repositories.find((r) => r.name === repoName);
  if (!repo) throw new FalcoProbesError('internal', `no repository ${repoName} in ${source.relativePath}`);
  const overridden = (options.mirrorOverrides?.get(repoName)?.length ?? 0) > 0;
  const what = overridden ? `--mirror ${repoName}` : `a mirror of ${repoName} in ${source.relativePath}`;
  const urls = mirrorsFor(source, repoName, options).map((u) => substituteBasearch(u, arch, { what }));
  if (overridden || repo.mirrorList !== true) return tryMirrors(urls.map(withSlash), fn);
  return tryMirrors(urls, async (listUrl) => tryMirrors(await readMirrorList(listUrl, arch, options.http), fn));
}

/**
 * The lockfile path of a package from its `<location href>` and the base URL
 * the metadata came from.
 *
 * - `repository` (the default): the href itself, which must be a plain
 *   relative path inside the repository (no `..`).
 * - `host`: Amazon Linux's hrefs climb out of the repository to a shared
 *   store (`../../../../../blobstore/<sha256>/kernel-devel-....rpm`); the path
 *   is then taken from the host's root (`blobstore/<sha256>/...`). Leading `..`
 *   segments are allowed, but not beyond the host root and nowhere else.
 *
 * The result always passes `checkRelativePath`.
 */
export function packagePath(href: string, base: string, root: YumPackageRoot = 'repository'): string {
  if (root === 'repository') return checkRelativePath(href);
  const segments = href.split('/');
  let up = 0;
  while (segments[up] === '..') up++;
  const rest = segments.slice(up).join('/');
  checkRelativePath(rest);
  const baseSegments = new URL(withSlash(base)).pathname.split('/').filter((s) => s !== '');
  if (up > baseSegments.length)
    throw new FalcoProbesError(
      'input',
      `refusing repository path ${JSON.stringify(href)}: it climbs ${up} folders above a base only ${baseSegments.length} deep`,
    );
  return checkRelativePath([...baseSegments.slice(0, baseSegments.length - up), rest].join('/'));
}
