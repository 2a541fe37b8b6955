import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { cp, mkdir, readdir, rm, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { BIN, PROJECT_ROOT, runCli, withTempDir } from './helpers/cli.js';
import { obtainDebianKernels } from './helpers/kernel-headers.js';
import { skipOrFail } from './helpers/require.js';
import {
  descendants,
  killEverythingUnder,
  processes,
  signalGroup,
  survivorsAfter,
  temporariesUnder,
  temporaryForm,
  type Proc,
} from './helpers/leftovers.js';
import { descriptors, snapshot, startDebMirror, writeProject } from './build-e2e-project.js';
import { cachePath } from '../src/fetch/cache.js';
import { treeHash } from '../src/util/tree-hash.js';
import { readIndex } from '../src/repository/index-file.js';
import { checkTree, readManifest } from '../src/run/tree-manifest.js';
import { sha256File } from '../src/util/hash.js';
import type { BuildReport } from '../src/run/runner.js';

// Issue 14's soak: `falco-probes build` killed with SIGKILL at ten random
// moments of its run, each from an emptied cache, a filled one (as a
// finished run leaves it) or the one the last kill left, then one full run. The project: one real Debian 6.1 kernel (three packages) and two
// drivers, the example probe from the project's folder and the same probe
// as a tarball pinned by tree hash and served on loopback (so the drivers
// cache is in play too): two targets, built with -j 2.
//
// The kill takes the runner and every process it started at one instant:
// the runner's process group is stopped, the groups of its descendants
// (make and the compilers run in groups of their own) are found through
// /proc and stopped, then every group gets SIGKILL. After the full run:
//   (a) no temporary is left in the cache, the project's state folder or
//       the repository (helpers/leftovers.ts lists every temporary name the
//       tool makes; every work directory counts);
//   (b) the repository is byte-identical (every file, hidden ones too:
//       index.json, SHA256SUMS) to a clean build's in another folder;
//   (c) every cached package is its sha256, every unpacked tree and kernel
//       root passes its manifest with every file's sha256, and every
//       manifest has its tree.
// Then temporaries of dead processes are planted in every place and form:
// a run with nothing to build removes those of the project's state and of
// the repository, and a run with something to build those of the cache.
//
// The moments come from a seeded generator: the seed is printed, and
// FALCO_PROBES_SOAK_SEED=<seed> replays the same choices (the cache each run
// starts from, the delays); the phase a delay lands in still depends on the machine's
// speed and load.

const TIMEOUT = 900_000;
const KILLS = 10;
/**
 * The cache a run starts from (the first one: an empty cache): emptied, or
 * filled (as a finished run leaves it), or as the last killed run left it.
 * Unpacking takes most of a cold run; filled caches give the later phases
 * (planning, checks, compiles, publishing) their share of the kills.
 */
const EMPTIED = 0.25;
const FILLED = 0.35;
/** Above Linux's largest pid_max (2^22): never a live process. */
const DEAD = 2 ** 22 + 1;
/** The repository's memo: local state (stat fields of this folder's files), never published; not compared across folders. */
const LOCAL_STATE = new Set(['.falco-probes-memo']);

/** A tarball-sourced copy of the example probe (another name and version, so another target). */
function tarballDriver(url: string, tree: string): string {
  return `  - name: example-tarball
    version: 2.0.0
    source:
      url: ${url}
      strip: 1
      tree: ${tree}
    recipe: kbuild
    bpfDir: .
    object: probe.o
    kinds: [bpf]
`;
}

interface Run {
  pid: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  done: () => boolean;
  /** Milliseconds from its start to its exit (once it exited). */
  ms: () => number;
  stderr: () => string;
}

/** The real CLI in a session and process group of its own, so that the group can be stopped and killed as one. */
function startBuild(args: string[], cwd: string): Run {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd,
    env: { ...process.env, CI: 'true' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let err = '';
  let finished = false;
  const t0 = Date.now();
  let took = 0;
  child.stdout.resume();
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => {
      finished = true;
      took = Date.now() - t0;
      resolve({ code, signal });
    }),
  );
  return { pid: child.pid!, exited, done: () => finished, ms: () => took, stderr: () => err };
}

