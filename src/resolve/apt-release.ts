import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FalcoProbesError } from '../util/errors.js';
import { httpGetBuffer, HttpStatusError, joinUrl, type HttpOptions } from '../util/http.js';
import { checkRelativePath, checkSha256 } from '../util/names.js';
import type { Logger } from '../util/log.js';

// An apt repository's `dists/<suite>/InRelease` (or `Release` + `Release.gpg`):
// fetched, its signature checked with gpgv when the definition names a
// keyring, and its SHA256 list parsed. Only the bytes gpgv says were signed
// are parsed, never the text around the signature.

/** A Release file is a few hundred kilobytes (Debian's is 150 kB); anything far larger is refused. */
export const RELEASE_MAX_BYTES = 16 * 1024 * 1024;
const GPGV_TIMEOUT_MS = 60_000;

export interface ReleaseEntry {
  sha256: string;
  size: number;
}

export interface AptRelease {
  /** URL the Release text came from (InRelease or Release), for error messages. */
  url: string;
  suite?: string;
  codename?: string;
  /** The `Architectures` field (Debian names: `amd64 arm64`), when present: a repository serves only these. */
  architectures?: string[];
  /** The `Valid-Until` field as written (an RFC 2822 date), when present. */
  validUntil?: string;
  /** Files the Release lists under `SHA256:`, by path relative to `dists/<suite>/`. */
  files: Map<string, ReleaseEntry>;
  signatureChecked: boolean;
}

export interface FetchReleaseOptions {
  base: string;
  suite: string;
  /** Absolute path of an OpenPGP keyring; when given, the signature must verify. */
  keyring?: string;
  http?: HttpOptions;
  logger?: Logger;
  /** Refuse a Release whose `Valid-Until` has passed (default true; the repository's `checkValidUntil`). */
  checkValidUntil?: boolean;
  /** The repository's name in the source definition, for messages. */
  repository?: string;
  /** The time to check `Valid-Until` against (default: now). */
  now?: Date;
}

export async function fetchAptRelease(opts: FetchReleaseOptions): Promise<AptRelease> {
  const dist = joinUrl(opts.base, `dists/${opts.suite}`);
  const http = { ...opts.http, maxBytes: Math.min(opts.http?.maxBytes ?? RELEASE_MAX_BYTES, RELEASE_MAX_BYTES) };
  const inReleaseUrl = `${dist}/InRelease`;
  let text: string;
  let url = inReleaseUrl;
  let signatureChecked = false;
  const inRelease = await getOrUndefinedOn404(inReleaseUrl, http);
  if (inRelease) refuseHtml(inRelease, inReleaseUrl);
  if (inRelease) {
    if (opts.keyring) {
      text = await gpgvVerify(opts.keyring, inReleaseUrl, inRelease);
      signatureChecked = true;
    } else {
      text = clearsignedBody(inRelease.toString('utf8'), inReleaseUrl);
    }
  } else {
    url = `${dist}/Release`;
    const release = await getOrUndefinedOn404(url, http);
    if (!release)
      throw new FalcoProbesError('network', `neither InRelease nor Release found (HTTP 404) for suite "${opts.suite}"`, {
        location: { url: dist },
        hint: 'check the suite name and the mirror URL in the source definition',
      });
    refuseHtml(release, url);
    if (opts.keyring) {
      const sigUrl = `${dist}/Release.gpg`;
      const sig = await getOrUndefinedOn404(sigUrl, http);
      if (!sig)
        throw new FalcoProbesError(
          'input',
          'no InRelease and no Release.gpg: the Release file is unsigned, but the source definition names a keyring',
          {
            location: { url: sigUrl },
          },
        );
      await gpgvVerify(opts.keyring, url, release, sig);
      signatureChecked = true;
    }
    text = release.toString('utf8');
  }
  if (!signatureChecked) opts.logger?.info(`${url}: signature not checked (the source definition names no keyring for this repository)`);
  else opts.logger?.debug(`${url}: signature verified with ${opts.keyring}`);
  const release = parseReleaseText(text, url);
  checkSuite(release, opts.suite);
  if (opts.checkValidUntil !== false) checkValidUntil(release, opts.now ?? new Date(), opts.repository);
  return { ...release, signatureChecked };
}

/**
 * apt refuses a Release file after its `Valid-Until`: a signed but old file
 * is how a mirror replays outdated metadata (or freezes it) without breaking
 * the signature. So does this resolver, unless the repository opts out.
 */
