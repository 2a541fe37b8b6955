import { chmod, chown, lstat, mkdir, readFile, readdir, realpath, symlink, writeFile } from 'node:fs/promises';
import { join, posix, relative } from 'node:path';
import type { KernelDescriptor } from '../config/types.js';
import { FalcoProbesError } from '../util/errors.js';
import { checkOsReleaseEntry, checkRelease, checkUnameVersion } from '../util/names.js';
import type { ContainerMount } from './docker-container.js';
import { findKernelDir, resolveInRoot } from './kernel-tree.js';

// What a build container sees: the kernel's extracted packages at the very
// paths the packages put them (so Debian's absolute include of the -common
// Makefile and the headers' links into linux-kbuild resolve as on a real
// system), /lib/modules/<release>/build, os-release and uname of the target
// kernel, also under /host as falco-driver-loader looks for them; nothing
// else of the host. Every kernel file is read-only.

/** The unprivileged user of the builder image (builder/Dockerfile). */
export const BUILD_UID = 1717;
export const BUILD_GID = 1717;

/** Where the uname shim and its values live in the container; the shim's folder goes first on PATH. */
export const MOCK_DIR = '/opt/falco-probes/mock';
export const MOCK_BIN_DIR = `${MOCK_DIR}/bin`;
export const UNAME_VALUES_FILE = `${MOCK_DIR}/uname.values`;
export const CONTAINER_HOSTNAME = 'falco-probes';
export const CONTAINER_PATH = `${MOCK_BIN_DIR}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`;

/** The work directory's parts (host side). */
export const WORK = {
  /** The driver's prepared source (the recipe's copy), mounted read-only. */
  source: 'source',
  /** The writable build directory (kbuild's M= tree lives here). */
  build: 'build',
  /** The driver loader's ~/.falco. */
  out: 'out',
  mock: 'mock',
  modules: 'modules',
} as const;

export interface KernelMounts {
  /** Where make -C goes in the container: the headers directory's own path (`/usr/src/linux-headers-<release>`). */
  kernelDir: string;
  mounts: ContainerMount[];
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isDirectory();
  } catch {
    return false;
  }
}

function virtualPath(root: string, real: string): string {
  return `/${relative(root, real).split('\\').join('/')}`;
}

// A kernel package must not put a tree where the container keeps its own.
const RESERVED_TARGETS = ['/work', '/opt/falco-probes', '/lib/modules', '/usr/lib/modules', '/host', '/etc', '/tmp', '/home'];
// Paths a mount target may take: what the names rules allow in package file names.
const MOUNT_PATH_RE = /^\/[A-Za-z0-9._+~@,/-]+$/;

/**
 * The kernel trees to mount: every entry of usr/src, each linux-kbuild-* of
 * usr/lib, and whatever the headers directory's links or its Makefile's
 * absolute includes point at outside those. Mounted at their own paths and
 * again under /host.
 */
