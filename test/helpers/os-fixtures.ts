import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { sha256Hex } from '../../src/util/hash.js';
import { stanzaText, type FixturePackage } from './apt-fixture.js';
import { compress } from './yum-fixture.js';
import { PROJECT_ROOT } from './cli.js';
import type { KernelDescriptor } from '../../src/config/types.js';
import { artifactFileName, legacyArtifactFileName, type LoaderKernel } from '../../src/naming/loader-names.js';

// Shared pieces of the per-OS fixture mirrors (test/helpers/*-os-fixtures.ts):
// - a throwaway OpenPGP key to sign fixture InRelease files with, so that the
//   shipped definitions' `keyring:` is exercised (their copy points at this key);
// - an apt suite with several architectures in one Release (Debian's archive
//   lists amd64 and arm64 side by side; Ubuntu's archive and ports each one);
// - copying a shipped definition into a temporary project;
// - the probe file name Falco's loader asks for.

/** Run a command to its end, bounded in time; reject with its stderr on failure. */
export function run(
  cmd: string,
  args: string[],
  opts: { input?: string | Buffer; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
    const out: Buffer[] = [];
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(Buffer.concat(out));
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err}`));
    });
    // A command that exits without reading all its input (gpg --export reads none) closes the
    // pipe: EPIPE is no error of ours, the exit status says how the command went.
    child.stdin.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE') reject(e);
    });
    child.stdin.end(opts.input ?? '');
  });
}

export interface TestSigner {
  /** A keyring file (exported public key) for `keyring:` in a definition. */
  keyring: string;
  /** The clear-signed form of `text` (an InRelease). */
  clearsign(text: string): Promise<string>;
  close(): Promise<void>;
}

/** A fresh ed25519 signing key in a private GnuPG home (a second or two). */
export async function createTestSigner(): Promise<TestSigner> {
  // Short path: gpg-agent's socket path must fit in 108 bytes.
  const home = await mkdtemp(join(tmpdir(), 'fpgpg-'));
  const gpg = (args: string[], input?: string) =>
    run('gpg', ['--batch', '--quiet', '--homedir', home, ...args], { ...(input !== undefined ? { input } : {}) });
  await gpg(['--passphrase', '', '--quick-gen-key', 'falco-probes test archive <archive@test.invalid>', 'ed25519', 'sign', 'never']);
  const keyring = join(home, 'archive-keyring.gpg');
  await writeFile(keyring, await gpg(['--export']));
  return {
    keyring,
    clearsign: async (text) => (await gpg(['--digest-algo', 'SHA512', '--clearsign'], text)).toString('utf8'),
    close: async () => {
      await run('gpgconf', ['--homedir', home, '--kill', 'gpg-agent']).catch(() => undefined);
      await rm(home, { recursive: true, force: true });
    },
  };
}

export type AptCompression = 'xz' | 'gz';

export interface AptRepositorySpec {
  suite: string;
  codename?: string;
  origin?: string;
  /** Packages per Debian architecture (`amd64`, `arm64`); arch-all packages must be listed under each. */
  arches: Record<string, FixturePackage[]>;
  component?: string;
  /** Index files written and listed (the first is what a resolver picks). Default: xz and gz. */
  formats?: AptCompression[];
  /** Sign InRelease with this key; without one InRelease is the plain Release text. */
  signer?: TestSigner;
  /** How to compress an index (default: the real xz and gzip at their default levels). */
  compressor?: (data: Buffer, format: AptCompression) => Promise<Buffer>;
  /** Write the pool files (default true; a resolve never reads them). */
  writePool?: boolean;
}

export interface WrittenAptRepository {
  suite: string;
  /** Index path under dists/<suite>/ -> stanza count. */
  indexes: Map<string, number>;
}

function defaultPoolPath(p: FixturePackage, arch: string): string {
  return `pool/main/${p.name[0]}/${p.name}/${p.name}_${p.version.replace(/^\d+:/, '')}_${p.architecture ?? arch}.deb`;
}

/**
 * Write `root/dists/<suite>/` with one Packages index per architecture,
 * compressed by the real xz and gzip, a Release listing them all (and the
 * architectures), and InRelease. Pool files are written once each.
 */
export async function writeAptRepository(root: string, spec: AptRepositorySpec): Promise<WrittenAptRepository> {
  const component = spec.component ?? 'main';
  const formats = spec.formats ?? ['xz', 'gz'];
  const dist = join(root, 'dists', spec.suite);
  const lines: string[] = [];
  const indexes = new Map<string, number>();
  const written = new Set<string>();
  for (const [arch, packages] of Object.entries(spec.arches)) {
    const stanzas: string[] = [];
    for (const p of packages) {
      const filename = p.filename ?? defaultPoolPath(p, arch);
      const content = Buffer.from(p.content ?? `fake deb ${p.name} ${p.version} ${p.architecture ?? arch}\n`);
      if (spec.writePool !== false && !written.has(filename)) {
        written.add(filename);
        await mkdir(dirname(join(root, filename)), { recursive: true });
        await writeFile(join(root, filename), content);
      }
      stanzas.push(stanzaText({ ...p, filename, sha256: sha256Hex(content), size: content.length }, arch));
    }
    const plain = Buffer.from(stanzas.length ? `${stanzas.join('\n\n')}\n` : '');
    const rel = `${component}/binary-${arch}/Packages`;
    indexes.set(rel, stanzas.length);
    lines.push(` ${sha256Hex(plain)} ${String(plain.length).padStart(9)} ${rel}`);
    for (const format of formats) {
      const data = await (spec.compressor ?? compress)(plain, format);
      await mkdir(join(dist, dirname(rel)), { recursive: true });
      await writeFile(join(dist, `${rel}.${format}`), data);
      lines.push(` ${sha256Hex(data)} ${String(data.length).padStart(9)} ${rel}.${format}`);
    }
  }
  const release = `${[
    `Origin: ${spec.origin ?? 'Falco-Probes-Test'}`,
    `Label: ${spec.origin ?? 'Falco-Probes-Test'}`,
    `Suite: ${spec.suite}`,
    `Codename: ${spec.codename ?? spec.suite}`,
    'Date: Sat, 01 Jan 2000 00:00:00 UTC',
    `Architectures: ${Object.keys(spec.arches).join(' ')}`,
    `Components: ${component}`,
    'Description: a test repository',
    'SHA256:',
    ...lines,
  ].join('\n')}\n`;
  await mkdir(dist, { recursive: true });
  await writeFile(join(dist, 'Release'), release);
  await writeFile(join(dist, 'InRelease'), spec.signer ? await spec.signer.clearsign(release) : release);
  return { suite: spec.suite, indexes };
}

/**
 * Copy the shipped `kernels/<id>.yaml` into `project/kernels/`, with its keyring
 * paths (if any) pointed at the test key: the fixture's InRelease is signed by
 * it, not by the distribution. Nothing else is changed.
 */
export async function copyShippedDefinition(id: string, project: string, keyring?: string): Promise<string> {
  let text = await readFile(join(PROJECT_ROOT, 'kernels', `${id}.yaml`), 'utf8');
  if (keyring) text = text.replace(/^(\s+keyring: ).*$/gm, `$1${keyring}`);
  await mkdir(join(project, 'kernels'), { recursive: true });
  const file = join(project, 'kernels', `${id}.yaml`);
  await writeFile(file, text);
  return file;
}

/** The names of the repositories of a shipped definition, in order (read from its YAML). */
export async function shippedRepositoryNames(id: string): Promise<string[]> {
  const text = await readFile(join(PROJECT_ROOT, 'kernels', `${id}.yaml`), 'utf8');
  return [...text.matchAll(/^ {2}- name: (\S+)$/gm)].map((m) => m[1]!);
}

/** The file the legacy falco-driver-loader asks for, from a descriptor (its legacyRelease when it has one). */
export function legacyProbeFileOf(k: KernelDescriptor): string {
  return `falco_${k.targetId}_${k.legacyRelease ?? k.release}_${k.kernelVersion}.o`;
}

// Falco's two loaders on a node: given what the node reports (os-release, uname -r,
// uname -v), the probe file each one downloads. The naming rules themselves are stated
// once, in src/naming/loader-names.ts; here is only the step before them, from
// os-release's ID to the target id a descriptor records. The tests feed these the release
// and version a resolver derived and compare with the descriptor's file name: a node
// running that kernel would ask for exactly that file.

/**
 * The target id os-release leads both loaders to: its ID lower-cased, except that `amzn`
 * becomes amazonlinux<VERSION_ID> (falcoctl pkg/driver/distro/amzn.go `init`; the
 * script's `("amzn")` case). Ubuntu's flavour comes from uname -r, in the naming module.
 */
function osTargetId(osRelease: Record<string, string>): string {
  const id = (osRelease['ID'] ?? '').toLowerCase();
  if (id !== 'amzn') return id;
  const v = osRelease['VERSION_ID'];
  return v === '2' || v === '2022' || v === '2023' ? `amazonlinux${v}` : 'amazonlinux';
}

/** A node's kernel as the naming module takes it (no recorded kernelversion: the loaders read uname -v). */
function nodeKernel(osRelease: Record<string, string>, unameR: string, unameV: string): LoaderKernel {
  return { targetId: osTargetId(osRelease), release: unameR, version: unameV, kernelVersion: '', machine: 'x86_64' };
}

/** The eBPF probe file falcoctl asks for on a node with this os-release, uname -r and uname -v. */
export function falcoctlProbeFile(osRelease: Record<string, string>, unameR: string, unameV: string): string {
  return artifactFileName('falco', 'bpf', nodeKernel(osRelease, unameR, unameV));
}

/** The same for the legacy falco-driver-loader script. */
export function legacyLoaderProbeFile(osRelease: Record<string, string>, unameR: string, unameV: string): string {
  return legacyArtifactFileName('falco', 'bpf', nodeKernel(osRelease, unameR, unameV));
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}
