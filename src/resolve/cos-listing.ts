import { FalcoProbesError } from '../util/errors.js';
import { DEFAULT_HTTP, httpGetBuffer, type HttpOptions } from '../util/http.js';

// A Google Cloud Storage bucket's object listing through the JSON API
// (`GET https://storage.googleapis.com/storage/v1/b/<bucket>/o?prefix=...`),
// the source of truth for which COS builds have kernel headers: an object
// `<build id>/kernel-headers.tgz` exists exactly for the builds whose headers
// can be downloaded. A page holds at most 1000 objects; `nextPageToken` asks
// for the next. Each object gives its size and MD5 (base64), which the
// download is checked against.

/** One page of JSON is a few hundred kilobytes; far more is not a listing. */
const PAGE_MAX_BYTES = 32 * 1024 * 1024;
/** 1000 objects a page: 100,000 pages would be a hundred million objects. */
const MAX_PAGES = 100_000;

export interface BucketObject {
  name: string;
  size: number;
  /** MD5 of the object as lower-case hex, when the listing gives one (composite objects have none). */
  md5?: string;
}

export interface BucketListing {
  objects: BucketObject[];
  pages: number;
}

/** List every object whose name starts with `prefix`, following `nextPageToken`. */
export async function listBucketObjects(listingUrl: string, prefix: string, http: HttpOptions = {}): Promise<BucketListing> {
  const objects: BucketObject[] = [];
  const tokens = new Set<string>();
  let token: string | undefined;
  let pages = 0;
  do {
    const url = pageUrl(listingUrl, prefix, token);
    const body = await httpGetBuffer(url, { ...http, maxBytes: Math.min(http.maxBytes ?? DEFAULT_HTTP.maxBytes, PAGE_MAX_BYTES) });
    const page = parsePage(body, url);
    objects.push(...page.objects);
    pages++;
    token = page.nextPageToken;
    if (token !== undefined) {
      if (tokens.has(token))
        throw new FalcoProbesError('input', `the listing hands out page token ${JSON.stringify(token.slice(0, 80))} twice (a loop)`, {
          location: { url },
        });
      tokens.add(token);
      if (pages >= MAX_PAGES)
        throw new FalcoProbesError('input', `more than ${MAX_PAGES} pages for prefix ${JSON.stringify(prefix)}; refusing to list further`, {
          location: { url },
        });
    }
  } while (token !== undefined);
  return { objects, pages };
}

function pageUrl(listingUrl: string, prefix: string, token: string | undefined): string {
  const url = new URL(listingUrl);
  url.searchParams.set('prefix', prefix);
  if (token !== undefined) url.searchParams.set('pageToken', token);
  return url.toString();
}

interface Page {
  objects: BucketObject[];
  nextPageToken?: string;
}

/** Parse one page; anything that is not a GCS object listing is refused with the URL. */
export function parsePage(body: Buffer, url: string): Page {
  const fail = (message: string): never => {
    throw new FalcoProbesError('input', message, {
      location: { url },
      hint: 'the mirror may have answered with an error page instead of a GCS JSON object listing',
    });
  };
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
  } catch (err) {
    return fail(`not a JSON object listing: ${(err as Error).message.split('\n')[0]}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return fail('not a JSON object listing: the document is not an object');
  const doc = value as Record<string, unknown>;
  if (doc['kind'] !== 'storage#objects')
    return fail(`not a GCS object listing: "kind" is ${JSON.stringify(doc['kind'] ?? null)}, expected "storage#objects"`);
  const items = doc['items'] ?? [];
  if (!Array.isArray(items)) return fail('"items" is not a list');
  const objects = items.map((item, i) => parseItem(item, i, fail));
  const next = doc['nextPageToken'];
  if (next !== undefined && (typeof next !== 'string' || next === '' || next.length > 4096))
    return fail('"nextPageToken" is not a short string');
  return { objects, ...(next !== undefined ? { nextPageToken: next as string } : {}) };
}

function parseItem(item: unknown, i: number, fail: (m: string) => never): BucketObject {
  if (typeof item !== 'object' || item === null) return fail(`items[${i}] is not an object`);
  const o = item as Record<string, unknown>;
  const name = o['name'];
  if (typeof name !== 'string' || name === '' || name.length > 1024)
    return fail(`items[${i}].name is not a string of 1 to 1024 characters`);
  // The JSON API writes 64-bit numbers as strings.
  const size = o['size'];
  if (typeof size !== 'string' || !/^[0-9]{1,15}$/.test(size))
    return fail(`items[${i}] (${JSON.stringify(name.slice(0, 100))}): size ${JSON.stringify(size ?? null)} is not a whole number`);
  const md5Hash = o['md5Hash'];
  let md5: string | undefined;
  if (md5Hash !== undefined) {
    const bytes = typeof md5Hash === 'string' && /^[A-Za-z0-9+/]{22}==$/.test(md5Hash) ? Buffer.from(md5Hash, 'base64') : undefined;
    if (bytes?.length !== 16)
      return fail(`items[${i}] (${JSON.stringify(name.slice(0, 100))}): md5Hash ${JSON.stringify(md5Hash)} is not a base64 MD5`);
    md5 = bytes.toString('hex');
  }
  return { name, size: Number(size), ...(md5 !== undefined ? { md5 } : {}) };
}
