import { execFile, spawn, spawnSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import type { PackageRef } from '../../src/config/types.js';
import { writeFileAtomic } from '../../src/util/fs.js';
import { sha256File } from '../../src/util/hash.js';
import { checkPackageName, checkRelativePath, checkSha256, checkVersion } from '../../src/util/names.js';
import { obtainDebianKernels, TEST_CACHE_DIR, withDownloadLock, type DebianKernel } from './kernel-headers.js';

// A real, bootable Debian 12 kernel for verify-load's tests: the image
// package (linux-image-<release>, or -unsigned where bookworm-security has
// only that) of the newest 6.1.0-N-amd64 kernel whose headers the
// kernel-headers helper chose, so a probe built against those headers can be
// loaded into this very kernel. The .deb is fetched once with `apt-get
// download` into the persistent test cache and checked against apt's index;
// a manifest lets later runs work without apt's index.
//
//   const r = await obtainDebianKernelImage();
//   if (!r.ok) return t.skip(r.skip);
//   r.image.ref        // the package as a lockfile lists it (role image)
//   r.image.debPath    // the .deb in the cache

const execFileAsync = promisify(execFile);
const DEBS_DIR = join(TEST_CACHE_DIR, 'debs');
const MANIFESTS_DIR = join(TEST_CACHE_DIR, 'images');

export interface DebianKernelImage {
  /** The kernel (headers, common, kbuild) whose image this is. */
  kernel: DebianKernel;
  name: string;
  version: string;
  /** `pool/...` path in the archive. */
  filename: string;
  sha256: string;
  size: number;
  debPath: string;
  /** The package as a lockfile lists it. */
  ref: PackageRef;
}

export type KernelImageResult = { ok: true; image: DebianKernelImage } | { ok: false; skip: string };

interface Manifest {
  release: string;
  name: string;
  version: string;
  filename: string;
  sha256: string;
  size: number;
}

async function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<string> {
  const { stdout } = await execFileAsync(cmd, args, {
    cwd: opts.cwd,
    timeout: opts.timeoutMs ?? 60_000,
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, LC_ALL: 'C' },
  });
  return stdout;
}

function field(stanza: string, name: string): string | undefined {
  return new RegExp(`^${name}: (.*)$`, 'm').exec(stanza)?.[1]?.trim();
}

/** The image package of `kernel` in apt's index: same version as its headers; the signed name first. */
async function fromIndex(kernel: DebianKernel): Promise<Manifest | undefined> {
  const names = [`linux-image-${kernel.release}`, `linux-image-${kernel.release}-unsigned`];
  let text = '';
  try {
    text = await run('apt-cache', ['show', ...names]);
  } catch (err) {
    // apt-cache exits non-zero when one name has no stanza; it still prints the others.
    text = (err as { stdout?: string }).stdout ?? '';
  }
  const stanzas = text.split(/\n\s*\n/).filter((s) => s.trim() !== '');
  for (const name of names) {
    const s = stanzas.find((st) => field(st, 'Package') === name && field(st, 'Version') === kernel.version);
    if (!s) continue;
    return {
      release: kernel.release,
      name: checkPackageName(name),
      version: checkVersion(field(s, 'Version') ?? ''),
      filename: checkRelativePath(field(s, 'Filename') ?? ''),
      sha256: checkSha256(field(s, 'SHA256') ?? ''),
      size: Number(field(s, 'Size')),
    };
  }
  return undefined;
}

async function cachedOk(path: string, m: Manifest): Promise<boolean> {
  try {
    if ((await stat(path)).size !== m.size) return false;
    return (await sha256File(path)).sha256 === m.sha256;
  } catch {
    return false;
  }
}

