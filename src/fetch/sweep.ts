import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { processAlive } from '../util/process.js';

// Every temporary name this tool makes carries its owner's pid, and is swept
// by a later run once that process is gone:
//   .<name>.extract-<pid>-XXXXXX    extract.ts (mkdtemp)
//   .<name>.old-<pid>-<8 hex>       extract.ts (a replaced tree on its way out)
//   .<name>.<pid>.<8 hex>.tmp       util/fs.ts writeFileAtomic, unpacked trees, kernel roots
//   .<name>.<pid>.<8 hex>.part      downloads (package cache)
//   <name>.<pid>.<8 hex>.tmp|part   driver trees and tarballs (run/driver-source.ts, in drivers/: no leading dot)
// A process that is alive here keeps its temporaries. (Caches shared by
// processes in other pid namespaces are not supported: their pids are not
// visible here.)

const FORMS: readonly RegExp[] = [
  /^\..+\.extract-(\d+)-[A-Za-z0-9]{6}$/,
  /^\..+\.old-(\d+)-[0-9a-f]{8}$/,
  /^.+\.(\d+)\.[0-9a-f]{8}\.(?:tmp|part)$/,
];

/** The pid that owns a temporary name of this tool, or undefined when `name` is not one. */
export function temporaryOwner(name: string): number | undefined {
  for (const form of FORMS) {
    const m = form.exec(name);
    if (m) return Number(m[1]);
  }
  return undefined;
}

/** Remove the temporaries of dead processes directly in `dir`. Returns the names removed. */
export async function sweepTemporaries(dir: string): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const removed: string[] = [];
  for (const name of names) {
    const pid = temporaryOwner(name);
    if (pid === undefined || pid === process.pid || processAlive(pid)) continue;
    await rm(join(dir, name), { recursive: true, force: true }).catch(() => {});
    removed.push(name);
  }
  return removed;
}

/**
 * Sweep the package cache's folders: its sha256/ shards, unpacked trees,
 * kernel roots, their manifests, driver sources. A few hundred readdirs.
 */
export async function sweepCacheTemporaries(cacheDir: string): Promise<string[]> {
  const dirs = [
    cacheDir,
    join(cacheDir, 'trees'),
    join(cacheDir, 'kernel-roots'),
    join(cacheDir, 'trees-manifests'),
    join(cacheDir, 'kernel-roots-manifests'),
    join(cacheDir, 'drivers'),
  ];
  const shards = await readdir(join(cacheDir, 'sha256')).catch(() => [] as string[]);
  dirs.push(...shards.filter((s) => /^[0-9a-f]{2}$/.test(s)).map((s) => join(cacheDir, 'sha256', s)));
  const removed: string[] = [];
  for (const dir of dirs) for (const name of await sweepTemporaries(dir)) removed.push(join(dir, name));
  return removed;
}