/** What the stopped run was doing, from its own temporaries (its pid in their names) and its children. */
async function phaseOf(run: Run, cache: string, repo: string, children: readonly Proc[]): Promise<string> {
  const phases = new Set<string>();
  // A build runs through make; the runner's other children are the toolchain's `--version` probes (and tsx's esbuild service).
  if (children.some((p) => p.comm === 'make')) phases.add('compile');
  else if (children.some((p) => p.comm !== 'esbuild')) phases.add('toolchain-probe');
  const mine = async (dir: string) =>
    (await readdir(dir).catch(() => [] as string[])).filter((n) => n.includes(`.${run.pid}.`) || n.includes(`.extract-${run.pid}-`));
  for (const shard of await readdir(join(cache, 'sha256')).catch(() => [] as string[]))
    if ((await mine(join(cache, 'sha256', shard))).length) phases.add('download');
  for (const n of await mine(join(cache, 'trees'))) phases.add(n.includes('.extract-') ? 'unpack' : 'hash-tree');
  if ((await mine(join(cache, 'kernel-roots'))).length) phases.add('compose-root');
  if ((await mine(join(cache, 'drivers'))).length) phases.add('driver-source');
  for (const n of await mine(repo)) phases.add(n.includes('falco-probes.lock.') ? 'lock' : 'publish');
  if ((await mine(join(repo, '.falco-probes-tmp'))).length) phases.add('publish');
  // Else, a target's work directory (`<key>-<pid>`): checking the kernel root, preparing the kernel view and the driver's copy, or taking the object.
  const work = await readdir(join(dirname(repo), '.falco-probes', 'work')).catch(() => [] as string[]);
  if (phases.size === 0 && work.some((n) => n.endsWith(`-${run.pid}`))) phases.add('target-work');
  if (phases.size === 0) phases.add(/ to build with -j /.test(run.stderr()) ? 'between' : 'startup');
  return [...phases].sort().join('+');
}

/**
 * kill -9 of the run and of everything it started, at one instant. Returns
 * the phase it was in, or `finished` when it had exited on its own.
 */
async function killEverything(run: Run, cache: string, repo: string): Promise<string> {
  if (run.done()) return 'finished';
  signalGroup(run.pid, 'SIGSTOP');
  const all = await processes();
  const children = descendants(all, run.pid);
  const groups = new Set([run.pid, ...children.map((p) => p.pgid)]);
  for (const g of groups) signalGroup(g, 'SIGSTOP');
  const phase = await phaseOf(run, cache, repo, children);
  for (const g of groups) signalGroup(g, 'SIGKILL');
  const exit = await run.exited;
  // A run that exited on its own before the stop was not killed.
  return exit.signal === 'SIGKILL' ? phase : 'finished';
}

/** Empty the cache of what runs finished (packages, trees, roots, manifests, driver trees), keeping the temporaries dead runs left: the next run must sweep them. */
async function emptyCache(cache: string): Promise<void> {
  const dirs = ['trees', 'kernel-roots', 'trees-manifests', 'kernel-roots-manifests', 'drivers'].map((d) => join(cache, d));
  for (const shard of await readdir(join(cache, 'sha256')).catch(() => [] as string[])) dirs.push(join(cache, 'sha256', shard));
  for (const dir of dirs)
    for (const name of await readdir(dir).catch(() => [] as string[]))
      if (!temporaryForm(name)) await rm(join(dir, name), { recursive: true, force: true });
}

/** Fill the cache with what `from` (a finished run's cache) holds, as hard links, keeping what it has and its temporaries. */
async function fillCache(cache: string, from: string): Promise<void> {
  const dirs = ['trees', 'kernel-roots', 'trees-manifests', 'kernel-roots-manifests', 'drivers'];
  for (const shard of await readdir(join(from, 'sha256'))) dirs.push(join('sha256', shard));
  for (const d of dirs) {
    await mkdir(join(cache, d), { recursive: true });
    const have = new Set(await readdir(join(cache, d)));
    for (const name of await readdir(join(from, d)))
      if (!have.has(name) && !temporaryForm(name)) execFileSync('cp', ['-al', join(from, d, name), join(cache, d, name)]);
  }
}

/** Remove the repository's published content (probes, index.json, SHA256SUMS), keeping its hidden entries (lock, temporaries) for the next run to deal with. */
async function emptyRepository(repo: string): Promise<void> {
  for (const name of await readdir(repo).catch(() => [] as string[]))
    if (!name.startsWith('.')) await rm(join(repo, name), { recursive: true, force: true });
}