export function checkValidUntil(release: Pick<AptRelease, 'url' | 'validUntil'>, now: Date, repository?: string): void {
  if (release.validUntil === undefined) return;
  const until = Date.parse(release.validUntil);
  const optOut = `set \`checkValidUntil: false\` on repository ${repository ? `"${repository}" ` : ''}in the source definition (as apt's Check-Valid-Until=no)`;
  if (Number.isNaN(until))
    throw new FalcoProbesError('input', `the Release file's Valid-Until ${JSON.stringify(release.validUntil)} is not a date`, {
      location: { url: release.url },
      hint: `if the mirror is a deliberate snapshot, ${optOut}`,
    });
  if (until < now.getTime())
    throw new FalcoProbesError(
      'input',
      `the Release file expired: Valid-Until ${release.validUntil} has passed (it is ${now.toUTCString()}); refusing it as apt does (a replayed or frozen mirror?)`,
      {
        location: { url: release.url },
        hint: `use an up-to-date mirror; if this one is a deliberate snapshot, ${optOut}`,
      },
    );
}

/** A captive portal or a mirror's error page answers 200 with HTML: say so, rather than fail on its signature or syntax. */
function refuseHtml(body: Buffer, url: string): void {
  const head = body.subarray(0, 512).toString('latin1').trimStart().toLowerCase();
  if (head.startsWith('<!doctype html') || head.startsWith('<html') || head.startsWith('<?xml') || head.startsWith('<head'))
    throw new FalcoProbesError('input', 'the mirror answered with an HTML or XML page, not a Release file', {
      location: { url },
      hint: 'the URL may point at a web page, a proxy login or an error page; check the mirror URL and the suite in the source definition',
    });
}

async function getOrUndefinedOn404(url: string, http: HttpOptions): Promise<Buffer | undefined> {
  try {
    return await httpGetBuffer(url, http);
  } catch (err) {
    if (err instanceof HttpStatusError && (err.status === 404 || err.status === 410)) return undefined;
    throw err;
  }
}

/** A mirror that serves another suite than the one asked for (a stale or misconfigured mirror) is refused. */
function checkSuite(release: Omit<AptRelease, 'signatureChecked'>, suite: string): void {
  const names = [...new Set([release.suite, release.codename].filter((x): x is string => x !== undefined))];
  if (names.length === 0) return;
  if (names.some((n) => n === suite || suite.startsWith(`${n}/`))) return;
  throw new FalcoProbesError('input', `the Release file is for suite ${names.map((n) => JSON.stringify(n)).join(' / ')}, not "${suite}"`, {
    location: { url: release.url },
    hint: 'the mirror serves another suite under this path; check the mirror URL and the suite of the source definition',
  });
}

/**
 * Parse the fields of a Release file that the resolver uses. Lines of the
 * `SHA256:` field are `<sha256> <size> <path>`; MD5Sum and other lists are ignored.
 */
export function parseReleaseText(text: string, url: string): Omit<AptRelease, 'signatureChecked'> {
  const files = new Map<string, ReleaseEntry>();
  let suite: string | undefined;
  let codename: string | undefined;
  let architectures: string[] | undefined;
  let validUntil: string | undefined;
  let field = '';
  let sawSha256 = false;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, '');
    if (line.trim() === '') {
      if (field !== '') break; // a Release file is one paragraph; the signature block would follow
      continue;
    }
    if (line[0] === ' ' || line[0] === '\t') {
      if (field === '') throw malformed(url, i + 1, 'a continuation line before any field');
      if (field !== 'sha256') continue;
      const m = /^\s+(\S+)\s+(\S+)\s+(\S+)\s*$/.exec(line);
      if (!m) throw malformed(url, i + 1, 'expected "<sha256> <size> <path>" in the SHA256 list');
      const [, sha, sizeText, path] = m as unknown as [string, string, string, string];
      const location = { url };
      checkSha256(sha, location);
      if (!/^[0-9]{1,15}$/.test(sizeText)) throw malformed(url, i + 1, `size ${JSON.stringify(sizeText)} is not a whole number`);
      checkRelativePath(path, location);
      files.set(path, { sha256: sha, size: Number(sizeText) });
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) throw malformed(url, i + 1, 'expected "Field: value"');
    const key = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1).trim();
    field = key;
    if (key === 'suite') suite = value;
    else if (key === 'codename') codename = value;
    else if (key === 'valid-until') validUntil = value;
    else if (key === 'architectures') architectures = value.split(/\s+/).filter((a) => a !== '');
    else if (key === 'sha256') sawSha256 = true;
  }
  if (!sawSha256)
    throw new FalcoProbesError('input', 'the Release file has no SHA256 list', {
      location: { url },
      hint: 'only repositories whose Release lists SHA256 checksums are supported',
    });
  return {
    url,
    files,
    ...(suite !== undefined ? { suite } : {}),
    ...(codename !== undefined ? { codename } : {}),
    ...(architectures !== undefined ? { architectures } : {}),
    ...(validUntil !== undefined ? { validUntil } : {}),
  };
}

