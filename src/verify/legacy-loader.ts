import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { BUILDER_DIR } from '../builders/docker-image.js';
import { defaultCacheDir } from '../fetch/cache.js';
import { FalcoProbesError } from '../util/errors.js';
import { sha256Hex } from '../util/hash.js';
import type { Logger } from '../util/log.js';
import { elfInterpreter, isElf64 } from './elf-program.js';
import type { GuestFile } from './initramfs.js';

// The guest's loader for legacy eBPF probes (a `maps` section of `struct
// bpf_map_def`, as Falco's driver/bpf up to 9.1.0+driver): Debian 12's
// bpftool (libbpf 1.1) refuses such an object before the kernel sees it, so
// the guest runs builder/legacy-loader/legacy-bpf-loader.c instead, which
// loads it the way Falco's libscap does. It is compiled here with the host's
// gcc, statically (the guest has no libraries), once per source: the binary
// lives at <cache>/legacy-loader/<sha256 of the source>/legacy-bpf-loader,
// renamed into place whole, and is checked to be a static x86_64 program
// each time it is read.

const execFileAsync = promisify(execFile);

export const LEGACY_LOADER_SOURCE = join(BUILDER_DIR, 'legacy-loader', 'legacy-bpf-loader.c');
export const LEGACY_LOADER_NAME = 'legacy-bpf-loader';
/** Where the loader sits in the guest. */
export const GUEST_LEGACY_LOADER = `/bin/${LEGACY_LOADER_NAME}`;

const EM_X86_64 = 62;
const ET_EXEC = 2;
const ET_DYN = 3;
const COMPILE_TIMEOUT_MS = 120_000;

export interface LegacyLoaderOptions {
  /** The tool's cache root (the folder holding `packages/`, `kernel-images/`); default: beside the package cache. */
  cacheRoot?: string;
  /** Default `gcc`. */
  gcc?: string;
  /** Default: builder/legacy-loader/legacy-bpf-loader.c. */
  source?: string;
  logger?: Logger;
}

/** The cache root when none is given: the package cache's parent (`$XDG_CACHE_HOME/falco-probes`, or FALCO_PROBES_CACHE's parent). */
export function defaultCacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  return dirname(defaultCacheDir(env));
}

/** Why `data` cannot run in the guest, or undefined when it is a static x86_64 ELF program. */
export function staticX86Problem(data: Buffer): string | undefined {
  if (!isElf64(data)) return 'not a 64-bit ELF program';
  const type = data.readUInt16LE(16);
  const machine = data.readUInt16LE(18);
  if (machine !== EM_X86_64) return `built for ELF machine ${machine}, not x86_64 (${EM_X86_64})`;
  if (type !== ET_EXEC && type !== ET_DYN) return `ELF type ${type} is not a program`;
  const interp = elfInterpreter(data);
  if (interp !== undefined) return `dynamically linked (interpreter ${interp}); the guest has no libraries`;
  return undefined;
}

async function readChecked(path: string): Promise<Buffer | undefined> {
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return staticX86Problem(data) === undefined ? data : undefined;
}

async function compile(o: { gcc: string; source: string; dir: string; binary: string; logger?: Logger }): Promise<Buffer> {
  await mkdir(o.dir, { recursive: true });
  const tmp = join(o.dir, `.${LEGACY_LOADER_NAME}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const t0 = performance.now();
  try {
    try {
      await execFileAsync(o.gcc, ['-static', '-O2', '-Wall', '-o', tmp, o.source], {
        timeout: COMPILE_TIMEOUT_MS,
        maxBuffer: 4 * 1024 * 1024,
        env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', LC_ALL: 'C' },
      });
    } catch (err) {
      const e = err as Error & { stderr?: string; code?: string | number };
      const missing = e.code === 'ENOENT';
      throw new FalcoProbesError(
        'usage',
        `cannot compile the legacy eBPF loader with ${o.gcc}: ${missing ? `${o.gcc} is not installed` : (e.stderr ?? e.message).trim().split('\n').slice(-5).join('\n')}`,
        {
          location: { file: o.source },
          hint: "the load test builds it statically with the host's gcc: install gcc and libc6-dev (scripts/setup-debian.sh does)",
          cause: err,
        },
      );
    }
    const data = await readFile(tmp);
    const problem = staticX86Problem(data);
    if (problem)
      throw new FalcoProbesError('usage', `${o.gcc} -static made a legacy eBPF loader the guest cannot run: ${problem}`, {
        location: { file: o.source },
        hint: "the guest is x86_64 with nothing but busybox: gcc must build static x86_64 programs (Debian's gcc with libc6-dev does)",
      });
    await rename(tmp, o.binary);
    o.logger?.info(`load test: built the legacy eBPF loader in ${Math.round(performance.now() - t0)} ms (${o.binary})`);
    return data;
  } finally {
    await rm(tmp, { force: true });
  }
}

const memo = new Map<string, Promise<GuestFile>>();

/**
 * The legacy loader for the guest, compiled from its source on first use and
 * reused from the cache after (per source sha256). Concurrent callers in one
 * process share one compile; other processes may compile at the same time and
 * rename identical programs onto the same name.
 */
export function obtainLegacyLoader(o: LegacyLoaderOptions = {}): Promise<GuestFile> {
  const source = o.source ?? LEGACY_LOADER_SOURCE;
  const cacheRoot = o.cacheRoot ?? defaultCacheRoot();
  const gcc = o.gcc ?? 'gcc';
  const key = `${source}\0${cacheRoot}\0${gcc}`;
  let found = memo.get(key);
  if (!found) {
    found = (async () => {
      let text: Buffer;
      try {
        text = await readFile(source);
      } catch (err) {
        throw new FalcoProbesError('internal', `cannot read the legacy eBPF loader's source: ${(err as Error).message}`, {
          location: { file: source },
        });
      }
      const dir = join(cacheRoot, 'legacy-loader', sha256Hex(text));
      const binary = join(dir, LEGACY_LOADER_NAME);
      const data = (await readChecked(binary)) ?? (await compile({ gcc, source, dir, binary, ...(o.logger ? { logger: o.logger } : {}) }));
      return { guestPath: GUEST_LEGACY_LOADER, hostPath: binary, data };
    })();
    found.catch(() => memo.delete(key));
    memo.set(key, found);
  }
  return found;
}
