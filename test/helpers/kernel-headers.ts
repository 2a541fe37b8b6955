import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { compareDebVersions, satisfiesRelation } from '../../src/resolve/deb-version.js';
import { parseDepends } from '../../src/resolve/apt-depends.js';
import { StanzaParser, type RawStanza } from '../../src/resolve/apt-stanza.js';
import type { KernelDescriptor } from '../../src/config/types.js';
import type { BuilderPin, DriverPin, ResolvedDriver, Target } from '../../src/graph/types.js';
import { writeFileAtomic } from '../../src/util/fs.js';
import { sha256File, sha256Hex } from '../../src/util/hash.js';
import { artifactFileName } from '../../src/naming/loader-names.js';
import { checkPackageName, checkRelativePath, checkSha256, checkVersion } from '../../src/util/names.js';
import { compareNatural } from '../../src/util/natural-sort.js';
import { withFileLock } from './lock.js';

// Real Debian 12 kernel headers for tests. The kernels are chosen from apt's
// own index (`apt-cache`), never hard-coded: the newest 6.1.0-N-amd64 and the
// newest 6.12.x+deb12-amd64 whose headers, -common and linux-kbuild packages
// all agree. Their .debs are fetched with `apt-get download` (this machine's
// ordinary client for them) into a persistent cache reused across runs, and
// checked against the index's SHA256. A manifest per kernel in the cache lets
// later runs work without apt's index.
//
//   const r = await obtainDebianKernels();
//   if (!r.ok) return t.skip(r.skip);
//   const root = await sharedKernelRoot(r.kernels[0]);          // extracted once, reused (read-only!)
//   const mine = await extractKernelRoot(r.kernels[0], dir);    // a fresh dpkg-deb -x of each package

const execFileAsync = promisify(execFile);

export const TEST_CACHE_DIR = process.env['FALCO_PROBES_TEST_CACHE'] ?? '/var/cache/falco-probes-test';
const DEBS_DIR = join(TEST_CACHE_DIR, 'debs');
const MANIFESTS_DIR = join(TEST_CACHE_DIR, 'kernels');
const ROOTS_DIR = join(TEST_CACHE_DIR, 'roots');

export type PackageRole = 'headers' | 'common' | 'kbuild';

export interface DebianPackage {
  name: string;
  version: string;
  role: PackageRole;
  /** `Filename:` of the index: the path relative to the archive root (`pool/...`). */
  filename: string;
  sha256: string;
  size: number;
  /** The .deb in the test cache. */
  debPath: string;
  /** The package's index stanza as apt-cache printed it (for tests that serve an index). */
  stanza: string;
}

export interface DebianKernel {
  /** `6.1` or `6.12`. */
  series: string;
  /** ABI: `6.1.0-57`, `6.12.117+deb12`. */
  abi: string;
  /** `uname -r`: `6.1.0-57-amd64`. */
  release: string;
  /** The headers package's version (`6.1.192-3`). */
  version: string;
  packages: DebianPackage[];
}

export type KernelHeadersResult = { ok: true; kernels: DebianKernel[] } | { ok: false; skip: string };

interface Series {
  series: string;
  pattern: RegExp;
}

/** One kernel per series, newest first within each. */
const SERIES: Series[] = [
  { series: '6.1', pattern: /^linux-headers-(6\.1\.0-\d+)-amd64$/ },
  { series: '6.12', pattern: /^linux-headers-(6\.12\.\d+\+deb12)-amd64$/ },
];

interface IndexedPackage extends RawStanza {
  text: string;
}

async function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<string> {
  const { stdout } = await execFileAsync(cmd, args, {
    cwd: opts.cwd,
    timeout: opts.timeoutMs ?? 60_000,
    maxBuffer: 256 * 1024 * 1024,
    env: { ...process.env, LC_ALL: 'C' },
  });
  return stdout;
}

function parseStanzas(text: string): IndexedPackage[] {
  const out: IndexedPackage[] = [];
  for (const para of text.split(/\n\s*\n/)) {
    if (para.trim() === '') continue;
    let fields: RawStanza | undefined;
    const parser = new StanzaParser((s) => (fields = s), 'apt-cache show');
    parser.push(`${para}\n`);
    parser.end();
    if (fields) out.push({ ...(fields as RawStanza), text: `${para.trim()}\n` });
  }
  return out;
}

