import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import type { Lockfile } from '../config/types.js';
import { writeFileAtomic } from '../util/fs.js';
import { checkFileName, checkRelativePath, checkSha256, checkTargetName } from '../util/names.js';
import type { Logger } from '../util/log.js';
import type { LoadedLockfile } from './lockfiles.js';
import type { BuilderPin, CompilerImagePin, DriverKind, DriverPin, ResolvedDriver, Target } from './types.js';
import { builderForTarget } from './compiler-choice.js';

// A memo of the build graph, keyed by the content of everything that makes
// it: the lockfiles' and source definitions' bytes, what drivers.yaml says,
// each driver's content identity, and the code of this tool itself. Loading
// 10,000 kernels means reading and checking 10 MB of YAML and computing
// 10,000 keys (about a second); reading the memo is one JSON.parse. A memo
// is written only for a graph that passed every check, so a hit stands for
// a load that succeeded on the same bytes with the same code. It is a cache,
// not a decision: delete `.falco-probes/cache/` at will, or set
// FALCO_PROBES_GRAPH_CACHE=0 to neither read nor write it.
//
// Nothing in it is trusted as found (a bit flip must be a miss, never a
// wrong key): the file is `{"format":2,"key":K,"sha256":H,` followed by the
// rest of the body `{"lockfiles":…,"targets":…}`, and H, the sha256 of that
// body's exact bytes, is checked before it is parsed. Every name and path
// in it then passes the rules a lockfile's do (lockfiles.ts checkedLockfile,
// util/names.ts) before it is used.

const FORMAT = 2;

export const graphCachePath = (root: string) => resolvePath(root, '.falco-probes', 'cache', 'graph.json');

export const graphCacheEnabled = () => process.env['FALCO_PROBES_GRAPH_CACHE'] !== '0';

let codeHash: string | undefined;
/**
 * sha256 over the paths and bytes of the tool's source files (src/). The
 * compiled tool (dist/) hashes src/ as well: bin/falco-probes.js runs dist/
 * only while it is newer than every source file, so both stand for the same
 * code and share one memo. Without a src/ beside it, the running folder.
 */
export function toolCodeHash(): string {
  if (codeHash) return codeHash;
  const running = fileURLToPath(new URL('..', import.meta.url));
  const sources = resolvePath(running, '..', 'src');
  const top = existsSync(join(sources, 'graph', 'graph-cache.ts')) ? sources : running;
  const h = createHash('sha256');
  const walk = (dir: string, rel: string) => {
    const entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const path = join(dir, e.name);
      if (e.isDirectory()) walk(path, `${rel}${e.name}/`);
      else if (e.isFile()) {
        const bytes = readFileSync(path);
        h.update(`${rel}${e.name}\0${bytes.length}\0`);
        h.update(bytes);
      }
    }
  };
  walk(top, '');
  return (codeHash = h.digest('hex'));
}

export interface GraphCacheInputs {
  builder: BuilderPin;
  compilerImages?: readonly CompilerImagePin[];
  /** Every driver of drivers.yaml with a content identity (the others have no targets, but decide target names). */
  drivers: readonly ResolvedDriver[];
  unpinned: readonly DriverPin[];
  lockfiles: readonly { relativePath: string; sha256: string; definitionSha256: string | null }[];
}

export function graphCacheKey(inputs: GraphCacheInputs): string {
  return createHash('sha256')
    .update(
      JSON.stringify([
        FORMAT,
        toolCodeHash(),
        inputs.builder,
        inputs.compilerImages ?? [],
        inputs.drivers,
        inputs.unpinned,
        inputs.lockfiles.map((l) => [l.relativePath, l.sha256, l.definitionSha256]),
      ]),
    )
    .digest('hex');
}

/** One target as stored: [lockfile, kernel index in it, driver index, kind, name, key, probe file]. */
type StoredTarget = [number, number, number, DriverKind, string, string, string];

interface Stored {
  format: number;
  key: string;
  lockfiles: { relativePath: string; lock: Lockfile }[];
  targets: StoredTarget[];
}

const HEADER_LENGTH = `{"format":${FORMAT},"key":"${'0'.repeat(64)}","sha256":"${'0'.repeat(64)}",`.length;

/** The memo's text for `stored`: a header with the sha256 of the body's bytes, then the body (exported for tests that plant a memo). */
export function sealGraphMemo(stored: { key: string; lockfiles: Stored['lockfiles']; targets: Stored['targets'] }): string {
  const body = JSON.stringify({ lockfiles: stored.lockfiles, targets: stored.targets });
  const sha256 = createHash('sha256').update(body).digest('hex');
  return `{"format":${FORMAT},"key":"${checkSha256(stored.key)}","sha256":"${sha256}",${body.slice(1)}`;
}

