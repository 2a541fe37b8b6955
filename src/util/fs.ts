import { randomBytes } from 'node:crypto';
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { fileSystemError } from './errors.js';

/** A temporary name in the folder of `path` (hidden, this process's, random), to be renamed over it. */
function tempPathBeside(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

/**
 * Write a file so that a reader sees the old bytes or the new bytes, never a
 * mix: write a temporary file beside it, fsync, then rename over the target.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = tempPathBeside(path);
  try {
    const fh = await open(tmp, 'w', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw fileSystemError(err, path);
  }
}

/**
 * Write a cache file: atomically (a temporary file renamed over it), but
 * without waiting for the disk (no fsync), and synchronously. Only for files
 * whose reader checks every byte it uses (a memo's sections carry their
 * sha256): after a crash such a file may be empty or old, which its reader
 * takes as a miss. Writing the graph memo (2 MB) with its fsync took 12 to
 * 46 ms of a `generate` here, for nothing the next run would notice.
 */
export function writeCacheFileSync(path: string, data: string | Uint8Array): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = tempPathBeside(path);
  try {
    writeFileSync(tmp, data, { mode: 0o644 });
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw fileSystemError(err, path);
  }
}

/** Write only when the bytes differ, so unchanged files keep their modification time. Returns true when written. */
export async function writeFileIfChanged(path: string, data: string | Uint8Array): Promise<boolean> {
  const wanted = typeof data === 'string' ? Buffer.from(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
  const current = await readFileOrUndefined(path);
  if (current?.equals(wanted)) return false;
  await writeFileAtomic(path, wanted);
  return true;
}

export async function readFileOrUndefined(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