async function download(m: Manifest, dest: string): Promise<void> {
  await mkdir(DEBS_DIR, { recursive: true });
  const tmp = await mkdtemp(join(DEBS_DIR, '.download-'));
  try {
    // apt downloads as the unprivileged _apt user, which must be able to write here.
    await chmod(tmp, 0o777);
    await run('apt-get', ['download', '-q', `${m.name}=${m.version}`], { cwd: tmp, timeoutMs: 300_000 });
    const file = (await readdir(tmp)).find((f) => f.startsWith(`${m.name}_`) && f.endsWith('.deb'));
    if (!file) throw new Error(`apt-get download left no .deb for ${m.name}=${m.version}`);
    const got = await sha256File(join(tmp, file));
    if (got.sha256 !== m.sha256 || got.size !== m.size)
      throw new Error(
        `${m.name}=${m.version}: downloaded sha256 ${got.sha256} (${got.size} bytes), index says ${m.sha256} (${m.size} bytes)`,
      );
    await rename(join(tmp, file), dest);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

function toImage(kernel: DebianKernel, m: Manifest, repository: string): DebianKernelImage {
  const debPath = join(DEBS_DIR, basename(m.filename));
  return {
    kernel,
    name: m.name,
    version: m.version,
    filename: m.filename,
    sha256: m.sha256,
    size: m.size,
    debPath,
    ref: { name: m.name, version: m.version, role: 'image', repository, path: m.filename, sha256: m.sha256, size: m.size },
  };
}

let memo: Promise<KernelImageResult> | undefined;

/** The 6.1 kernel's image package in the test cache; memoized per process. */
export function obtainDebianKernelImage(repository = 'bookworm-security'): Promise<KernelImageResult> {
  memo ??= obtain(repository);
  return memo;
}

/** The image, and the commands that boot it and load a probe in it (qemu, bpftool, busybox; clang compiles the probe): a load test's needs. */
export async function obtainLoadTestHost(repository = 'bookworm-security'): Promise<KernelImageResult> {
  const r = await obtainDebianKernelImage(repository);
  if (!r.ok) return r;
  const missing = ['qemu-system-x86_64', 'bpftool', 'busybox', 'clang'].filter(
    (cmd) => spawnSync('sh', ['-c', `command -v ${cmd} || test -x /usr/sbin/${cmd}`]).status !== 0,
  );
  return missing.length ? { ok: false, skip: `not installed: ${missing.join(', ')} (scripts/setup-debian.sh installs them)` } : r;
}

async function obtain(repository: string): Promise<KernelImageResult> {
  const headers = await obtainDebianKernels();
  if (!headers.ok) return headers;
  const kernel = headers.kernels.find((k) => k.series === '6.1');
  if (!kernel) return { ok: false, skip: 'no Debian 6.1 kernel headers' };
  const manifestFile = join(MANIFESTS_DIR, `${kernel.release}.json`);
  let manifest = await fromIndex(kernel);
  if (manifest) {
    const debPath = join(DEBS_DIR, basename(manifest.filename));
    if (!(await cachedOk(debPath, manifest))) {
      if (process.getuid?.() !== 0)
        return {
          ok: false,
          skip: `the kernel image ${manifest.name} is not cached in ${DEBS_DIR} and fetching it needs root (apt-get download)`,
        };
      const m = manifest;
      await withDownloadLock(async () => {
        if (!(await cachedOk(debPath, m))) await download(m, debPath);
      });
    }
    await mkdir(MANIFESTS_DIR, { recursive: true });
    await writeFileAtomic(manifestFile, `${JSON.stringify(manifest, null, 2)}\n`);
    return { ok: true, image: toImage(kernel, manifest, repository) };
  }
  try {
    manifest = JSON.parse(await readFile(manifestFile, 'utf8')) as Manifest;
  } catch {
    return {
      ok: false,
      skip: `apt's index has no linux-image-${kernel.release} (or -unsigned) of version ${kernel.version}; run apt-get update`,
    };
  }
  const image = toImage(kernel, manifest, repository);
  if (!(await cachedOk(image.debPath, manifest)))
    return { ok: false, skip: `the cached ${basename(image.debPath)} is missing or damaged and apt's index does not list it` };
  return { ok: true, image };
}

/**
 * The bzImage as dpkg's own tools extract it (`dpkg-deb --fsys-tarfile | tar
 * -x --occurrence`), to check the tool's extractor against. tar stops at the
 * first match, so this reads only the start of the package.
 */
export async function extractVmlinuzWithDpkg(image: DebianKernelImage, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const member = `./boot/vmlinuz-${image.kernel.release}`;
  await new Promise<void>((resolve, reject) => {
    const dpkg = spawn('dpkg-deb', ['--fsys-tarfile', image.debPath], { stdio: ['ignore', 'pipe', 'ignore'] });
    const tar = spawn('tar', ['-x', '-f', '-', '-C', dir, '--occurrence=1', member], { stdio: ['pipe', 'ignore', 'pipe'] });
    dpkg.stdout.pipe(tar.stdin);
    // tar closes its input after the member; dpkg-deb then dies of SIGPIPE, which is expected.
    tar.stdin.on('error', () => undefined);
    let err = '';
    tar.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => {
      dpkg.kill('SIGKILL');
      tar.kill('SIGKILL');
    }, 120_000);
    tar.on('close', (code) => {
      clearTimeout(timer);
      dpkg.kill('SIGKILL');
      if (code === 0) resolve();
      else reject(new Error(`tar exited with ${code}: ${err}`));
    });
  });
  return join(dir, 'boot', `vmlinuz-${image.kernel.release}`);
}

/** The bootable image package of a real Debian kernel (same version as its headers), in the test cache; fetched with apt-get download once. */
export async function imagePackage(kernel: DebianKernel): Promise<{ ref: PackageRef; debPath: string } | { skip: string }> {
  const names = [`linux-image-${kernel.release}`, `linux-image-${kernel.release}-unsigned`];
  const show = spawnSync('apt-cache', ['show', ...names], {
    encoding: 'utf8',
    env: { ...process.env, LC_ALL: 'C' },
    maxBuffer: 16 * 1024 * 1024,
  });
  const stanzas = (show.stdout ?? '').split(/\n\s*\n/);
  for (const name of names) {
    const s = stanzas.find((st) => field(st, 'Package') === name && field(st, 'Version') === kernel.version);
    if (!s) continue;
    const path = field(s, 'Filename')!;
    const sha256 = field(s, 'SHA256')!;
    const size = Number(field(s, 'Size'));
    const debPath = join(DEBS_DIR, basename(path));
    const isCached = async () => (await sha256File(debPath).catch(() => undefined))?.sha256 === sha256;
    if (!(await isCached())) {
      if (process.getuid?.() !== 0) return { skip: `${name} is not cached in ${DEBS_DIR} and fetching it needs root (apt-get download)` };
      await mkdir(DEBS_DIR, { recursive: true });
      await withDownloadLock(async () => {
        if (await isCached()) return;
        const tmp = await mkdtemp(join(DEBS_DIR, '.download-'));
        try {
          await chmod(tmp, 0o777);
          await execFileAsync('apt-get', ['download', '-q', `${name}=${kernel.version}`], { cwd: tmp, timeout: 300_000 });
          const file = (await readdir(tmp)).find((f) => f.endsWith('.deb'))!;
          const got = (await sha256File(join(tmp, file))).sha256;
          if (got !== sha256) throw new Error(`${name}: the download (${got}) does not match apt's index (${sha256})`);
          await rename(join(tmp, file), debPath);
        } finally {
          await rm(tmp, { recursive: true, force: true });
        }
      });
    }
    return { ref: { name, version: kernel.version, role: 'image', repository: 'bookworm-security', path, sha256, size }, debPath };
  }
  return { skip: `apt's index has no ${names[0]} (or -unsigned) of version ${kernel.version}; run apt-get update` };
}