/** Every indexed probe of `repo` is whole (the index's sha256 and size). */
async function assertIndexedProbesWhole(repo: string, what: string): Promise<void> {
  for (const p of (await readIndex(repo)).probes) {
    const got = await sha256File(join(repo, p.file)).catch(() => undefined);
    assert.deepEqual(got, { sha256: p.sha256, size: p.size }, `${what}: ${p.file} is indexed but its bytes differ`);
  }
}

/** (c): every cached package is its sha256; every tree and kernel root passes its manifest, fully; every manifest has its tree. */
async function assertCacheVerified(cache: string, where: string): Promise<string> {
  let packages = 0;
  for (const shard of await readdir(join(cache, 'sha256'))) {
    for (const name of await readdir(join(cache, 'sha256', shard))) {
      const file = join(cache, 'sha256', shard, name);
      assert.equal(cachePath(cache, name), file, `${where}: ${file} is not at its address`);
      assert.equal((await sha256File(file)).sha256, name, `${where}: cached package ${file} is not its sha256`);
      packages++;
    }
  }
  const counts: string[] = [`${packages} packages by sha256`];
  for (const kind of ['trees', 'kernel-roots']) {
    const dir = join(cache, kind);
    const names = (await readdir(dir)).sort();
    assert.deepEqual(
      (await readdir(`${dir}-manifests`)).sort(),
      names.map((n) => `${n}.json`),
      `${where}: ${kind} and their manifests differ`,
    );
    for (const name of names) {
      const manifest = await readManifest(join(`${dir}-manifests`, `${name}.json`));
      assert.ok(manifest, `${where}: ${dir}/${name} has no readable manifest`);
      assert.equal(checkTree(join(dir, name), manifest, true), undefined, `${where}: ${dir}/${name} does not pass its manifest`);
    }
    counts.push(`${names.length} ${kind} by their manifests (every file's sha256)`);
  }
  return counts.join(', ');
}

/** Every file of a repository (hidden ones too) and its sha256, but its local state. */
async function files(repo: string): Promise<[string, string][]> {
  return [...(await snapshot(repo))]
    .filter(([f]) => !LOCAL_STATE.has(f))
    .map(([f, v]) => [f, v.sha256] as [string, string])
    .sort((a, b) => (a[0] < b[0] ? -1 : 1));
}

