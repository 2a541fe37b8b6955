import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { access, chown, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { constants } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, delimiter, join } from 'node:path';
import type { PackageRef } from '../config/types.js';
import { FalcoProbesError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { checkPackageName, checkVersion } from '../util/names.js';
import { storeVerified } from './cache.js';

// `--fetch-via apt`: ask this host's apt for the exact package the lockfile
// names (`apt-get download name:arch=version`), then verify its bytes against
// the lockfile exactly like an HTTP download. This works wherever apt works:
// behind a corporate apt proxy, or on a machine whose only reachable archive
// is the one apt is configured for. apt runs through execFile with an
// argument vector (never a shell), after the name and version passed the
// strict rules again here, since they reach a command line.

const ARCH_RE = /^[a-z0-9][a-z0-9-]{0,31}$/;

export interface AptFetchOptions {
  cacheDir: string;
  signal?: AbortSignal;
  logger?: Logger;
  /** Default 10 minutes. */
  timeoutMs?: number;
  /** The apt-get program (default: `apt-get` from PATH). */
  aptGet?: string;
}

/** True when `apt-get` is on PATH (auto mode asks apt only then). */
export async function aptGetAvailable(env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  for (const dir of (env['PATH'] ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      await access(join(dir, 'apt-get'), constants.X_OK);
      return true;
    } catch {
      /* next */
    }
  }
  return false;
}

/** The architecture in a Debian pool file name (`name_version_arch.deb`), if it has one. */
export function debArchitecture(path: string): string | undefined {
  const m = /_([a-z0-9-]+)\.deb$/.exec(basename(path));
  return m && ARCH_RE.test(m[1]!) ? m[1] : undefined;
}

/** `name:arch=version` (or `name=version` for `all` packages and unknown architectures). */
export function aptRequest(pkg: PackageRef): string {
  const name = checkPackageName(pkg.name);
  const version = checkVersion(pkg.version);
  const arch = debArchitecture(pkg.path);
  return arch && arch !== 'all' ? `${name}:${arch}=${version}` : `${name}=${version}`;
}

export async function fetchViaApt(pkg: PackageRef, opts: AptFetchOptions): Promise<string> {
  if (!pkg.path.endsWith('.deb')) {
    throw new FalcoProbesError('usage', `--fetch-via apt can fetch only .deb packages, not ${pkg.path}`);
  }
  const request = aptRequest(pkg);
  const what = `apt-get download ${request}`;
  const dir = await mkdtemp(join(tmpdir(), 'falco-probes-apt-'));
  try {
    await letAptUserWrite(dir);
    await runAptGet(opts.aptGet ?? 'apt-get', ['download', '-q', request], dir, what, opts);
    const debs = (await readdir(dir)).filter((n) => n.endsWith('.deb'));
    // apt writes `name_version_arch.deb` with the epoch's `:` escaped as `%3a`.
    const expected = `${pkg.name}_${pkg.version.replace(/:/g, '%3a')}_`;
    const file = debs.find((n) => n.startsWith(expected)) ?? (debs.length === 1 ? debs[0] : undefined);
    if (file === undefined) {
      throw new FalcoProbesError('network', `${what} produced no ${expected}*.deb (found: ${debs.join(', ') || 'nothing'})`);
    }
    const stream = createReadStream(join(dir, file));
    stream.on('error', () => {}); // reported through the reader
    const path = await storeVerified(opts.cacheDir, pkg, stream, {
      source: what,
      location: {},
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    opts.logger?.debug(`fetched ${pkg.name} ${pkg.version} (${pkg.size} bytes) with ${what}`);
    return path;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * As root, apt drops privileges to `_apt` for downloads and needs a folder
 * that user can write (otherwise it warns and downloads unsandboxed).
 */
async function letAptUserWrite(dir: string): Promise<void> {
  if (process.getuid?.() !== 0) return;
  const ids = await aptUserIds();
  if (ids) await chown(dir, ids.uid, ids.gid);
}

async function aptUserIds(): Promise<{ uid: number; gid: number } | undefined> {
  try {
    const passwd = await readFile('/etc/passwd', 'utf8');
    for (const line of passwd.split('\n')) {
      const f = line.split(':');
      if (f[0] === '_apt' && f[2] !== undefined && f[3] !== undefined) return { uid: Number(f[2]), gid: Number(f[3]) };
    }
  } catch {
    /* no passwd: no _apt */
  }
  return undefined;
}

function runAptGet(program: string, args: string[], cwd: string, what: string, opts: AptFetchOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(
      program,
      args,
      {
        cwd,
        timeout: opts.timeoutMs ?? 10 * 60_000,
        killSignal: 'SIGKILL',
        maxBuffer: 4 * 1024 * 1024,
        env: { ...process.env, LC_ALL: 'C', DEBIAN_FRONTEND: 'noninteractive' },
        ...(opts.signal ? { signal: opts.signal } : {}),
      },
      (err, _stdout, stderr) => {
        if (!err) {
          resolve();
          return;
        }
        if (opts.signal?.aborted) {
          reject(opts.signal.reason ?? err);
          return;
        }
        const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
        const why =
          e.code === 'ENOENT'
            ? `${program} is not installed`
            : e.killed
              ? `timed out after ${opts.timeoutMs ?? 600_000} ms`
              : `exit code ${String(e.code)}`;
        const tail = String(stderr).trim().split('\n').slice(-5).join('\n');
        reject(
          new FalcoProbesError('network', `${what} failed: ${why}`, {
            ...(tail ? { details: tail } : {}),
            hint: 'check that apt knows this exact version (apt-get update, and the suite in /etc/apt/sources.list)',
          }),
        );
      },
    );
  });
}
