import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PROJECT_ROOT, runCli, withTempDir } from './helpers/cli.js';
import { debianLikeDefinition, writeAptSuite } from './helpers/apt-fixture.js';
import { obtainDebianKernels, type DebianKernel, loaderFileFor } from './helpers/kernel-headers.js';
import { hostBuilderClang, snapshot, startDebMirror } from './build-e2e-project.js';
import { checkBpfObject, EM_BPF, ET_REL } from '../src/builders/elf.js';
import { readLockfileText } from '../src/lockfile/lockfile.js';
import { readIndex } from '../src/repository/index-file.js';
import { sha256Hex } from '../src/util/hash.js';
import type { BuildReport } from '../src/run/runner.js';
import { skipOrFail } from './helpers/require.js';

// The whole chain from real metadata to published probes: a loopback apt
// mirror whose index holds the real Debian stanzas of two kernels' header
// sets (exactly as apt's index gives them) and whose pool holds their real
// .debs; then the real binary resolves that index into a lockfile, generates
// the build files and builds the example probe for each kernel at -j 2.
// Every real package lives in bookworm-security (pool/updates/...); bookworm is
// served with an empty index, as a mirror without the kernels would be.

const TIMEOUT = 300_000;
const OS = 'debian12';
const SECURITY = 'bookworm-security';

/** The fields of a stanza that a lockfile's package must carry, read from its text here, not by the resolver's parser. */
function stanzaFields(stanza: string): { path: string; size: number; sha256: string } {
  const field = (name: string) => {
    const m = new RegExp(`^${name}: (\\S+)$`, 'm').exec(stanza);
    assert.ok(m, `the stanza has a ${name} field:\n${stanza}`);
    return m[1]!;
  };
  return { path: field('Filename'), size: Number(field('Size')), sha256: field('SHA256') };
}

async function writeProject(root: string): Promise<void> {
  await mkdir(join(root, 'kernels'), { recursive: true });
  await cp(join(PROJECT_ROOT, 'examples', 'probe'), join(root, 'examples', 'probe'), { recursive: true });
  // The definition's own mirrors are dead: every request goes to --mirror. Only the amd64
  // flavour's rule: the index holds no cloud or rt headers, and a rule that matches nothing fails.
  await writeFile(join(root, 'kernels', `${OS}.yaml`), debianLikeDefinition({}, { flavours: ['amd64'] }));
  await writeFile(
    join(root, 'kernels', 'drivers.yaml'),
    `builder:
  kind: host
  clang: "${await hostBuilderClang()}"
drivers:
  - name: example
    version: 1.0.0
    source:
      path: examples/probe
    recipe: kbuild
    bpfDir: .
    object: probe.o
    kinds: [bpf]
`,
  );
}

/** dists/ for both suites (Release and an unsigned InRelease, a plain Packages) beside the pool of real .debs. */
async function writeIndexes(mirrorRoot: string, kernels: readonly DebianKernel[]): Promise<string> {
  const stanzas = kernels.flatMap((k) => k.packages.map((p) => p.stanza));
  const security = await writeAptSuite(mirrorRoot, {
    suite: SECURITY,
    formats: ['plain'],
    components: { main: stanzas.map((s) => ({ raw: s.replace(/\n+$/, '') })) },
  });
  await writeAptSuite(mirrorRoot, { suite: 'bookworm', formats: ['plain'], components: { main: [] } });
  const packages = security.indexes.get('main/binary-amd64/Packages')!.toString('utf8');
  // The served index is the real stanzas, byte for byte, one after another.
  assert.equal(packages, stanzas.map((s) => s.replace(/\n+$/, '\n')).join('\n'));
  return packages;
}

function parseReport(stdout: string): BuildReport {
  return JSON.parse(stdout) as BuildReport;
}