function malformed(url: string, line: number, what: string): FalcoProbesError {
  return new FalcoProbesError('input', `malformed Release file at line ${line}: ${what}`, { location: { url } });
}

/**
 * The signed text of an OpenPGP clear-signed message, without checking the
 * signature (used only when the definition names no keyring). A plain,
 * unsigned Release text is returned as it is.
 */
export function clearsignedBody(text: string, url: string): string {
  const begin = '-----BEGIN PGP SIGNED MESSAGE-----';
  if (!text.startsWith(begin)) return text;
  const lines = text.split('\n').map((l) => l.replace(/\r$/, ''));
  let i = 1;
  while (i < lines.length && lines[i] !== '') i++; // armor headers ("Hash: SHA512")
  const body: string[] = [];
  for (i++; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === '-----BEGIN PGP SIGNATURE-----') return `${body.join('\n')}\n`;
    body.push(line.startsWith('- ') ? line.slice(2) : line);
  }
  throw new FalcoProbesError('input', 'clear-signed InRelease has no signature block', { location: { url } });
}

/**
 * Verify `data` with gpgv against `keyring` and return the signed text (gpgv's
 * `--output`). With `detached`, `data` is the signed file and `detached` the
 * signature. Refuses when gpgv fails or reports no valid signature.
 */
export async function gpgvVerify(keyring: string, url: string, data: Buffer, detached?: Buffer): Promise<string> {
  const home = await mkdtemp(join(tmpdir(), 'falco-probes-gpgv-'));
  try {
    const { writeFile } = await import('node:fs/promises');
    const dataFile = join(home, 'data');
    await writeFile(dataFile, data);
    const args = ['--homedir', home, '--status-fd', '3', '--keyring', keyring];
    if (detached) {
      const sigFile = join(home, 'data.sig');
      await writeFile(sigFile, detached);
      args.push('--', sigFile, dataFile);
    } else {
      args.push('--output', '-', '--', dataFile);
    }
    const { code, stdout, stderr, status } = await runGpgv(args, url);
    // As apt does: at least one valid signature by a key of the keyring and no bad one; a
    // second signature by a key the keyring lacks (an archive key rotation) is not an error.
    const valid = /^\[GNUPG:\] VALIDSIG /m.test(status);
    const bad = /^\[GNUPG:\] (BADSIG|EXPKEYSIG|REVKEYSIG) /m.test(status);
    const onlyMissingKeys = code !== 0 && /^\[GNUPG:\] NO_PUBKEY /m.test(status);
    if (!valid || bad || (code !== 0 && !onlyMissingKeys)) {
      throw new FalcoProbesError('checksum', `OpenPGP signature check failed with keyring ${keyring}; refusing this repository`, {
        location: { url },
        details: stderr
          .trim()
          .split('\n')
          .map((l) => `  ${l}`)
          .join('\n'),
        hint: 'the mirror may be tampered with or stale, or the keyring does not hold the archive key',
      });
    }
    return detached ? data.toString('utf8') : stdout.toString('utf8');
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

function runGpgv(args: string[], url: string): Promise<{ code: number; stdout: Buffer; stderr: string; status: string }> {
  return new Promise((resolve, reject) => {
    let child;
    try {
      child = spawn('gpgv', args, { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
    } catch (err) {
      reject(new FalcoProbesError('internal', `cannot run gpgv: ${(err as Error).message}`, { location: { url } }));
      return;
    }
    const out: Buffer[] = [];
    let stderr = '';
    let status = '';
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    (child.stdio[3] as NodeJS.ReadableStream).on('data', (d: Buffer) => (status += d.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), GPGV_TIMEOUT_MS);
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new FalcoProbesError('internal', err.code === 'ENOENT' ? 'gpgv is not installed' : `cannot run gpgv: ${err.message}`, {
          location: { url },
          hint: 'install gpgv (Debian package gpgv) or remove `keyring` from the source definition',
        }),
      );
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out), stderr, status });
    });
  });
}
