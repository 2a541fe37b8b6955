import { SaxesParser } from 'saxes';
import { FalcoProbesError } from '../util/errors.js';
import { DEFAULT_HTTP, httpGetBuffer, joinUrl, type HttpOptions } from '../util/http.js';
import { checkRelativePath } from '../util/names.js';

// `repodata/repomd.xml`: the index of a yum repository's metadata files. We
// need one entry, `<data type="primary">`: where the package list is, its
// sha256 (of the file as served, compressed) and, when given, its sizes.

/** repomd.xml is a few kilobytes; a cap far above that stops a mirror from feeding us anything big. */
const REPOMD_MAX_BYTES = 16 * 1024 * 1024;
const SIZE_RE = /^[0-9]{1,15}$/;

export interface PrimaryRef {
  /** Path of the primary metadata relative to the repository base (`repodata/<sha>-primary.xml.gz`). */
  href: string;
  /** sha256 of the file as served (before decompression). */
  sha256: string;
  /** Size of the file as served, when repomd gives it. */
  size?: number;
  /** Size after decompression, when repomd gives it. */
  openSize?: number;
}

export interface Repomd {
  url: string;
  primary: PrimaryRef;
}

interface RawPrimary {
  checksumType?: string;
  checksum?: string;
  href?: string;
  xmlBase?: string;
  size?: string;
  openSize?: string;
}

/** Fetch and parse `<base>repodata/repomd.xml`. Every failure names the URL. */
export async function readRepomd(base: string, http: HttpOptions = {}): Promise<Repomd> {
  const url = joinUrl(base, 'repodata/repomd.xml');
  const maxBytes = Math.min(http.maxBytes ?? DEFAULT_HTTP.maxBytes, REPOMD_MAX_BYTES);
  const body = await httpGetBuffer(url, { ...http, maxBytes });
  return { url, primary: parseRepomd(body, url) };
}

export function parseRepomd(body: Uint8Array, url: string): PrimaryRef {
  const fail = (message: string, hint?: string): never => {
    throw new FalcoProbesError('input', message, { location: { url }, ...(hint ? { hint } : {}) });
  };
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    return fail('repomd.xml is not UTF-8 text');
  }

  const parser = new SaxesParser({ position: true });
  let root: string | undefined;
  let primary: RawPrimary | undefined;
  let inPrimary = false;
  let field: keyof RawPrimary | undefined;
  let buffer = '';
  parser.on('error', (err) =>
    fail(`malformed XML: ${err.message}`, 'the mirror may have answered with an error page instead of repomd.xml'),
  );
  parser.on('opentag', (tag) => {
    if (root === undefined) {
      root = tag.name;
      if (root !== 'repomd') fail(`not a repomd.xml: its root element is <${root}>`, 'the mirror may have answered with an error page');
      return;
    }
    if (tag.name === 'data') {
      inPrimary = tag.attributes['type'] === 'primary';
      if (inPrimary) {
        if (primary) fail('repomd.xml lists the primary metadata twice');
        primary = {};
      }
      return;
    }
    if (!inPrimary || !primary) return;
    switch (tag.name) {
      case 'checksum':
        primary.checksumType = String(tag.attributes['type'] ?? '');
        field = 'checksum';
        break;
      case 'location':
        primary.href = String(tag.attributes['href'] ?? '');
        if (tag.attributes['xml:base'] !== undefined) primary.xmlBase = String(tag.attributes['xml:base']);
        break;
      case 'size':
        field = 'size';
        break;
      case 'open-size':
        field = 'openSize';
        break;
    }
    buffer = '';
  });
  parser.on('text', (t) => {
    if (field) buffer += t;
  });
  parser.on('closetag', (tag) => {
    if (tag.name === 'data') inPrimary = false;
    if (field && primary) {
      primary[field] = buffer.trim();
      field = undefined;
    }
  });
  parser.write(text).close();

  if (!primary) return fail('repomd.xml lists no primary metadata (<data type="primary">)');
  if (primary.checksumType !== 'sha256')
    fail(
      `the primary metadata's checksum type is ${JSON.stringify(primary.checksumType ?? '')}; only sha256 is accepted`,
      'sha1 and md5 do not protect against a tampered mirror; regenerate the repository with sha256',
    );
  const sha256 = (primary.checksum ?? '').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(sha256)) fail(`the primary metadata's sha256 ${JSON.stringify(primary.checksum ?? '')} is not 64 hex digits`);
  if (!primary.href) return fail('the primary metadata has no <location href>');
  if (primary.xmlBase !== undefined)
    fail(`the primary metadata's location has an xml:base (${JSON.stringify(primary.xmlBase)}), which is not supported`);
  try {
    checkRelativePath(primary.href, { url });
  } catch (err) {
    throw new FalcoProbesError('input', `primary metadata location: ${(err as Error).message}`, { location: { url } });
  }
  const number = (value: string | undefined, what: string): number | undefined => {
    if (value === undefined) return undefined;
    if (!SIZE_RE.test(value)) fail(`the primary metadata's ${what} ${JSON.stringify(value)} is not a whole number`);
    return Number(value);
  };
  const size = number(primary.size, '<size>');
  const openSize = number(primary.openSize, '<open-size>');
  return {
    href: primary.href,
    sha256,
    ...(size !== undefined ? { size } : {}),
    ...(openSize !== undefined ? { openSize } : {}),
  };
}
