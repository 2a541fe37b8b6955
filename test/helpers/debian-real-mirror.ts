import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { startMirror, type TestMirror } from './server.js';

// Serves this machine's own apt index for Debian 12 on loopback, as a mirror
// would: for each suite, the signed `dists/<suite>/InRelease` exactly as apt
// stored it (checked here with gpgv against the Debian archive keyring) and
// the plain `main/binary-amd64/Packages`, decompressed from apt's lists (apt
// keeps them lz4-compressed here), whose SHA256 the InRelease lists. Nothing
// is re-signed or rewritten: it is real metadata.
//
// Run directly, it serves the mirror while it runs the CLI with the matching
// `--mirror` options, e.g. to produce kernels/debian12.lock.yaml:
//   node --import tsx test/helpers/debian-real-mirror.ts resolve debian12

export const DEBIAN_KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';
export const REAL_SUITES = ['bookworm', 'bookworm-security'] as const;
const LISTS = '/var/lib/apt/lists';
const COMPONENT_INDEX = 'main/binary-amd64/Packages';

export interface RealSuite {
  suite: string;
  /** Mirror base URL for this suite (`--mirror <suite>=<base>`). */
  base: string;
  /** The plain Packages index served, on disk. */
  packagesFile: string;
  inReleaseFile: string;
  sha256: string;
  size: number;
}

export interface DebianRealMirror {
  mirror: TestMirror;
  suites: RealSuite[];
  /** `--mirror` arguments for the CLI (repository names equal the suites in kernels/debian12.yaml). */
  mirrorArgs: string[];
  close(): Promise<void>;
}

export type DebianRealMirrorResult = { ok: true; value: DebianRealMirror } | { ok: false; skip: string };

/** Find apt's InRelease for `suite` from the Debian archive (by its content: the host name is not ours to write). */
async function findInRelease(suite: string): Promise<string | undefined> {
  let names: string[];
  try {
    names = await readdir(LISTS);
  } catch {
    return undefined;
  }
  for (const name of names.filter((n) => n.endsWith(`_dists_${suite}_InRelease`)).sort()) {
    const text = await readFile(join(LISTS, name), 'utf8');
    if (/^Origin: Debian$/m.test(text) && new RegExp(`^Codename: ${suite.replace(/[-]/g, '\\-')}$`, 'm').test(text))
      return join(LISTS, name);
  }
  return undefined;
}

function releaseEntry(text: string, path: string): { sha256: string; size: number } | undefined {
  const sha = text.split(/^SHA256:$/m)[1];
  if (!sha) return undefined;
  for (const line of sha.split('\n')) {
    const m = /^ ([0-9a-f]{64})\s+(\d+)\s+(\S+)$/.exec(line);
    if (m && m[3] === path) return { sha256: m[1]!, size: Number(m[2]) };
    if (line && !line.startsWith(' ')) break;
  }
  return undefined;
}