/** A small seeded generator (mulberry32): the same seed, the same choices. */
function generator(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

function chooseSeed(t: TestContext): number {
  const given = process.env['FALCO_PROBES_SOAK_SEED'];
  const seed = given !== undefined && given !== '' ? Number(given) : Math.floor(Math.random() * 2 ** 32);
  assert.ok(
    Number.isInteger(seed) && seed >= 0 && seed < 2 ** 32,
    `FALCO_PROBES_SOAK_SEED must be the decimal seed a soak printed, not ${given}`,
  );
  t.diagnostic(`seed ${seed} (replay with FALCO_PROBES_SOAK_SEED=${seed})`);
  return seed;
}

test("kill -9 at ten random moments, then a full run: no temporaries, the clean build's bytes, caches that pass their manifests", {
  timeout: TIMEOUT,
}, async (t) => {
  const obtained = await obtainDebianKernels();
  if (!obtained.ok) return skipOrFail(t, obtained.skip);
  const kernels = [obtained.kernels.find((k) => k.series === '6.1') ?? obtained.kernels[0]!];
  const seed = chooseSeed(t);
  const where = `soak seed ${seed} (replay with FALCO_PROBES_SOAK_SEED=${seed})`;
  const random = generator(seed);
  const started = Date.now();

  await withTempDir(async (dir) => {
    const mirror = await startDebMirror(dir, kernels);
    try {
      // The example probe as a driver tarball on the same loopback server (one top folder, stripped).
      const top = join(dir, 'tarball', 'example-2.0.0');
      await cp(join(PROJECT_ROOT, 'examples', 'probe'), top, { recursive: true });
      await mkdir(join(dir, 'mirror', 'drivers'), { recursive: true });
      execFileSync('tar', ['-C', join(dir, 'tarball'), '-czf', join(dir, 'mirror', 'drivers', 'example-2.0.0.tar.gz'), 'example-2.0.0']);
      const extraDrivers = tarballDriver(`${mirror.url.replace(/\/$/, '')}/drivers/example-2.0.0.tar.gz`, await treeHash(top));

      const project = async (name: string) => {
        const root = join(dir, name, 'project');
        await writeProject(root, { kernels: descriptors(kernels), mirrorUrl: mirror.url, extraDrivers });
        const cache = join(dir, name, 'cache');
        return {
          dir: join(dir, name),
          root,
          cache,
          repo: join(root, 'repository'),
          args: ['build', '-j', '2', '--fetch-via', 'http', '--cache', cache, '--json'],
        };
      };
      const fullRun = async (p: Awaited<ReturnType<typeof project>>, what: string) => {
        const t0 = Date.now();
        const r = await runCli(p.args, { cwd: p.root, timeoutMs: TIMEOUT });
        assert.equal(r.code, 0, `${where}: ${what}: ${r.stderr}`);
        return { report: JSON.parse(r.stdout) as BuildReport, ms: Date.now() - t0 };
      };

      // The clean build, in a folder of its own: the bytes to expect, and how long a cold and a warm run take here now.
      const clean = await project('clean');
      const cold = await fullRun(clean, 'the clean build');
      assert.equal(cold.report.built, 2);
      const reference = await files(clean.repo);
      await emptyRepository(clean.repo);
      const warm = await fullRun(clean, 'the clean build again, from its cache');
      assert.deepEqual(await files(clean.repo), reference, 'a second clean build gives the same bytes');
      t.diagnostic(`clean build of ${kernels[0]!.release}, 2 targets: cold ${cold.ms} ms, warm ${warm.ms} ms`);

      // Ten kills. A run that ends before its moment is not one (its exit must be 0); its length corrects the estimate.
      const soak = await project('soak');
      const packages = kernels.flatMap((k) => k.packages.map((p) => p.sha256));
      const phases = new Map<string, number>();
      const estimate = { cold: cold.ms, warm: warm.ms };
      const bytes = new Map(kernels.flatMap((k) => k.packages.map((p) => [p.sha256, p.size] as const)));
      const total = [...bytes.values()].reduce((a, b) => a + b, 0);
      for (let kills = 0, attempt = 1; kills < KILLS; attempt++) {
        assert.ok(attempt <= 3 * KILLS, `${where}: ${attempt - 1} runs gave only ${kills} kills`);
        const draw = attempt === 1 ? 0 : random();
        const start = draw < EMPTIED ? 'emptied' : draw < EMPTIED + FILLED ? 'filled' : 'as left';
        if (start === 'emptied') await emptyCache(soak.cache);
        if (start === 'filled') await fillCache(soak.cache, clean.cache);
        await emptyRepository(soak.repo);
        // The run's expected length: a warm run's, plus a cold run's extra share for the bytes of packages not unpacked yet.
        const trees = new Set(await readdir(join(soak.cache, 'trees')).catch(() => [] as string[]));
        const unpacked = [...bytes].filter(([sha]) => trees.has(sha)).reduce((a, [, n]) => a + n, 0) / total;
        const expected = estimate.warm + Math.max(0, estimate.cold - estimate.warm) * (1 - unpacked);
        const delay = Math.round(random() * expected);
        const state = `cache ${start}, ${Math.round(unpacked * 100)}% unpacked`;
        const run = startBuild(soak.args, soak.root);
        await new Promise((r) => setTimeout(r, delay));
        const phase = await killEverything(run, soak.cache, soak.repo);
        if (phase === 'finished') {
          assert.equal((await run.exited).code, 0, `${where}: a run that was not killed failed: ${run.stderr()}`);
          if (unpacked === 1) estimate.warm = run.ms();
          else if (unpacked === 0) estimate.cold = run.ms();
          t.diagnostic(`run ${attempt} (${state}) ended in ${run.ms()} ms, before its kill at ${delay} ms`);
        } else {
          kills++;
          phases.set(phase, (phases.get(phase) ?? 0) + 1);
          t.diagnostic(`kill ${kills}/${KILLS}: ${delay} ms into a run of about ${Math.round(expected)} ms (${state}): ${phase}`);
          assert.deepEqual(await survivorsAfter(soak.dir, 5000), [], `${where}: kill ${kills}: processes of the killed run survived`);
        }
        await assertIndexedProbesWhole(soak.repo, `${where}: run ${attempt}`);
      }
      const left = await temporariesUnder(soak.dir);
      t.diagnostic(`phases: ${[...phases].map(([p, n]) => `${p} ${n}`).join(', ')}`);
      t.diagnostic(
        `the kills left ${left.length} temporaries and work directories${left.length ? `: ${left.map((p) => p.slice(soak.dir.length + 1)).join(', ')}` : ''}`,
      );

      // The full run.
      const full = await fullRun(soak, 'the full run after the kills');
      t.diagnostic(`full run: ${full.report.built} built, ${full.report.upToDate} up to date in ${full.ms} ms`);
      assert.deepEqual(await temporariesUnder(soak.dir), [], `${where}: (a) temporaries left after the full run`);
      assert.deepEqual(await files(soak.repo), reference, `${where}: (b) the repository differs from the clean build's`);
      t.diagnostic(`(c) cache verified: ${await assertCacheVerified(soak.cache, `${where}: (c)`)}`);

      // Temporaries of dead processes in the project's state and the repository: a run with nothing to build removes them.
      const [sha] = packages;
      const [rootId] = await readdir(join(soak.cache, 'kernel-roots'));
      const index = await readIndex(soak.repo);
      const state = join(soak.root, '.falco-probes');
      const plant = async (dirs: string[], names: string[]) => {
        for (const d of dirs) await mkdir(join(d, 'usr', 'include'), { recursive: true });
        for (const f of names) await writeFile(f, f.endsWith('.break') ? String(DEAD) : 'partial');
        const all = [...dirs, ...names].sort();
        assert.deepEqual(await temporariesUnder(soak.dir), all, 'every planted temporary counts as one');
        return all;
      };
      await plant(
        [
          join(state, 'work', `${index.probes[0]!.key}-${DEAD}`),
          join(state, 'work', `${index.probes[1]!.key}-compile-${DEAD}`),
          join(soak.repo, '.falco-probes-tmp'),
        ],
        [
          join(state, 'cache', `.graph.json.${DEAD}.0badc0de.tmp`),
          join(soak.repo, `.index.json.${DEAD}.0badc0de.tmp`),
          // The lock's body before it is linked: `.<lock file>.<pid>.<hex>.tmp`, and the lock file's name starts with a dot too.
          join(soak.repo, `..falco-probes.lock.${DEAD}.0badc0de.tmp`),
          // A lock breaker's guard (its pid inside), with no stale lock to break.
          join(soak.repo, '.falco-probes.lock.break'),
        ],
      );
      const noop = await fullRun(soak, 'a run with nothing to build');
      assert.equal(noop.report.built, 0);
      assert.deepEqual(
        await temporariesUnder(soak.dir),
        [],
        'a run with nothing to build leaves temporaries of dead processes in the project or the repository',
      );
      assert.deepEqual(await files(soak.repo), reference, 'the repository after a run with nothing to build');

      // ... and in the cache, every form in every folder: a run with something to build (one probe file gone) removes them.
      await plant(
        [
          join(soak.cache, 'trees', `.${sha}.extract-${DEAD}-AbCdEf`),
          join(soak.cache, 'trees', `.${sha}.old-${DEAD}-0badc0de`),
          join(soak.cache, 'trees', `.${sha}.${DEAD}.0badc0de.tmp`),
          join(soak.cache, 'kernel-roots', `.${rootId}.${DEAD}.0badc0de.tmp`),
          join(soak.cache, 'drivers', `tree-${'d'.repeat(64)}.${DEAD}.0badc0de.tmp`),
          join(soak.cache, 'drivers', `.tree-${'d'.repeat(64)}.${DEAD}.0badc0de.tmp.extract-${DEAD}-AbCdEf`),
        ],
        [
          join(soak.cache, 'sha256', sha!.slice(0, 2), `.${sha}.${DEAD}.0badc0de.part`),
          join(soak.cache, 'trees-manifests', `.${sha}.json.${DEAD}.0badc0de.tmp`),
          join(soak.cache, 'kernel-roots-manifests', `.${rootId}.json.${DEAD}.0badc0de.tmp`),
          join(soak.cache, 'drivers', `tree-unknown.${DEAD}.0badc0de.part`),
        ],
      );
      await unlink(join(soak.repo, index.probes[0]!.file));
      const repair = await fullRun(soak, 'a run that rebuilds one probe');
      assert.equal(repair.report.built, 1);
      assert.deepEqual(
        await temporariesUnder(soak.dir),
        [],
        'a run with something to build leaves temporaries of dead processes in the cache',
      );
      assert.deepEqual(await files(soak.repo), reference, 'the repository after the rebuild');
      t.diagnostic(`wall time ${Math.round((Date.now() - started) / 1000)} s`);
    } finally {
      await mirror.close();
      // Should an assertion fail mid-soak: nothing of a run may outlive the test.
      await killEverythingUnder(dir);
    }
  });
});