test('resolve a real index from a loopback mirror, generate, build one BPF probe per kernel at -j 2, then a no-op', {
  timeout: TIMEOUT,
}, async (t) => {
  const obtained = await obtainDebianKernels();
  if (!obtained.ok) return skipOrFail(t, obtained.skip);
  const kernels = obtained.kernels;
  assert.ok(kernels.length >= 2);

  await withTempDir(async (dir) => {
    // startDebMirror links the pool into dir/mirror and serves that directory.
    await writeIndexes(join(dir, 'mirror'), kernels);
    const mirror = await startDebMirror(dir, kernels);
    try {
      const root = join(dir, 'project');
      await writeProject(root);
      const mirrors = ['--mirror', `bookworm=${mirror.url}`, '--mirror', `${SECURITY}=${mirror.url}`];
      const timings: Record<string, number> = {};
      const timed = async (name: string, args: string[]) => {
        const start = Date.now();
        const r = await runCli(args, { cwd: root, timeoutMs: TIMEOUT });
        timings[name] = Date.now() - start;
        return r;
      };

      // resolve: the lockfile's packages are the stanzas' files, sizes and hashes.
      const resolved = await timed('resolve', ['resolve', OS, ...mirrors]);
      assert.equal(resolved.code, 0, resolved.stderr);
      assert.ok(mirror.requests.includes(`dists/${SECURITY}/main/binary-amd64/Packages`), 'the index came from the loopback mirror');
      const lockPath = join(root, 'kernels', `${OS}.lock.yaml`);
      const lock = readLockfileText(await readFile(lockPath, 'utf8'), lockPath);
      assert.deepEqual(lock.kernels.map((k) => k.release).sort(), kernels.map((k) => k.release).sort());
      for (const k of kernels) {
        const d = lock.kernels.find((x) => x.release === k.release)!;
        assert.equal(d.machine, 'x86_64');
        assert.match(d.version, new RegExp(`Debian ${k.version.replace(/[.+~]/g, '\\$&')}$`));
        const got = d.packages.map((p) => ({
          name: p.name,
          role: p.role,
          repository: p.repository,
          path: p.path,
          size: p.size,
          sha256: p.sha256,
        }));
        const want = k.packages.map((p) => ({ name: p.name, role: p.role, repository: SECURITY, ...stanzaFields(p.stanza) }));
        const byName = (a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name);
        assert.deepEqual(got.sort(byName), want.sort(byName), `${k.release}: packages as the stanzas give them`);
      }

      // generate: the build files name one target per kernel.
      const generated = await timed('generate', ['generate']);
      assert.equal(generated.code, 0, generated.stderr);
      const targets = await readFile(join(root, 'generated', 'targets.json'), 'utf8');
      for (const k of kernels) assert.ok(targets.includes(`//probes/${OS}:${k.release}`), `targets.json names ${k.release}`);
      assert.ok((await readdir(join(root, 'probes', OS))).includes('BUILD'));

      // build at -j 2: one ELF BPF object per kernel at Falco's path, fetched over loopback.
      const cache = join(dir, 'cache');
      const build = () =>
        timed('build', ['build', `//probes/${OS}/...`, '-j', '2', '--fetch-via', 'http', ...mirrors, '--cache', cache, '--json']);
      const first = await build();
      timings['first build'] = timings['build']!;
      assert.equal(first.code, 0, first.stderr);
      const report = parseReport(first.stdout);
      assert.deepEqual(
        report.results
          .filter((r) => r.status === 'built')
          .map((r) => r.label)
          .sort(),
        kernels.map((k) => `//probes/${OS}:${k.release}`).sort(),
      );
      for (const k of kernels)
        for (const p of k.packages) assert.ok(mirror.requests.includes(p.filename), `${p.filename} was fetched from the mirror`);
      const repo = join(root, 'repository');
      const index = await readIndex(repo);
      assert.deepEqual(index.probes.map((p) => p.file).sort(), kernels.map((k) => `1.0.0/x86_64/${loaderFileFor(k)}`).sort());
      for (const p of index.probes) {
        const bytes = await readFile(join(repo, p.file));
        const elf = checkBpfObject(bytes, p.file);
        assert.equal(elf.machine, EM_BPF);
        assert.equal(elf.type, ET_REL);
        assert.equal(sha256Hex(bytes), p.sha256);
        assert.equal(bytes.length, p.size);
      }

      // Again: nothing builds, nothing is fetched, no repository file changes (bytes and mtimes).
      const before = await snapshot(repo);
      const requestsBefore = mirror.requests.length;
      const again = await build();
      timings['no-op build'] = timings['build']!;
      assert.equal(again.code, 0, again.stderr);
      const report2 = parseReport(again.stdout);
      assert.deepEqual([report2.built, report2.upToDate], [0, kernels.length]);
      assert.deepEqual(await snapshot(repo), before);
      assert.equal(mirror.requests.length, requestsBefore);
      t.diagnostic(
        `timings (ms): ${JSON.stringify({ resolve: timings['resolve'], generate: timings['generate'], first: timings['first build'], noop: timings['no-op build'] })}`,
      );
    } finally {
      await mirror.close();
    }
  });
});