function runOrThrow(cmd: string, args: string[], opts: { timeoutMs: number }): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: opts.timeoutMs, maxBuffer: 16 * 1024 * 1024 });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr.toString().trim()}`);
}

async function hashFile(path: string): Promise<{ sha256: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const c of createReadStream(path)) {
    h.update(c as Buffer);
    size += (c as Buffer).length;
  }
  return { sha256: h.digest('hex'), size };
}

/** Decompress apt's stored list (`Packages.lz4`, `.xz`, `.gz` or plain) into `dest`. */
async function materializeList(prefix: string, dest: string): Promise<void> {
  const names = await readdir(LISTS);
  const base = `${prefix}_main_binary-amd64_Packages`;
  const decoders: [string, string[]][] = [
    ['.lz4', ['lz4', '-dcf']],
    ['.xz', ['xz', '-dc']],
    ['.gz', ['gzip', '-dc']],
  ];
  for (const [ext, cmd] of decoders) {
    if (!names.includes(base + ext)) continue;
    await new Promise<void>((resolve, reject) => {
      const child = spawn('sh', ['-c', `${cmd.join(' ')} "$1" > "$2"`, 'sh', join(LISTS, base + ext), dest], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let err = '';
      child.stderr.on('data', (d) => (err += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(timer);
        code === 0 ? resolve() : reject(new Error(`${cmd[0]} failed on ${base + ext}: ${err.trim()}`));
      });
    });
    return;
  }
  if (names.includes(base)) {
    await copyFile(join(LISTS, base), dest);
    return;
  }
  throw new Error(`apt has no ${base}{.lz4,.xz,.gz,} in ${LISTS}`);
}

export async function startDebianRealMirror(): Promise<DebianRealMirrorResult> {
  let found = await Promise.all(REAL_SUITES.map(findInRelease));
  if (found.some((f) => f === undefined)) {
    if (process.getuid?.() !== 0)
      return {
        ok: false,
        skip: `apt has no lists for ${REAL_SUITES.join(', ')} in ${LISTS} and this is not root: run apt-get update as root first`,
      };
    runOrThrow('apt-get', ['update', '-qq'], { timeoutMs: 300_000 });
    found = await Promise.all(REAL_SUITES.map(findInRelease));
    const missing = REAL_SUITES.filter((_, i) => found[i] === undefined);
    if (missing.length)
      throw new Error(
        `after apt-get update, apt still has no lists for ${missing.join(', ')}: is the Debian 12 archive in the apt sources?`,
      );
  }
  const root = await mkdtemp(join(tmpdir(), 'falco-probes-debian-real-'));
  try {
    const suites: Omit<RealSuite, 'base'>[] = [];
    for (const [i, suite] of REAL_SUITES.entries()) {
      const inRelease = found[i]!;
      // The real signature, checked with the real keyring: the data is what the archive signed.
      runOrThrow('gpgv', ['--keyring', DEBIAN_KEYRING, inRelease], { timeoutMs: 60_000 });
      const text = await readFile(inRelease, 'utf8');
      const entry = releaseEntry(text, COMPONENT_INDEX);
      if (!entry) throw new Error(`${inRelease} lists no ${COMPONENT_INDEX}`);
      const dir = join(root, suite, 'dists', suite);
      await mkdir(join(dir, 'main', 'binary-amd64'), { recursive: true });
      await copyFile(inRelease, join(dir, 'InRelease'));
      const packagesFile = join(dir, COMPONENT_INDEX);
      await materializeList(basename(inRelease).slice(0, -'_InRelease'.length), packagesFile);
      const got = await hashFile(packagesFile);
      if (got.sha256 !== entry.sha256 || got.size !== entry.size)
        throw new Error(
          `${packagesFile}: sha256 ${got.sha256} (${got.size} bytes) does not match ${inRelease} (${entry.sha256}, ${entry.size} bytes); run apt-get update`,
        );
      suites.push({ suite, packagesFile, inReleaseFile: join(dir, 'InRelease'), ...entry });
    }
    const mirror = await startMirror({ root });
    const withBase = suites.map((s) => ({ ...s, base: `${mirror.url}/${s.suite}` }));
    return {
      ok: true,
      value: {
        mirror,
        suites: withBase,
        mirrorArgs: withBase.flatMap((s) => ['--mirror', `${s.suite}=${s.base}`]),
        close: async () => {
          await mirror.close();
          await rm(root, { recursive: true, force: true });
        },
      },
    };
  } catch (err) {
    await rm(root, { recursive: true, force: true });
    throw err;
  }
}

// Script mode: serve, run the CLI with the mirror options, stop.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const started = await startDebianRealMirror();
  if (!started.ok) {
    process.stderr.write(`${started.skip}\n`);
    process.exit(2);
  }
  const { mirrorArgs, close } = started.value;
  const bin = new URL('../../bin/falco-probes.js', import.meta.url);
  const child = spawn(process.execPath, [bin.pathname, ...process.argv.slice(2), ...mirrorArgs], { stdio: 'inherit' });
  const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? 1)));
  await close();
  process.exit(code);
}