export async function kernelMounts(kernelRoot: string, release: string): Promise<KernelMounts> {
  checkRelease(release);
  const root = await realpath(kernelRoot);
  const { dir: headersDir } = await findKernelDir(root, release);
  const trees = new Map<string, string>(); // container path -> real path

  const add = (target: string, real: string, origin: string) => {
    if (!MOUNT_PATH_RE.test(target) || target.split('/').includes('..'))
      throw new FalcoProbesError(
        'input',
        `refusing kernel tree path ${JSON.stringify(target)}: only letters, digits and . _ + ~ @ , - / are allowed`,
        {
          location: { file: origin },
        },
      );
    if (RESERVED_TARGETS.some((r) => target === r || target.startsWith(`${r}/`)))
      throw new FalcoProbesError('input', `the kernel's packages hold ${target}, a path the build container reserves`, {
        location: { file: origin },
      });
    for (const have of trees.keys()) if (target === have || target.startsWith(`${have}/`)) return; // already inside a mounted tree
    for (const have of [...trees.keys()]) if (have.startsWith(`${target}/`)) trees.delete(have);
    trees.set(target, real);
  };

  for (const [parent, keep] of [
    ['/usr/src', () => true],
    ['/usr/lib', (n: string) => n.startsWith('linux-kbuild-')],
  ] as const) {
    let names: string[] = [];
    try {
      names = (await readdir(join(root, parent))).sort();
    } catch {
      continue;
    }
    for (const name of names) {
      if (!keep(name)) continue;
      const real = await resolveInRoot(root, `${parent}/${name}`);
      if (real !== undefined && (await isDir(real))) add(`${parent}/${name}`, real, join(root, parent, name));
    }
  }

  // Links and absolute includes that leave the trees above (other layouts than Debian's).
  const headersVirtual = virtualPath(root, headersDir);
  const referenced: string[] = [];
  for (const name of (await readdir(headersDir)).sort()) {
    const entry = join(headersDir, name);
    if ((await lstat(entry)).isSymbolicLink()) {
      const real = await resolveInRoot(root, posix.join(headersVirtual, name));
      // A dangling link is left alone: kbuild reports it if the build needs it.
      if (real !== undefined && (await isDir(real))) referenced.push(real);
    }
  }
  try {
    for (const line of (await readFile(join(headersDir, 'Makefile'), 'utf8')).split('\n')) {
      const m = /^\s*(?:-include|sinclude|include)\s+(\/\S+)\s*$/.exec(line);
      const real = m ? await resolveInRoot(root, posix.dirname(m[1]!)) : undefined;
      if (real !== undefined && (await isDir(real))) referenced.push(real);
    }
  } catch {
    // no Makefile: kbuild will say so
  }
  for (const real of referenced) add(virtualPath(root, real), real, real);
  // The headers directory itself, when it lies outside usr/src (a lib/modules/<release>/build tree).
  add(headersVirtual, headersDir, headersDir);

  const mounts: ContainerMount[] = [];
  for (const [target, source] of [...trees.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    mounts.push({ source, target, readOnly: true });
    mounts.push({ source, target: `/host${target}`, readOnly: true });
  }
  return { kernelDir: headersVirtual, mounts };
}

/** os-release text from the descriptor's map: KEY="value" lines, each value checked by the names rules. */
export function osReleaseText(osRelease: Record<string, string>, origin: string): string {
  const lines: string[] = [];
  for (const [key, value] of Object.entries(osRelease)) {
    checkOsReleaseEntry(key, value, { file: origin });
    lines.push(`${key}="${value}"`);
  }
  return `${lines.join('\n')}\n`;
}

/** The uname shim's values: release, version, machine, nodename, one per line (never part of a shell text). */
export function unameValuesText(kernel: KernelDescriptor): string {
  checkRelease(kernel.release);
  checkUnameVersion(kernel.version);
  if (kernel.machine !== 'x86_64' && kernel.machine !== 'aarch64')
    throw new FalcoProbesError('input', `refusing uname -m ${JSON.stringify(kernel.machine)}: expected x86_64 or aarch64`);
  return `${kernel.release}\n${kernel.version}\n${kernel.machine}\n${CONTAINER_HOSTNAME}\n`;
}

export interface ContainerUser {
  uid: number;
  gid: number;
}

/**
 * Who builds inside the container: never root. When this process is root,
 * the builder image's build user (the work directory is handed to it); else
 * this process's own uid and gid, so that everything the build writes stays
 * removable by the caller.
 */
export function containerUser(override?: string): ContainerUser {
  if (override !== undefined) {
    const m = /^(\d{1,9}):(\d{1,9})$/.exec(override);
    if (!m) throw new FalcoProbesError('usage', `the Docker build user must be UID:GID (numbers), got ${JSON.stringify(override)}`);
    return { uid: Number(m[1]), gid: Number(m[2]) };
  }
  const uid = process.getuid?.() ?? BUILD_UID;
  const gid = process.getgid?.() ?? BUILD_GID;
  return uid === 0 ? { uid: BUILD_UID, gid: BUILD_GID } : { uid, gid };
}

/** A directory the container's user may write (it is private to one target). */
export async function makeWritableFor(dir: string, user: ContainerUser): Promise<void> {
  await mkdir(dir, { recursive: true });
  if (process.getuid?.() === 0) await chown(dir, user.uid, user.gid);
  else if (process.getuid?.() !== user.uid) await chmod(dir, 0o777);
}

/** Let anyone read a tree (the driver's prepared copy, made with the caller's umask) so the container's user can. */
export async function makeReadableByAll(dir: string): Promise<void> {
  const st = await lstat(dir);
  if (st.isSymbolicLink()) return;
  const wanted = st.mode | 0o444 | (st.isDirectory() || st.mode & 0o111 ? 0o111 : 0);
  if ((st.mode & 0o777) !== (wanted & 0o777)) await chmod(dir, wanted & 0o7777);
  if (st.isDirectory()) for (const name of await readdir(dir)) await makeReadableByAll(join(dir, name));
}

/**
 * Write the mocks into `workDir` and return their mounts: os-release (also
 * /host/etc/os-release), the uname values, /etc/hosts and /etc/resolv.conf of
 * our own, and /lib/modules/<release>/build (also under /host) as a link to
 * the headers, as a real system has it.
 */
export async function mockMounts(opts: {
  workDir: string;
  kernel: KernelDescriptor;
  osRelease: Record<string, string>;
  kernelDir: string;
  origin: string;
}): Promise<ContainerMount[]> {
  const mockDir = join(opts.workDir, WORK.mock);
  await mkdir(mockDir, { recursive: true });
  const osRelease = join(mockDir, 'os-release');
  await writeFile(osRelease, osReleaseText(opts.osRelease, opts.origin), { mode: 0o644 });
  const uname = join(mockDir, 'uname.values');
  await writeFile(uname, unameValuesText(opts.kernel), { mode: 0o644 });

  // Docker would otherwise copy the host's resolver configuration in.
  const resolvConf = join(mockDir, 'resolv.conf');
  await writeFile(resolvConf, '# no network in a falco-probes build\n', { mode: 0o644 });
  const hosts = join(mockDir, 'hosts');
  await writeFile(hosts, `127.0.0.1\tlocalhost ${CONTAINER_HOSTNAME}\n::1\tlocalhost\n`, { mode: 0o644 });

  const modules = join(opts.workDir, WORK.modules);
  await mkdir(join(modules, opts.kernel.release), { recursive: true });
  await symlink(opts.kernelDir, join(modules, opts.kernel.release, 'build'));

  return [
    { source: osRelease, target: '/etc/os-release', readOnly: true },
    { source: osRelease, target: '/host/etc/os-release', readOnly: true },
    { source: uname, target: UNAME_VALUES_FILE, readOnly: true },
    { source: resolvConf, target: '/etc/resolv.conf', readOnly: true },
    { source: hosts, target: '/etc/hosts', readOnly: true },
    { source: modules, target: '/lib/modules', readOnly: true },
    { source: modules, target: '/host/lib/modules', readOnly: true },
  ];
}
