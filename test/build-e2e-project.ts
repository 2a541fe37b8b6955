import { spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { BIN, PROJECT_ROOT } from './helpers/cli.js';
import { kernelDescriptor, type DebianKernel } from './helpers/kernel-headers.js';
import { startMirror, type TestMirror } from './helpers/server.js';
import { debianPackageVersion } from './helpers/graph-project.js';
import { createHostBuilder } from '../src/builders/host.js';
import { serializeLockfile } from '../src/lockfile/lockfile.js';
import { sha256Hex } from '../src/util/hash.js';
import type { KernelDescriptor } from '../src/config/types.js';

// A throw-away project for end-to-end runs of the real binary: a source
// definition whose one repository is a loopback mirror serving real Debian
// .debs, a lockfile with their real sha256 and size, drivers.yaml with the
// example probe (copied into the project) and this host's builder pin.

export const OS = 'testdeb';
export const REPOSITORY_NAME = 'bookworm-security';

/** A loopback mirror whose pool holds the kernels' real .debs (symlinks to the test cache). */
export async function startDebMirror(dir: string, kernels: readonly DebianKernel[]): Promise<TestMirror> {
  const root = join(dir, 'mirror');
  for (const k of kernels) {
    for (const p of k.packages) {
      const at = join(root, p.filename);
      await mkdir(dirname(at), { recursive: true });
      await symlink(p.debPath, at).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
    }
  }
  return startMirror({ root });
}

export interface ProjectOptions {
  kernels: readonly KernelDescriptor[];
  mirrorUrl: string;
  /** Extra drivers.yaml entries (YAML text, indented as list items under `drivers:`). */
  extraDrivers?: string;
  /** Extra OSes: id -> { mirrorUrl, kernels }. */
  extraOses?: Record<string, { mirrorUrl: string; kernels: readonly KernelDescriptor[] }>;
  /** The builder pin's clang (default: this host's, as the host builder names it; runs that build need that). */
  builderClang?: string;
  /** The builder pin's gcc, for kernel modules (default: this host's `gcc --version`, when it has gcc). */
  builderGcc?: string;
}

let hostPin: ReturnType<ReturnType<typeof createHostBuilder>['pin']> | undefined;
/** This host's clang as the host builder names it: the builder pin every key must carry. */
export async function hostBuilderClang(): Promise<string> {
  hostPin ??= createHostBuilder().pin();
  return (await hostPin).clang;
}

/** This host's gcc (`gcc --version`, first line), which kernel modules' keys name; undefined without gcc. */
export async function hostBuilderGcc(): Promise<string | undefined> {
  hostPin ??= createHostBuilder().pin();
  return (await hostPin).gcc;
}

function sourceDefinition(os: string, mirrorUrl: string, architectures = 'x86_64'): string {
  return `id: ${os}
description: Debian 12 kernels served by a test mirror
type: apt
targetId: debian
architectures: [${architectures}]
minimumKernel: "4.14"
osRelease:
  ID: debian
  VERSION_ID: "12"
repositories:
  - name: ${REPOSITORY_NAME}
    mirrors:
      - ${mirrorUrl}
    suite: bookworm-security
    components: [main]
apt:
  headers:
    - flavour: amd64
      pattern: '^linux-headers-(?<release>[0-9]+\\.[0-9]+(?:\\.[0-9]+)?(?:-[0-9]+|\\+deb[0-9]+)-amd64)$'
  follow:
    - '^linux-headers-.*-common$'
    - '^linux-kbuild-.*$'
  unameVersion: '#1 SMP PREEMPT_DYNAMIC Debian {version}'
  kernelVersion: '1'
`;
}

export async function writeOs(root: string, os: string, mirrorUrl: string, kernels: readonly KernelDescriptor[]): Promise<void> {
  // Only when a kernel needs it, so that every other project's definition (and its sha256) stays as it was.
  const definition = sourceDefinition(os, mirrorUrl, kernels.some((k) => k.machine === 'aarch64') ? 'x86_64, aarch64' : 'x86_64');
  await writeFile(join(root, 'kernels', `${os}.yaml`), definition);
  const lock = serializeLockfile({
    os,
    source: { path: `kernels/${os}.yaml`, sha256: sha256Hex(definition) },
    osRelease: { ID: 'debian', VERSION_ID: '12' },
    kernels: [...kernels],
  });
  await writeFile(join(root, 'kernels', `${os}.lock.yaml`), lock);
}

export async function writeProject(root: string, o: ProjectOptions): Promise<void> {
  await mkdir(join(root, 'kernels'), { recursive: true });
  await cp(join(PROJECT_ROOT, 'examples', 'probe'), join(root, 'examples', 'probe'), { recursive: true });
  await writeOs(root, OS, o.mirrorUrl, o.kernels);
  for (const [os, extra] of Object.entries(o.extraOses ?? {})) await writeOs(root, os, extra.mirrorUrl, extra.kernels);
  const gcc = o.builderGcc ?? (await hostBuilderGcc());
  await writeFile(
    join(root, 'kernels', 'drivers.yaml'),
    `builder:
  kind: host
  clang: "${o.builderClang ?? (await hostBuilderClang())}"
${gcc !== undefined ? `  gcc: "${gcc}"\n` : ''}drivers:
  - name: example
    version: 1.0.0
    source:
      path: examples/probe
    recipe: kbuild
    bpfDir: .
    object: probe.o
    kinds: [bpf]
${o.extraDrivers ?? ''}`,
  );
}

/** A drivers.yaml entry (YAML text for `extraDrivers`) for an eBPF probe in a folder of the project: examples/refused, by default, needs no kernel headers. */
export function bpfDriverEntry(name: string, version: string, path = 'examples/refused'): string {
  return `  - name: ${name}\n    version: ${version}\n    source:\n      path: ${path}\n    recipe: kbuild\n    bpfDir: .\n    object: probe.o\n    kinds: [bpf]\n`;
}

/** A kernel descriptor whose package is never fetched: for runs that compile nothing (dry runs, option checks). */
export function syntheticKernel(release: string): KernelDescriptor {
  return {
    name: release,
    release,
    version: `#1 SMP PREEMPT_DYNAMIC Debian ${debianPackageVersion(release)}`,
    machine: 'x86_64',
    kernelVersion: '1',
    targetId: 'debian',
    packages: [
      {
        name: `linux-headers-${release}`,
        version: '6.1.1-1',
        role: 'headers',
        repository: REPOSITORY_NAME,
        path: `pool/main/l/linux/linux-headers-${release}_6.1.1-1_amd64.deb`,
        sha256: sha256Hex(release),
        size: 1000,
      },
    ],
  };
}

export function descriptors(kernels: readonly DebianKernel[]): KernelDescriptor[] {
  return kernels.map((k) => kernelDescriptor(k, REPOSITORY_NAME));
}

/** Every file under the repository (hidden files too) with its sha256 and mtime. */
export async function snapshot(dir: string): Promise<Map<string, { sha256: string; mtimeMs: number }>> {
  const out = new Map<string, { sha256: string; mtimeMs: number }>();
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(r);
      else out.set(r, { sha256: sha256Hex(await readFile(join(dir, r))), mtimeMs: (await stat(join(dir, r))).mtimeMs });
    }
  };
  await walk('');
  return out;
}

/** Start the real binary without waiting for it (for kill and lock tests). */
export interface SpawnedCli {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function spawnCli(args: string[], cwd: string, timeoutMs = 600_000): SpawnedCli {
  const child = spawn(process.execPath, [BIN, ...args], { cwd, env: { ...process.env, CI: 'true' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    }),
  );
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** Poll until `check` returns a value (or throw after `timeoutMs`). */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 120_000, everyMs = 100): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
