import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { FalcoProbesError } from '../util/errors.js';
import { sha256Hex } from '../util/hash.js';
import { httpGetBuffer, type HttpOptions } from '../util/http.js';
import { createDecompressor, sniffCompression } from '../util/decompress.js';
import type { DriverPin } from '../config/types.js';

// `falco-probes pin`: the sha256 of a driver tarball, computed from the
// bytes downloaded here and nowhere else. Before it is accepted the tarball
// must read as a tar archive holding the driver's bpfDir (after `strip`), so
// an error page or the wrong archive is not pinned.

/** Driver source tarballs are tens of megabytes; anything far larger is not one. */
export const MAX_DRIVER_TARBALL_BYTES = 512 * 1024 * 1024;

export interface PinnedSource {
  sha256: string;
  size: number;
  /** Entries in the archive. */
  entries: number;
}

export async function downloadDriverTarball(driver: DriverPin, http: HttpOptions = {}): Promise<PinnedSource> {
  const source = driver.source;
  if (!('url' in source))
    throw new FalcoProbesError(
      'usage',
      `driver ${driver.name} has a local source; its identity is its tree hash and there is nothing to pin`,
    );
  const body = await httpGetBuffer(source.url, { maxBytes: MAX_DRIVER_TARBALL_BYTES, ...http });
  const entries = await listTarball(body, source.url);
  const strip = source.strip ?? 0;
  const stripped = entries
    .map((name) =>
      name
        .replace(/^\.\//, '')
        .split('/')
        .filter((s) => s !== '' && s !== '.'),
    )
    .filter((parts) => parts.length > strip)
    .map((parts) => parts.slice(strip).join('/'));
  const dir = driver.bpfDir === '.' ? '' : `${driver.bpfDir}/`;
  if (!stripped.some((p) => dir === '' || p.startsWith(dir) || `${p}/` === dir))
    throw new FalcoProbesError(
      'input',
      `driver ${driver.name}: the tarball has no ${driver.bpfDir}/ after dropping ${strip} leading path component(s); not pinning it`,
      {
        location: { url: source.url },
        hint: 'check the URL, `strip` and `bpfDir` in kernels/drivers.yaml',
      },
    );
  return { sha256: sha256Hex(body), size: body.length, entries: entries.length };
}

async function listTarball(body: Buffer, url: string): Promise<string[]> {
  const names: string[] = [];
  const extract = tar.extract();
  const done = pipeline(Readable.from([body]), createDecompressor(sniffCompression(body.subarray(0, 6))), extract).catch(
    (err: unknown) => err,
  );
  try {
    for await (const entry of extract) {
      names.push(entry.header.name);
      entry.resume();
    }
  } catch (err) {
    throw new FalcoProbesError('input', `not a readable tarball: ${(err as Error).message}`, { location: { url } });
  }
  const err = await done;
  if (err) throw new FalcoProbesError('input', `not a readable tarball: ${(err as Error).message}`, { location: { url } });
  if (names.length === 0) throw new FalcoProbesError('input', 'not a tarball (no entries)', { location: { url } });
  return names;
}