/** The body of a sealed memo for `key`, or undefined when it is for another key or its bytes are not the ones sealed. */
function unsealGraphMemo(text: string, key: string): string | undefined {
  const head = `{"format":${FORMAT},"key":"${key}","sha256":"`;
  if (!text.startsWith(head) || text.length < HEADER_LENGTH + 2) return undefined;
  const sha256 = text.slice(head.length, head.length + 64);
  if (text.slice(head.length + 64, HEADER_LENGTH) !== '",') return undefined;
  const body = `{${text.slice(HEADER_LENGTH)}`;
  return createHash('sha256').update(body).digest('hex') === sha256 ? body : undefined;
}

export async function writeGraphCache(
  root: string,
  key: string,
  graph: { lockfiles: readonly LoadedLockfile[]; drivers: readonly ResolvedDriver[]; targets: readonly Target[] },
  logger?: Logger,
): Promise<void> {
  const where = new Map<object, [number, number]>();
  graph.lockfiles.forEach((l, li) => l.lock.kernels.forEach((k, ki) => where.set(k, [li, ki])));
  const driverIndex = new Map<ResolvedDriver, number>(graph.drivers.map((d, i) => [d, i]));
  const targets: StoredTarget[] = [];
  for (const t of graph.targets) {
    const at = where.get(t.kernel);
    const di = driverIndex.get(t.driver);
    if (!at || di === undefined) return; // not a graph this memo can describe: leave it unwritten
    targets.push([at[0], at[1], di, t.kind, t.name, t.key, t.probeFile]);
  }
  const path = graphCachePath(root);
  try {
    await mkdir(dirname(path), { recursive: true });
    await writeFileAtomic(path, sealGraphMemo({ key, lockfiles: graph.lockfiles.map((l) => ({ relativePath: l.relativePath, lock: l.lock })), targets }));
  } catch (err) {
    logger?.debug(`graph cache not written (${(err as Error).message}); the next run loads the graph again`);
  }
}

/**
 * The memo for `key`, rebuilt into lockfiles and targets, or undefined when
 * there is none, it is for other inputs, or it does not read back whole.
 */
export async function readGraphCache(
  root: string,
  key: string,
  context: { drivers: readonly ResolvedDriver[]; builder: BuilderPin; compilerImages?: readonly CompilerImagePin[]; lockfile: (relativePath: string, lock: Lockfile) => LoadedLockfile },
): Promise<{ lockfiles: LoadedLockfile[]; targets: Target[] } | undefined> {
  let text: string;
  try {
    text = await readFile(graphCachePath(root), 'utf8');
  } catch {
    return undefined;
  }
  // The key sits at the start: a memo of other inputs, or one whose bytes changed, is a miss before anything is parsed.
  const body = unsealGraphMemo(text, key);
  if (body === undefined) return undefined;
  try {
    const stored = JSON.parse(body) as Pick<Stored, 'lockfiles' | 'targets'>;
    if (!Array.isArray(stored.lockfiles) || !Array.isArray(stored.targets)) return undefined;
    // Every name and path by a lockfile's rules (a throw is a miss).
    const lockfiles = stored.lockfiles.map((l) => context.lockfile(checkRelativePath(l.relativePath), l.lock));
    const targets: Target[] = new Array(stored.targets.length);
    for (let i = 0; i < stored.targets.length; i++) {
      const [li, ki, di, kind, name, targetKey, probeFile] = stored.targets[i]!;
      const lock = lockfiles[li]?.lock;
      const kernel = lock?.kernels[ki];
      const driver = context.drivers[di];
      if (!lock || !kernel || !driver || (kind !== 'bpf' && kind !== 'kmod')) return undefined;
      checkTargetName(name);
      checkSha256(targetKey);
      checkFileName(probeFile);
      const output = checkRelativePath(`${driver.version}/${kernel.machine}/${probeFile}`);
      targets[i] = {
        label: `//probes/${lock.os}:${name}`,
        name,
        os: lock.os,
        kernel,
        osRelease: lock.osRelease,
        driver,
        builder: builderForTarget(kernel, kind, context.builder, context.compilerImages),
        kind,
        arch: kernel.machine,
        key: targetKey,
        probeFile,
        output,
      };
    }
    return { lockfiles, targets };
  } catch {
    return undefined;
  }
}
