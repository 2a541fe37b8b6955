import { createReadStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { FalcoProbesError } from '../util/errors.js';
import { createDecompressor, sniffFileCompression } from '../util/decompress.js';
import type { DriverPin } from '../config/types.js';
import { downloadTarball, driverTarballPath, temporaryBeside, type TarballDownloadOptions } from './driver-source.js';

// `falco-probes pin`: the sha256 of a driver tarball, computed from the
// bytes downloaded here and nowhere else. The download takes the same path
// as a build's (driver-source.ts: every --driver-mirror rewrite in order,
// file:// mirrors, retries). Before it is accepted the tarball must read as
// a tar archive holding the driver's bpfDir (after `strip`), so an error
// page or the wrong archive is not pinned. An accepted tarball stays in the
// cache under its sha256, where a build looks for it first.

export interface PinnedSource {
  sha256: string;
  size: number;
  /** Entries in the archive. */
  entries: number;
  /** The URL the bytes came from (after --driver-mirror rewrites). */
  from: string;
}

export async function downloadDriverTarball(driver: DriverPin, o: TarballDownloadOptions & { cacheDir: string }): Promise<PinnedSource> {
  const source = driver.source;
  if (!('url' in source))
    throw new FalcoProbesError(
      'usage',
      `driver ${driver.name} has a local source; its identity is its tree hash and there is nothing to pin`,
    );
  const part = temporaryBeside(driverTarballPath(o.cacheDir, 'pin'), 'part');
  await mkdir(dirname(part), { recursive: true });
  try {
    let sha256 = '';
    const from = await downloadTarball(driver, source.url, part, o, (got) => {
      sha256 = got;
    });
    const entries = await listTarball(part, from);
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
          location: { url: from },
          hint: 'check the URL, `strip` and `bpfDir` in kernels/drivers.yaml',
        },
      );
    const { size } = await stat(part);
    await rename(part, driverTarballPath(o.cacheDir, sha256));
    return { sha256, size, entries: entries.length, from };
  } finally {
    await rm(part, { force: true });
  }
}

async function listTarball(file: string, url: string): Promise<string[]> {
  const names: string[] = [];
  const extract = tar.extract();
  const done = pipeline(createReadStream(file), createDecompressor(await sniffFileCompression(file)), extract).catch((err: unknown) => err);
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