/** Every version of the named packages that apt's index lists, by name (one apt-cache call: each costs seconds here). */
async function showAll(names: string[]): Promise<Map<string, IndexedPackage[]>> {
  const byName = new Map<string, IndexedPackage[]>();
  if (names.length === 0) return byName;
  let text = '';
  try {
    text = await run('apt-cache', ['show', ...names]);
  } catch (err) {
    // apt-cache exits non-zero when one name has no stanza; it still prints the others.
    text = (err as { stdout?: string }).stdout ?? '';
  }
  for (const p of parseStanzas(text)) {
    if (!p.package || !p.version) continue;
    byName.set(p.package, [...(byName.get(p.package) ?? []), p]);
  }
  return byName;
}

function toPackage(p: IndexedPackage, role: PackageRole): DebianPackage {
  const name = checkPackageName(p.package ?? '');
  const filename = checkRelativePath(p.filename ?? '');
  return {
    name,
    version: checkVersion(p.version ?? ''),
    role,
    filename,
    sha256: checkSha256(p.sha256 ?? ''),
    size: Number(p.size),
    debPath: join(DEBS_DIR, basename(filename)),
    stanza: p.text,
  };
}

const newestFirst = (a: IndexedPackage, b: IndexedPackage) => compareDebVersions(b.version as string, a.version as string);

/** The headers, -common and kbuild packages of one ABI, when the index has all three in agreeing versions. */
function packagesOf(abi: string, index: Map<string, IndexedPackage[]>): DebianPackage[] | undefined {
  const headers = [...(index.get(`linux-headers-${abi}-amd64`) ?? [])].sort(newestFirst)[0];
  if (!headers?.depends) return undefined;
  const deps = parseDepends(headers.depends);
  if ('error' in deps) return undefined;
  const chosen: DebianPackage[] = [toPackage(headers, 'headers')];
  for (const group of deps.groups) {
    const alt = group[0];
    if (!alt) continue;
    const role: PackageRole | undefined = /^linux-headers-.*-common$/.test(alt.name)
      ? 'common'
      : /^linux-kbuild-/.test(alt.name)
        ? 'kbuild'
        : undefined;
    if (!role) continue;
    const fits = (p: IndexedPackage) => !alt.relation || satisfiesRelation(p.version as string, alt.relation, alt.version as string);
    const candidates = (index.get(alt.name) ?? []).filter(fits).sort(newestFirst);
    // The headers' own version first (they are built together), else the newest that satisfies the relation.
    const pick = candidates.find((p) => p.version === headers.version) ?? candidates[0];
    if (!pick) return undefined;
    chosen.push(toPackage(pick, role));
  }
  if (!chosen.some((p) => p.role === 'common') || !chosen.some((p) => p.role === 'kbuild')) return undefined;
  return chosen;
}

async function chooseFromIndex(): Promise<DebianKernel[] | undefined> {
  let names: string[];
  try {
    names = (await run('apt-cache', ['pkgnames', 'linux-'])).split('\n').filter(Boolean);
  } catch {
    return undefined;
  }
  const CANDIDATES_PER_SERIES = 3;
  const abisBySeries = SERIES.map((s) =>
    names
      .map((n) => s.pattern.exec(n)?.[1])
      .filter((a): a is string => a !== undefined)
      .sort((a, b) => compareNatural(b, a))
      .slice(0, CANDIDATES_PER_SERIES),
  );
  const wanted = [
    ...abisBySeries.flat().flatMap((abi) => [`linux-headers-${abi}-amd64`, `linux-headers-${abi}-common`]),
    ...names.filter((n) => /^linux-kbuild-[0-9]/.test(n)),
  ];
  const index = await showAll(wanted.filter((n) => names.includes(n)));
  const kernels: DebianKernel[] = [];
  SERIES.forEach((s, i) => {
    for (const abi of abisBySeries[i] ?? []) {
      const packages = packagesOf(abi, index);
      if (!packages) continue;
      kernels.push({ series: s.series, abi, release: `${abi}-amd64`, version: packages[0]!.version, packages });
      return;
    }
  });
  return kernels.length === SERIES.length ? kernels : undefined;
}

async function isCached(p: DebianPackage): Promise<boolean> {
  try {
    if ((await stat(p.debPath)).size !== p.size) return false;
    return (await sha256File(p.debPath)).sha256 === p.sha256;
  } catch {
    return false;
  }
}

/** The packages that are still not in the cache (another test process may have fetched them meanwhile). */
async function uncached(packages: DebianPackage[]): Promise<DebianPackage[]> {
  return (await Promise.all(packages.map(async (p) => ((await isCached(p)) ? undefined : p)))).filter(
    (p): p is DebianPackage => p !== undefined,
  );
}

