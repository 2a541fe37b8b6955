import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import type { KernelDescriptor } from '../config/types.js';
import type { DriversFile } from '../config/drivers.js';
import { writeCacheFileSync } from '../util/fs.js';
import { checkSha256, IDENT_RE, PATH_SEGMENT_RE, SHA256_RE, TARGET_NAME_RE } from '../util/names.js';
import type { ShadowedName } from './loader-name-clash.js';
import type { Logger } from '../util/log.js';
import type { LoadedLockfile } from '../lockfile/load.js';
import type { BuilderPin, CompilerImagePin, DriverKind, DriverPin, ResolvedDriver, Target } from './types.js';
import { builderForTarget } from './compiler-choice.js';
import { targetLabel, targetOutput } from './targets.js';

// A memo of the build graph, keyed by the content of everything that makes
// it: the lockfiles' and source definitions' bytes, what drivers.yaml says,
// each driver's content identity, and the code of this tool itself. Loading
// 10,000 kernels means reading and checking 10 MB of YAML and computing
// 10,000 keys (about a second); a memo hit reads two small sections and
// parses no YAML at all. A memo is written only for a graph that passed
// every check, so a hit stands for a load that succeeded on the same bytes
// with the same code. It is a cache, not a decision: delete
// `.falco-probes/cache/` at will, or set FALCO_PROBES_GRAPH_CACHE=0 to
// neither read nor write it.
//
// Format 4, line-oriented, read without parsing what is not asked for:
//
//   falco-probes graph memo 4
//   key <the inputs' key>
//   drivers <sha256 of drivers.yaml's bytes> <length> <sha256 of the section>
//   targets <count> <length> <sha256 of the section>
//   shadowed <count> <length> <sha256 of the section>
//   <empty line>
//   <drivers section: JSON of what drivers.yaml says, as its schema passed it>
//   <targets section: one line per target, fields separated by one space:
//    lockfile index, kernel index, driver index, kind, arch, name, key, probe file>
//   <shadowed section: one line per kernel that yields its loader file name
//    to another OS's (loader-name-clash.ts): os, kernel, machine, by os, by kernel>
//
// Nothing in it is trusted as found (a bit flip must be a miss, never a
// wrong key): each section's sha256 is checked before it is parsed, and
// every name and path in it then passes the rules a lockfile's and
// drivers.yaml's do (util/names.ts, config/drivers.ts) before it is used.
// Kernel descriptors are not stored: a target's kernel, os-release and
// builder are read from the lockfile's bytes (the ones the key was computed
// from) the first time something asks for them, so a command that only
// compares keys (a no-op build) never parses a lockfile.

const FORMAT = 4;
const MAGIC = `falco-probes graph memo ${FORMAT}\n`;

export const graphCachePath = (root: string) => resolvePath(root, '.falco-probes', 'cache', 'graph.memo');

export const graphCacheEnabled = () => process.env['FALCO_PROBES_GRAPH_CACHE'] !== '0';

/** The line `dist/BUILT` holds: the code hash of the sources it was compiled from (scripts/write-built.mjs). */
export const BUILT_LINE_PREFIX = 'falco-probes-code ';

let codeHash: string | undefined;

/** sha256 over the paths and bytes of every file under `top` (sorted by name at each level). */
export function hashCodeTree(top: string): string {
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
  return h.digest('hex');
}

/**
 * sha256 over the paths and bytes of the tool's source files (src/). The
 * compiled tool (dist/) stands for the same code: bin/falco-probes.js runs
 * dist/ only while it is newer than every source file, and `npm run build`
 * writes the hash of the sources it compiled into dist/BUILT, so dist/
 * reads it from there instead of hashing src/ at every start, and both
 * share one memo. Without a src/ beside it (an installed package, whose
 * BUILT also says), the running folder.
 */
export function toolCodeHash(): string {
  return (codeHash ??= codeHashOf(fileURLToPath(new URL('..', import.meta.url))));
}

