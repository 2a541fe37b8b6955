import { mkdir, mkdtemp, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { PackageRef } from '../config/types.js';
import { extractDeb } from '../fetch/extract-deb.js';
import { archiveFormatOf } from '../fetch/extract.js';
import { extractRpm } from '../fetch/extract-rpm.js';
import { extractTarball } from '../fetch/extract-tar.js';
import { TreeWriter, type ArchiveEntry } from '../fetch/extract-tree.js';
import type { ArchiveFormat } from '../fetch/types.js';
import { createDecompressor, sniffCompression } from '../util/decompress.js';
import { FalcoProbesError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { sha256File, sha256Hex } from '../util/hash.js';
import type { Logger } from '../util/log.js';
import { checkRelease, checkSha256 } from '../util/names.js';
import { processAlive } from '../util/process.js';
import { hasPvhEntryNote } from './elf-program.js';

// The bootable kernel of an image package (Debian's linux-image-*, a yum
// `kernel`), ready for qemu's -kernel:
//
// - Only the image is taken from the package, and reading stops right after
//   it: a Debian image package is 70 MB of xz holding 400 MB of modules, but
//   `boot/vmlinuz-*` is among its first entries (a whole extraction costs
//   10 s or more; this, a fraction of a second). Entries still pass the
//   fetch stage's checks (TreeWriter).
// - The compressed image (bzImage) is also unpacked to `vmlinux` when it
//   carries a PVH entry note: qemu then enters the kernel directly, without
//   the real-mode setup and the in-guest decompression, which under software
//   emulation halves the boot (FACTS: about 5 s instead of 9). The payload is
//   found through the boot protocol's header (payload_offset and
//   payload_length, protocol 2.08 and later), as the kernel's
//   extract-vmlinux finds it by its magic.
// - Both are kept per image package sha256 under the cache root, so each
//   kernel is unpacked once for all its probes and runs.

export interface KernelImage {
  /** The image as the package ships it (bzImage). */
  vmlinuz: string;
  /** sha256 of `vmlinuz`: the kernel image a verdict names. */
  sha256: string;
  /** The uncompressed kernel with a PVH entry, when one could be made: booted instead of vmlinuz. */
  vmlinux?: string;
  /** The release the image's file name gives (`boot/vmlinuz-<release>`). */
  release?: string;
}

/** What qemu should boot. */
export function bootFile(image: KernelImage): string {
  return image.vmlinux ?? image.vmlinuz;
}

const IMAGE_PATHS: RegExp[] = [
  /^boot\/(?:vmlinuz|vmlinux|bzImage)-(?<release>[^/]+)$/,
  /^(?:usr\/)?lib\/modules\/(?<release>[^/]+)\/vmlinuz$/,
];

function imagePath(name: string): { rel: string; release: string } | undefined {
  const rel = name.replace(/^(\.\/|\/)+/, '');
  for (const re of IMAGE_PATHS) {
    const m = re.exec(rel);
    if (m?.groups?.['release']) return { rel, release: m.groups['release'] };
  }
  return undefined;
}

/** Stops the archive reader once the image is out: thrown from the writer, caught below. */
class ImageFound extends FalcoProbesError {
  constructor() {
    super('internal', 'kernel image found');
  }
}

/** A TreeWriter that writes the kernel image only and ends the extraction at the entry after it. */
class ImageOnlyWriter extends TreeWriter {
  found: { rel: string; release: string } | undefined;

  override async add(entry: ArchiveEntry, data?: AsyncIterable<Uint8Array>): Promise<void> {
    if (this.found) throw new ImageFound();
    const image = entry.type === 'file' ? imagePath(entry.name) : undefined;
    if (image) {
      await super.add(entry, data);
      this.found = image;
      return;
    }
    if (entry.type === 'file' && data) for await (const _ of data) void _;
  }
}

/** Extract the kernel image of a package into `dir`; returns its path and the release its name gives. */
export async function extractKernelImage(
  file: string,
  format: ArchiveFormat,
  dir: string,
  signal?: AbortSignal,
): Promise<{ path: string; release: string }> {
  await mkdir(dir, { recursive: true });
  const writer = new ImageOnlyWriter(dir, { strip: 0, maxBytes: 512 * 1024 * 1024, maxEntries: 1_000_000, ...(signal ? { signal } : {}) });
  try {
    if (format === 'deb') await extractDeb(file, writer);
    else if (format === 'rpm') await extractRpm(file, writer);
    else await extractTarball(file, writer);
  } catch (err) {
    if (!(err instanceof ImageFound)) throw err;
  }
  if (!writer.found)
    throw new FalcoProbesError('input', 'the package holds no kernel image (boot/vmlinuz-<release> or lib/modules/<release>/vmlinuz)', {
      location: { file },
      hint: "the lockfile's `image` package must be the bootable kernel (Debian: linux-image-<release> or -unsigned; yum: kernel or kernel-core)",
    });
  return { path: join(dir, writer.found.rel), release: writer.found.release };
}

const SETUP_HEADER_MAGIC = 0x53726448; // "HdrS"
const MAX_KERNEL_BYTES = 512 * 1024 * 1024;

/**
 * The kernel inside a bzImage, uncompressed, if the image says where its
 * payload is and the payload is gzip, xz or zstd; undefined otherwise.
 * The kernel's build appends the uncompressed size (4 bytes) to xz and
 * zstd payloads: when the last 4 bytes say so, they are left out.
 */
export async function uncompressBzImage(bz: Buffer): Promise<Buffer | undefined> {
  if (bz.length < 0x250 || bz.readUInt32LE(0x202) !== SETUP_HEADER_MAGIC || bz.readUInt16LE(0x206) < 0x0208) return undefined;
  const setupSectors = bz[0x1f1] || 4;
  const start = (setupSectors + 1) * 512 + bz.readUInt32LE(0x248);
  const length = bz.readUInt32LE(0x24c);
  if (length < 16 || start + length > bz.length) return undefined;
  const payload = bz.subarray(start, start + length);
  const compression = sniffCompression(payload);
  if (compression === 'none') return undefined;
  const appended = payload.readUInt32LE(payload.length - 4);
  const tries = compression !== 'gz' && appended > payload.length ? [payload.subarray(0, payload.length - 4), payload] : [payload];
  for (const bytes of tries) {
    try {
      const chunks: Buffer[] = [];
      let total = 0;
      const decompressor = createDecompressor(compression);
      Readable.from([bytes]).pipe(decompressor);
      for await (const c of decompressor) {
        total += (c as Buffer).length;
        // A kernel is tens of megabytes; a payload that says otherwise is not one.
        if (total > MAX_KERNEL_BYTES) {
          decompressor.destroy();
          return undefined;
        }
        chunks.push(c as Buffer);
      }
      const out = Buffer.concat(chunks);
      if (bytes.length !== payload.length && out.length !== appended) continue;
      return out;
    } catch {
      // the next try, or no uncompressed kernel
    }
  }
  return undefined;
}

interface CachedImageInfo {
  vmlinuzSha256: string;
  release: string;
  /** Size of vmlinux, or 0 when there is none (booted as bzImage). */
  vmlinuxSize: number;
}

const INFO_FILE = 'image.json';

async function readCached(dir: string): Promise<KernelImage | undefined> {
  try {
    const info = JSON.parse(await readFile(join(dir, INFO_FILE), 'utf8')) as CachedImageInfo;
    const vmlinuz = join(dir, 'vmlinuz');
    // 8 MB: cheap to re-hash, and a damaged cache entry must not boot.
    if ((await sha256File(vmlinuz)).sha256 !== info.vmlinuzSha256) return undefined;
    if (info.vmlinuxSize > 0 && (await stat(join(dir, 'vmlinux'))).size !== info.vmlinuxSize) return undefined;
    return {
      vmlinuz,
      sha256: info.vmlinuzSha256,
      release: info.release,
      ...(info.vmlinuxSize > 0 ? { vmlinux: join(dir, 'vmlinux') } : {}),
    };
  } catch {
    return undefined;
  }
}

export interface KernelImageCache {
  readonly root: string;
  /** The image of an image package (fetched to `file`), unpacked once per package sha256. */
  prepare(pkg: PackageRef, file: string, options?: { signal?: AbortSignal }): Promise<KernelImage>;
}

/** `<root>/<package sha256>/{vmlinuz, vmlinux, image.json}`; concurrent callers for one package share one unpacking. */
export function createKernelImageCache(root: string, logger?: Logger): KernelImageCache {
  const inFlight = new Map<string, Promise<KernelImage>>();
  const prepareOnce = async (pkg: PackageRef, file: string, signal?: AbortSignal): Promise<KernelImage> => {
    const sha = checkSha256(pkg.sha256);
    const dir = join(root, sha);
    const cached = await readCached(dir);
    if (cached) return cached;
    await mkdir(root, { recursive: true });
    await sweepStale(root);
    const tmp = await mkdtemp(join(root, `.${sha}.tmp-${process.pid}-`));
    try {
      const t0 = performance.now();
      const found = await extractKernelImage(file, archiveFormatOf(pkg.path), join(tmp, 'package'), signal);
      const release = checkRelease(found.release, { file });
      const bz = await readFile(found.path);
      await writeFile(join(tmp, 'vmlinuz'), bz);
      const vmlinux = await uncompressBzImage(bz);
      const pvh = vmlinux !== undefined && hasPvhEntryNote(vmlinux);
      if (pvh) await writeFile(join(tmp, 'vmlinux'), vmlinux);
      else
        logger?.debug(
          `${pkg.name}: ${vmlinux ? 'the uncompressed kernel has no PVH entry note' : 'no uncompressed kernel could be made'}; booting the bzImage`,
        );
      await rm(join(tmp, 'package'), { recursive: true, force: true });
      const info: CachedImageInfo = { vmlinuzSha256: sha256Hex(bz), release, vmlinuxSize: pvh ? vmlinux.length : 0 };
      await writeFileAtomic(join(tmp, INFO_FILE), `${JSON.stringify(info, null, 2)}\n`);
      try {
        await rename(tmp, dir);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
        // Another process unpacked the same package first; its result is as good.
        const theirs = await readCached(dir);
        if (!theirs) throw err;
        return theirs;
      }
      logger?.debug(`${pkg.name}: kernel image ${release} unpacked in ${Math.round(performance.now() - t0)} ms`);
      return { vmlinuz: join(dir, 'vmlinuz'), sha256: info.vmlinuzSha256, release, ...(pvh ? { vmlinux: join(dir, 'vmlinux') } : {}) };
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  };
  return {
    root,
    prepare(pkg, file, options = {}) {
      let p = inFlight.get(pkg.sha256);
      if (!p) {
        p = prepareOnce(pkg, file, options.signal).finally(() => inFlight.delete(pkg.sha256));
        inFlight.set(pkg.sha256, p);
      }
      return p;
    },
  };
}

/** Temporary folders of killed processes. */
async function sweepStale(root: string): Promise<void> {
  for (const name of await readdir(root).catch(() => [] as string[])) {
    const m = /^\.[0-9a-f]{64}\.tmp-(\d+)-/.exec(name);
    if (m && Number(m[1]) !== process.pid && !processAlive(Number(m[1]))) await rm(join(root, name), { recursive: true, force: true });
  }
}