/** Downloads into the test cache, one test process at a time (files running concurrently want the same packages). */
export function withDownloadLock<T>(fn: () => Promise<T>): Promise<T> {
  return withFileLock(join(DEBS_DIR, '.download.lock'), 'test package download', fn);
}

/** `apt-get download name=version` for each package into the cache, verified against the index. */
async function download(packages: DebianPackage[]): Promise<void> {
  if (packages.length === 0) return;
  await mkdir(DEBS_DIR, { recursive: true });
  const tmp = await mkdtemp(join(DEBS_DIR, '.download-'));
  try {
    // apt downloads as the unprivileged _apt user, which must be able to write here.
    await chmod(tmp, 0o777);
    await run('apt-get', ['download', '-q', ...packages.map((p) => `${p.name}=${p.version}`)], { cwd: tmp, timeoutMs: 300_000 });
    const files = await readdir(tmp);
    for (const p of packages) {
      const file = files.find((f) => f.startsWith(`${p.name}_`) && f.endsWith('.deb'));
      if (!file) throw new Error(`apt-get download left no .deb for ${p.name}=${p.version}`);
      const got = await sha256File(join(tmp, file));
      if (got.sha256 !== p.sha256 || got.size !== p.size)
        throw new Error(
          `${p.name}=${p.version}: downloaded sha256 ${got.sha256} (${got.size} bytes), index says ${p.sha256} (${p.size} bytes)`,
        );
      await rename(join(tmp, file), p.debPath);
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

async function readManifests(): Promise<DebianKernel[]> {
  const byseries = new Map<string, DebianKernel>();
  let names: string[] = [];
  try {
    names = (await readdir(MANIFESTS_DIR)).filter((n) => n.endsWith('.json')).sort(compareNatural);
  } catch {
    return [];
  }
  for (const name of names) {
    try {
      const k = JSON.parse(await readFile(join(MANIFESTS_DIR, name), 'utf8')) as DebianKernel;
      if (!(await Promise.all(k.packages.map(isCached))).every(Boolean)) continue;
      const have = byseries.get(k.series);
      if (!have || compareNatural(k.abi, have.abi) > 0) byseries.set(k.series, k);
    } catch {
      // an unreadable manifest is ignored; the index path rewrites it
    }
  }
  return SERIES.map((s) => byseries.get(s.series)).filter((k): k is DebianKernel => k !== undefined);
}

let memo: Promise<KernelHeadersResult> | undefined;

/** Two real Debian kernels (6.1 and 6.12) with their .debs in the test cache; memoized per process. */
export function obtainDebianKernels(): Promise<KernelHeadersResult> {
  memo ??= obtain();
  return memo;
}

async function obtain(): Promise<KernelHeadersResult> {
  const isRoot = process.getuid?.() === 0;
  const fromIndex = await chooseFromIndex();
  if (fromIndex) {
    const missing = (
      await Promise.all(fromIndex.flatMap((k) => k.packages).map(async (p) => ((await isCached(p)) ? undefined : p)))
    ).filter((p): p is DebianPackage => p !== undefined);
    if (missing.length === 0 || isRoot) {
      if (missing.length > 0) await withDownloadLock(async () => download(await uncached(missing)));
      try {
        await mkdir(MANIFESTS_DIR, { recursive: true });
        // Atomic: test files running at once read and write the same manifests.
        for (const k of fromIndex) await writeFileAtomic(join(MANIFESTS_DIR, `${k.release}.json`), `${JSON.stringify(k, null, 2)}\n`);
      } catch {
        // Manifests only help later runs without apt's index; a read-only cache is fine.
      }
      return { ok: true, kernels: fromIndex };
    }
  }
  const cached = await readManifests();
  if (cached.length === SERIES.length) return { ok: true, kernels: cached };
  if (isRoot && !fromIndex)
    throw new Error(
      "apt's index lists no complete Debian 6.1 and 6.12 kernel header sets: run `apt-get update` (the Debian 12 archive and bookworm-security must be configured)",
    );
  return {
    ok: false,
    skip: `real Debian kernel headers are not cached in ${TEST_CACHE_DIR} and fetching them needs root (apt-get download); run the tests once as root`,
  };
}

/**
 * The kernel's packages extracted once into the test cache and reused across
 * test files and runs (builders only read a kernel root). Its name carries the
 * packages' hashes, so other packages get another directory.
 */
export async function sharedKernelRoot(kernel: DebianKernel): Promise<string> {
  try {
    return await sharedKernelRootIn(ROOTS_DIR, kernel);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM' && code !== 'EROFS') throw err;
    // Not root, with .debs cached by an earlier root run: extract under the temporary directory instead.
    return sharedKernelRootIn(join(tmpdir(), 'falco-probes-test-roots'), kernel);
  }
}

async function sharedKernelRootIn(rootsDir: string, kernel: DebianKernel): Promise<string> {
  const id = sha256Hex(kernel.packages.map((p) => p.sha256).join(' ')).slice(0, 16);
  const dir = join(rootsDir, `${kernel.release}-${id}`);
  const extracted = () =>
    stat(join(dir, 'usr', 'src')).then(
      (s) => s.isDirectory(),
      () => false,
    );
  if (await extracted()) return dir;
  await mkdir(rootsDir, { recursive: true });
  // One extraction per root: a second test process waits for it instead of extracting too.
  return withFileLock(join(rootsDir, `.${kernel.release}-${id}.lock`), 'test kernel root extraction', async () => {
    if (await extracted()) return dir;
    return extractSharedRoot(rootsDir, dir, kernel);
  });
}

async function extractSharedRoot(rootsDir: string, dir: string, kernel: DebianKernel): Promise<string> {
  const tmp = await mkdtemp(join(rootsDir, `.${kernel.release}-`));
  try {
    await extractKernelRoot(kernel, tmp);
    await rename(tmp, dir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    // Another process finished the same extraction first.
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') return dir;
    throw err;
  }
  return dir;
}

/** Extract every package of `kernel` with dpkg-deb into `dir` (created), laid out like `/`. Returns `dir`. */
export async function extractKernelRoot(kernel: DebianKernel, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const p of kernel.packages) await run('dpkg-deb', ['-x', p.debPath, dir], { timeoutMs: 120_000 });
  return dir;
}

/** The kernel as a lockfile describes it (packages in the roles above, repository named by the caller). */
export function kernelDescriptor(kernel: DebianKernel, repository = 'bookworm-security'): KernelDescriptor {
  const upstream = kernel.version.replace(/-.*$/, '');
  return {
    name: kernel.release,
    release: kernel.release,
    version: `#1 SMP PREEMPT_DYNAMIC Debian ${kernel.version} (${upstream})`,
    machine: 'x86_64',
    kernelVersion: '1',
    targetId: 'debian',
    packages: kernel.packages.map((p) => ({
      name: p.name,
      version: p.version,
      repository,
      path: p.filename,
      sha256: p.sha256,
      size: p.size,
      role: p.role,
    })),
  };
}

/** This repository's example probe as a driver pin (its sourceSha256 is a stand-in: builders do not read it). */
export function exampleDriver(overrides: Partial<DriverPin> = {}): ResolvedDriver {
  return {
    name: 'example',
    version: '1.0.0',
    source: { path: 'examples/probe' },
    recipe: 'kbuild',
    bpfDir: '.',
    kinds: ['bpf'],
    object: 'probe.o',
    sourceSha256: sha256Hex(`test driver ${overrides.name ?? 'example'} ${overrides.bpfDir ?? '.'}`),
    ...overrides,
  };
}

/** The file Falco's loaders ask for on this kernel for a driver (`example_debian_6.1.192-3-amd64_1.o`). */
export function loaderFileFor(kernel: DebianKernel, driver = 'example', kind: 'bpf' | 'kmod' = 'bpf'): string {
  return artifactFileName(driver, kind, kernelDescriptor(kernel));
}

/** A build target for a real Debian kernel (its key is a stand-in: builders do not read it). */
export function debianTarget(kernel: DebianKernel, builder: BuilderPin, driver: ResolvedDriver = exampleDriver()): Target {
  // Named as Falco's loaders ask for Falco's probe on this kernel (the Docker loader recipe writes that name).
  const probeFile = artifactFileName('falco', 'bpf', kernelDescriptor(kernel));
  return {
    label: `//probes/debian12:${kernel.release}`,
    name: kernel.release,
    os: 'debian12',
    kernel: kernelDescriptor(kernel),
    osRelease: { ID: 'debian', VERSION_ID: '12' },
    driver,
    builder,
    kind: 'bpf',
    arch: 'x86_64',
    key: sha256Hex(`${kernel.release} ${driver.name} ${driver.version} ${driver.bpfDir}`),
    probeFile,
    output: `${driver.version}/x86_64/${probeFile}`,
  };
}