/** toolCodeHash for the tool running from `running` (its src/ or dist/ folder). */
export function codeHashOf(running: string): string {
  const sources = resolvePath(running, '..', 'src');
  const compiled = !existsSync(join(running, 'graph', 'graph-cache.ts'));
  if (compiled) {
    let built: string | undefined;
    try {
      built = readFileSync(join(running, 'BUILT'), 'utf8');
    } catch {
      built = undefined;
    }
    const m = built !== undefined ? /^falco-probes-code ([0-9a-f]{64})$/m.exec(built) : null;
    if (m) return m[1]!;
  }
  const top = existsSync(join(sources, 'graph', 'graph-cache.ts')) ? sources : running;
  return hashCodeTree(top);
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

/** One target as stored. */
export interface StoredTarget {
  lockfile: number;
  kernel: number;
  driver: number;
  kind: DriverKind;
  arch: string;
  name: string;
  key: string;
  probeFile: string;
}

const sha256Of = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

/** The memo's bytes (exported for tests that plant a memo: a planted memo is sealed like a real one). */
export function sealGraphMemo(stored: {
  key: string;
  driversYamlSha256: string;
  drivers: DriversFile;
  targets: readonly StoredTarget[];
  shadowed?: readonly ShadowedName[];
}): string {
  const driversText = JSON.stringify(stored.drivers);
  const lines: string[] = new Array(stored.targets.length);
  for (let i = 0; i < stored.targets.length; i++) {
    const t = stored.targets[i]!;
    lines[i] = `${t.lockfile} ${t.kernel} ${t.driver} ${t.kind} ${t.arch} ${t.name} ${t.key} ${t.probeFile}\n`;
  }
  const targetsText = lines.join('');
  const shadowed = stored.shadowed ?? [];
  const shadowedText = shadowed.map((s) => `${s.os} ${s.kernel.name} ${s.kernel.machine} ${s.by.os} ${s.by.kernel.name}\n`).join('');
  return (
    MAGIC +
    `key ${checkSha256(stored.key)}\n` +
    `drivers ${checkSha256(stored.driversYamlSha256)} ${Buffer.byteLength(driversText)} ${sha256Of(driversText)}\n` +
    `targets ${stored.targets.length} ${Buffer.byteLength(targetsText)} ${sha256Of(targetsText)}\n` +
    `shadowed ${shadowed.length} ${Buffer.byteLength(shadowedText)} ${sha256Of(shadowedText)}\n` +
    `\n${driversText}${targetsText}${shadowedText}`
  );
}

/** A memo's content read back without any check (for tests that plant a changed memo with sealGraphMemo). */
export function unsealGraphMemo(text: string): {
  key: string;
  driversYamlSha256: string;
  drivers: DriversFile;
  targets: StoredTarget[];
  shadowed: ShadowedName[];
} {
  const memo = parseMemo(Buffer.from(text));
  if (!memo) throw new Error('not a graph memo');
  const section = (s: Section) => memo.bytes.toString('utf8', s.start, s.start + s.length);
  return {
    key: memo.key,
    driversYamlSha256: memo.driversYamlSha256,
    drivers: JSON.parse(section(memo.drivers)) as DriversFile,
    targets: parseTargetLines(section(memo.targets)),
    shadowed: parseShadowedLines(section(memo.shadowed)),
  };
}

interface Section {
  start: number;
  length: number;
  sha256: string;
}

interface ParsedMemo {
  bytes: Buffer;
  key: string;
  driversYamlSha256: string;
  drivers: Section;
  targets: Section & { count: number };
  shadowed: Section & { count: number };
}

const HEADER_RE = new RegExp(
  `^falco-probes graph memo ${FORMAT}\\nkey ([0-9a-f]{64})\\ndrivers ([0-9a-f]{64}) (\\d{1,12}) ([0-9a-f]{64})\\ntargets (\\d{1,12}) (\\d{1,12}) ([0-9a-f]{64})\\nshadowed (\\d{1,12}) (\\d{1,12}) ([0-9a-f]{64})\\n\\n`,
);

function parseMemo(bytes: Buffer): ParsedMemo | undefined {
  const head = bytes.toString('latin1', 0, Math.min(bytes.length, 512));
  const m = HEADER_RE.exec(head);
  if (!m) return undefined;
  const start = m[0].length;
  const drivers = { start, length: Number(m[3]), sha256: m[4]! };
  const targets = { start: start + drivers.length, length: Number(m[6]), sha256: m[7]!, count: Number(m[5]) };
  const shadowed = { start: targets.start + targets.length, length: Number(m[9]), sha256: m[10]!, count: Number(m[8]) };
  if (shadowed.start + shadowed.length !== bytes.length) return undefined;
  return { bytes, key: m[1]!, driversYamlSha256: m[2]!, drivers, targets, shadowed };
}

function sectionText(memo: ParsedMemo, s: Section): string | undefined {
  const slice = memo.bytes.subarray(s.start, s.start + s.length);
  return sha256Of(slice) === s.sha256 ? slice.toString('utf8') : undefined;
}

/**
 * One target line, held whole to the rules a lockfile's names are held to
 * (util/names.ts): target name, key, probe file name (one path segment).
 */
const LINE_RE = new RegExp(
  `(0|[1-9][0-9]{0,8}) (0|[1-9][0-9]{0,8}) (0|[1-9][0-9]{0,8}) (bpf|kmod) (x86_64|aarch64) (${TARGET_NAME_RE.source.slice(1, -1)}) (${SHA256_RE.source.slice(1, -1)}) (${PATH_SEGMENT_RE.source.slice(1, -1)})\n`,
  'y',
);

/** Lines `li ki di kind arch name key probeFile`; throws on anything else. */
function parseTargetLines(text: string): StoredTarget[] {
  const out: StoredTarget[] = [];
  LINE_RE.lastIndex = 0;
  while (LINE_RE.lastIndex < text.length) {
    const m = LINE_RE.exec(text);
    if (!m) throw new Error('malformed line');
    const name = m[6]!;
    // isValidTargetName's rules beyond the pattern.
    if (name === 'all' || name.includes('..')) throw new Error('target name');
    out.push({
      lockfile: Number(m[1]),
      kernel: Number(m[2]),
      driver: Number(m[3]),
      kind: m[4] as DriverKind,
      arch: m[5]!,
      name,
      key: m[7]!,
      probeFile: m[8]!,
    });
  }
  return out;
}

/** Lines `os kernel machine byOs byKernel`, each name held to its rule (util/names.ts); throws on anything else. */
const SHADOWED_RE = new RegExp(
  `(${IDENT_RE.source.slice(1, -1)}) (${TARGET_NAME_RE.source.slice(1, -1)}) (x86_64|aarch64) (${IDENT_RE.source.slice(1, -1)}) (${TARGET_NAME_RE.source.slice(1, -1)})\\n`,
  'y',
);

function parseShadowedLines(text: string): ShadowedName[] {
  const out: ShadowedName[] = [];
  SHADOWED_RE.lastIndex = 0;
  while (SHADOWED_RE.lastIndex < text.length) {
    const m = SHADOWED_RE.exec(text);
    if (!m) throw new Error('malformed line');
    out.push({ os: m[1]!, kernel: { name: m[2]!, machine: m[3]! }, by: { os: m[4]!, kernel: { name: m[5]! } } });
  }
  return out;
}

/** A memo file, read and its header parsed; its sections are checked and parsed when asked for. */
export interface GraphMemo {
  /** What drivers.yaml said when its bytes had this sha256 (its section checked), or undefined. */
  drivers(driversYamlSha256: string): DriversFile | undefined;
  /** The targets and the shadowed kernels' names, when the memo is for `key` and its sections read back whole; undefined otherwise. */
  targets(key: string, context: MemoContext): { targets: Target[]; shadowed: ShadowedName[] } | undefined;
}

/** What the memo's targets are rebuilt with: the graph's drivers and builders, and its lockfiles, read when first asked for. */
export interface MemoContext {
  drivers: readonly ResolvedDriver[];
  builder: BuilderPin;
  compilerImages?: readonly CompilerImagePin[];
  /** The OS of lockfile `i` (its file name), known without reading it. */
  osOf(i: number): string | undefined;
  /** Lockfile `i`, parsed and checked on first use (synchronously; it throws what loading it would). */
  lockfile(i: number): LoadedLockfile;
}

/** The memo under `root`, or undefined when there is none or its header is not one. Reads the file; checks nothing else yet. */
export function readGraphMemo(root: string): GraphMemo | undefined {
  let bytes: Buffer;
  try {
    bytes = readFileSync(graphCachePath(root));
  } catch {
    return undefined;
  }
  const memo = parseMemo(bytes);
  if (!memo) return undefined;
  return {
    drivers(driversYamlSha256) {
      if (driversYamlSha256 !== memo.driversYamlSha256) return undefined;
      const text = sectionText(memo, memo.drivers);
      if (text === undefined) return undefined;
      try {
        return JSON.parse(text) as DriversFile;
      } catch {
        return undefined;
      }
    },
    targets(key, context) {
      if (key !== memo.key) return undefined;
      const text = sectionText(memo, memo.targets);
      const shadowedText = sectionText(memo, memo.shadowed);
      if (text === undefined || shadowedText === undefined) return undefined;
      try {
        const stored = parseTargetLines(text);
        const shadowed = parseShadowedLines(shadowedText);
        if (stored.length !== memo.targets.count || shadowed.length !== memo.shadowed.count) return undefined;
        const targets = memoTargets(stored, context);
        return targets && { targets, shadowed };
      } catch {
        return undefined;
      }
    },
  };
}

/** What a memo target reads its kernel, os-release and builder from, the first time one is asked for. */
interface LazyParts {
  stored: StoredTarget;
  context: MemoContext;
  kernel?: KernelDescriptor;
  builder?: BuilderPin;
}

/**
 * A target from the memo: every name and path passed the rules in
 * parseTargetLines; its kernel, os-release and builder are accessors that
 * read the lockfile the first time one of them is asked for. They are own
 * enumerable properties of a plain object (the prototype is reset to
 * Object.prototype), so a memo target spreads, compares and serializes like
 * one a full load makes; the accessors are shared by all of them, which
 * keeps making ten thousand of them cheap.
 */
class MemoTarget {
  static #descriptors: { kernel: PropertyDescriptor; osRelease: PropertyDescriptor; builder: PropertyDescriptor } | undefined;
  #lazy: LazyParts;

  static make(stored: StoredTarget, context: MemoContext, os: string, driver: ResolvedDriver, output: string): Target {
    return Object.setPrototypeOf(new MemoTarget(stored, context, os, driver, output), Object.prototype) as Target;
  }

  private constructor(stored: StoredTarget, context: MemoContext, os: string, driver: ResolvedDriver, output: string) {
    this.#lazy = { stored, context };
    const d = (MemoTarget.#descriptors ??= {
      kernel: {
        get: function (this: MemoTarget) {
          return this.#kernel();
        },
        enumerable: true,
        configurable: true,
      },
      osRelease: {
        get: function (this: MemoTarget) {
          return this.#lazy.context.lockfile(this.#lazy.stored.lockfile).lock.osRelease;
        },
        enumerable: true,
        configurable: true,
      },
      builder: {
        get: function (this: MemoTarget) {
          const lazy = this.#lazy;
          return (lazy.builder ??= builderForTarget(this.#kernel(), lazy.stored.kind, lazy.context.builder, lazy.context.compilerImages));
        },
        enumerable: true,
        configurable: true,
      },
    });
    const self = this as unknown as Record<string, unknown>;
    // The order of a full load's targets (targets.ts).
    self['label'] = targetLabel(os, stored.name);
    self['name'] = stored.name;
    self['os'] = os;
    Object.defineProperty(this, 'kernel', d.kernel);
    Object.defineProperty(this, 'osRelease', d.osRelease);
    self['driver'] = driver;
    Object.defineProperty(this, 'builder', d.builder);
    self['kind'] = stored.kind;
    self['arch'] = stored.arch;
    self['key'] = stored.key;
    self['probeFile'] = stored.probeFile;
    self['output'] = output;
  }

  #kernel(): KernelDescriptor {
    const lazy = this.#lazy;
    if (lazy.kernel) return lazy.kernel;
    const loaded = lazy.context.lockfile(lazy.stored.lockfile);
    const k = loaded.lock.kernels[lazy.stored.kernel];
    // The memo was written from these bytes: a kernel that is not there, or of another machine, is a bug, never a guess.
    if (!k || k.machine !== lazy.stored.arch)
      throw new Error(`the graph memo does not match ${loaded.relativePath}; remove .falco-probes/cache/ and run again`);
    return (lazy.kernel = k);
  }
}

/** The memo's targets rebuilt; undefined when one names a lockfile, driver or kind that is not there. */
function memoTargets(stored: readonly StoredTarget[], context: MemoContext): Target[] | undefined {
  // A driver's version is the output's first segment: held to the segment rule once per driver (the file name was, per target).
  const versionOk = context.drivers.map((d) => PATH_SEGMENT_RE.test(d.version));
  const out: Target[] = new Array(stored.length);
  for (let i = 0; i < stored.length; i++) {
    const s = stored[i]!;
    const os = context.osOf(s.lockfile);
    const driver = context.drivers[s.driver];
    if (os === undefined || !driver || !versionOk[s.driver] || !driver.kinds.includes(s.kind)) return undefined;
    out[i] = MemoTarget.make(s, context, os, driver, targetOutput(driver.version, s.arch, s.probeFile));
  }
  return out;
}

export async function writeGraphCache(
  root: string,
  key: string,
  drivers: { yamlSha256: string; value: DriversFile },
  graph: {
    lockfiles: readonly LoadedLockfile[];
    drivers: readonly ResolvedDriver[];
    targets: readonly Target[];
    shadowed: readonly ShadowedName[];
  },
  logger?: Logger,
): Promise<void> {
  const where = new Map<object, [number, number]>();
  for (const [li, l] of graph.lockfiles.entries()) for (const [ki, k] of l.lock.kernels.entries()) where.set(k, [li, ki]);
  const driverIndex = new Map<ResolvedDriver, number>(graph.drivers.map((d, i) => [d, i]));
  const targets: StoredTarget[] = [];
  for (const t of graph.targets) {
    const at = where.get(t.kernel);
    const di = driverIndex.get(t.driver);
    if (!at || di === undefined) return; // not a graph this memo can describe: leave it unwritten
    targets.push({
      lockfile: at[0],
      kernel: at[1],
      driver: di,
      kind: t.kind,
      arch: t.arch,
      name: t.name,
      key: t.key,
      probeFile: t.probeFile,
    });
  }
  const path = graphCachePath(root);
  try {
    // Its sections' sha256 are checked when read: no fsync (writeCacheFileSync).
    writeCacheFileSync(
      path,
      sealGraphMemo({ key, driversYamlSha256: drivers.yamlSha256, drivers: drivers.value, targets, shadowed: graph.shadowed }),
    );
    // The JSON memo of format 2 (graph.json) is not read any more.
    rmSync(join(dirname(path), 'graph.json'), { force: true });
  } catch (err) {
    logger?.debug(`graph cache not written (${(err as Error).message}); the next run loads the graph again`);
  }
}
