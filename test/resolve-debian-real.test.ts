import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROJECT_ROOT, runCli } from './helpers/cli.js';
import { startDebianRealMirror, type DebianRealMirror } from './helpers/debian-real-mirror.js';
import { readLockfile } from '../src/lockfile/lockfile.js';
import { loadSourceDefinition } from '../src/config/source-definition.js';
import { resolveSource } from '../src/resolve/index.js';
import { FalcoProbesError } from '../src/util/errors.js';
import type { Lockfile } from '../src/config/types.js';
import { probeFileOf } from '../src/graph/targets.js';
import { falcoctlProbeFile } from './helpers/os-fixtures.js';
import { skipOrFail } from './helpers/require.js';

// kernels/debian12.yaml resolved against this machine's own apt index for
// bookworm and bookworm-security, served on loopback with the InRelease files
// exactly as the archive signed them (checked with gpgv against the Debian
// archive keyring, as the definition says).

interface IndexEntry {
  name: string;
  version: string;
  filename: string;
  size: number;
  sha256: string;
  depends: string;
  suite: string;
}

/** An independent, simple reading of a Packages file (whole-file; fine for a test). */
async function readIndex(file: string, suite: string): Promise<IndexEntry[]> {
  const text = await readFile(file, 'latin1');
  const out: IndexEntry[] = [];
  for (const stanza of text.split('\n\n')) {
    const field = (k: string) => new RegExp(`^${k}: (.*)$`, 'm').exec(stanza)?.[1];
    const name = field('Package');
    if (!name || !/^linux-(headers|kbuild|image)-/.test(name)) continue;
    out.push({
      name,
      version: field('Version')!,
      filename: field('Filename')!,
      size: Number(field('Size')),
      sha256: field('SHA256')!,
      depends: field('Depends') ?? '',
      suite,
    });
  }
  return out;
}

let real: DebianRealMirror | undefined;
let skip: string | undefined;
let dir: string;
const index: IndexEntry[] = [];
let lock: Lockfile;
let lockBytes: Buffer;

before(async () => {
  const started = await startDebianRealMirror();
  if (!started.ok) {
    skip = started.skip;
    return;
  }
  real = started.value;
  for (const s of real.suites) index.push(...(await readIndex(s.packagesFile, s.suite)));
  dir = await mkdtemp(join(tmpdir(), 'falco-probes-debian-real-'));
  await mkdir(join(dir, 'kernels'));
  await copyFile(join(PROJECT_ROOT, 'kernels', 'debian12.yaml'), join(dir, 'kernels', 'debian12.yaml'));
});

after(async () => {
  await real?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('debian12 from the real Debian 12 index', () => {
  test('resolve through the CLI, with the signatures checked', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const r = await runCli(['resolve', 'debian12', ...real!.mirrorArgs], { cwd: dir, timeoutMs: 300_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /signature not checked/);
    lockBytes = await readFile(join(dir, 'kernels', 'debian12.lock.yaml'));
    lock = await readLockfile(join(dir, 'kernels', 'debian12.lock.yaml'));
    assert.ok(!lockBytes.toString().includes('127.0.0.1'), 'no mirror URL in the lockfile');
  });

  test('every linux-headers-*-amd64 (plain, cloud, rt) of the index is a kernel with its -common and linux-kbuild packages', async (t) => {
    if (skip) return skipOrFail(t, skip);
    assert.ok(lock, 'the resolve test ran');
    // Metapackages (linux-headers-amd64, linux-headers-6.12-amd64) only depend on the current ABI's headers package.
    const flavoured = /^linux-headers-[0-9].*-(amd64|cloud-amd64|rt-amd64)$/;
    const isMeta = (e: IndexEntry) => e.depends.split(',').some((d) => flavoured.test(d.trim().split(/[\s(]/)[0]!));
    const headers = index.filter((e) => flavoured.test(e.name) && !isMeta(e));
    assert.ok(headers.length >= 3, `the index has ${headers.length} kernel headers packages`);
    const releases = [...new Set(headers.map((e) => e.name.slice('linux-headers-'.length)))].sort();
    assert.deepEqual(lock.kernels.map((k) => k.release).sort(), releases);
    for (const k of lock.kernels) {
      const abi = k.release.replace(/-(rt-|cloud-)?amd64$/, '');
      const byRole = new Map(k.packages.map((p) => [p.role, p]));
      assert.equal(byRole.get('headers')?.name, `linux-headers-${k.release}`);
      assert.equal(
        byRole.get('common')?.name,
        k.flavour === 'rt-amd64' ? `linux-headers-${abi}-common-rt` : `linux-headers-${abi}-common`,
        k.name,
      );
      assert.match(byRole.get('kbuild')?.name ?? '', /^linux-kbuild-/, k.name);
      const headersVersion = byRole.get('headers')!.version;
      assert.equal(byRole.get('common')!.version, headersVersion, `${k.name}: -common has the headers' version`);
      // kbuild: the headers' own version when the index lists it, else a newer one (it moved on).
      const kbuild = byRole.get('kbuild')!;
      const exact = index.some((e) => e.name === kbuild.name && e.version === headersVersion);
      if (exact) assert.equal(kbuild.version, headersVersion, k.name);
      assert.equal(k.version, `#1 SMP ${k.flavour === 'rt-amd64' ? 'PREEMPT_RT' : 'PREEMPT_DYNAMIC'} Debian ${headersVersion}`);
      assert.equal(k.kernelVersion, '1');
      assert.equal(k.machine, 'x86_64');
    }
  });

  test("probe file names are the ones Falco's loader asks for, derived from the index", async (t) => {
    if (skip) return skipOrFail(t, skip);
    assert.ok(lock, 'the resolve test ran');
    // Falco's rule for Debian (docs/OS.md, falcoctl pkg/driver/distro/debian.go): target id
    // `debian`; the release is rebuilt from `uname -v` (`#1 SMP PREEMPT_DYNAMIC Debian
    // <version>`): its first x.y.z-n (the package version without `~deb12u1`-style tails) plus
    // the flavour suffix of `uname -r`; kernelversion 1. The expected names come from the
    // index (package name and version), not from the lockfile.
    // Lazy, so that the flavour group takes `cloud-amd64` whole rather than `amd64`.
    const flavoured = /^linux-headers-([0-9].*?-(amd64|cloud-amd64|rt-amd64))$/;
    const isMeta = (e: IndexEntry) => e.depends.split(',').some((d) => flavoured.test(d.trim().split(/[\s(]/)[0]!));
    const headers = index.filter((e) => flavoured.test(e.name) && !isMeta(e));
    const debianRelease = (e: IndexEntry) => `${/^\d+\.\d+\.\d+-\d+/.exec(e.version)![0]}-${flavoured.exec(e.name)![2]}`;
    const fileOf = (e: IndexEntry) => `falco_debian_${debianRelease(e)}_1.o`;
    assert.deepEqual(lock.kernels.map((k) => probeFileOf(k)).sort(), [...new Set(headers.map(fileOf))].sort());

    // A few by hand: the first of each flavour, and a backport release with `+` in it when the index has one.
    const few = ['amd64', 'cloud-amd64', 'rt-amd64'].map((f) => headers.find((e) => flavoured.exec(e.name)![2] === f));
    assert.ok(
      few.every((e) => e !== undefined),
      'plain, cloud and rt headers are in the index',
    );
    const backport = headers.find((e) => e.name.includes('+'));
    if (backport) few.push(backport);
    for (const e of few as IndexEntry[]) {
      const release = e.name.slice('linux-headers-'.length);
      const k = lock.kernels.find((x) => x.release === release);
      assert.ok(k, `${release} is in the lockfile`);
      const preempt = release.endsWith('-rt-amd64') ? 'PREEMPT_RT' : 'PREEMPT_DYNAMIC';
      const unameV = `#1 SMP ${preempt} Debian ${e.version}`;
      assert.equal(probeFileOf(k), `falco_debian_${debianRelease(e)}_1.o`, release);
      // falcoctl's own steps on a node that reports this os-release, uname -r and uname -v.
      assert.equal(falcoctlProbeFile({ ID: 'debian', VERSION_ID: '12' }, release, unameV), probeFileOf(k), `falcoctl, ${release}`);
    }
  });

  test('sizes, paths and SHA256s are the index entries', async (t) => {
    if (skip) return skipOrFail(t, skip);
    assert.ok(lock, 'the resolve test ran');
    let checked = 0;
    for (const k of lock.kernels)
      for (const p of k.packages) {
        const e = index.find((x) => x.suite === p.repository && x.name === p.name && x.version === p.version);
        assert.ok(e, `${k.name}: ${p.name} ${p.version} is not in ${p.repository}'s index`);
        assert.equal(p.path, e.filename);
        assert.equal(p.size, e.size);
        assert.equal(p.sha256, e.sha256);
        checked++;
      }
    assert.ok(checked >= lock.kernels.length * 3);
  });

  test('resolving twice gives identical bytes', async (t) => {
    if (skip) return skipOrFail(t, skip);
    assert.ok(lockBytes, 'the resolve test ran');
    const r = await runCli(['resolve', 'debian12', ...real!.mirrorArgs], { cwd: dir, timeoutMs: 300_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /up to date/);
    assert.ok((await readFile(join(dir, 'kernels', 'debian12.lock.yaml'))).equals(lockBytes));
    const check = await runCli(['resolve', '--check', 'debian12', ...real!.mirrorArgs], { cwd: dir, timeoutMs: 300_000 });
    assert.equal(check.code, 0, check.stderr);
  });

  test('a tampered InRelease, or a keyring without the archive key, is refused', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const source = await loadSourceDefinition(join(dir, 'kernels', 'debian12.yaml'), dir);
    const overrides = new Map(real!.suites.map((s) => [s.suite, [s.base]]));
    const suite = real!.suites[0]!;
    const original = await readFile(suite.inReleaseFile, 'utf8');
    // One changed size in the signed SHA256 list: what a mirror serving a forged index would need.
    const forged = original.replace(
      /^( [0-9a-f]{64}\s+)(\d+)( main\/binary-amd64\/Packages)$/m,
      (_m, a: string, n: string, b: string) => `${a}${Number(n) + 1}${b}`,
    );
    assert.notEqual(forged, original);
    real!.mirror.files.set(`${suite.suite}/dists/${suite.suite}/InRelease`, Buffer.from(forged));
    try {
      await assert.rejects(resolveSource(source, { mirrorOverrides: overrides }), (err: unknown) => {
        assert.ok(err instanceof FalcoProbesError);
        assert.match(
          err.format(),
          new RegExp(`^${suite.base.replace(/\./g, '\\.')}/dists/${suite.suite}/InRelease: OpenPGP signature check failed`),
        );
        return true;
      });
    } finally {
      real!.mirror.files.clear();
    }
    const wrongKey = {
      ...source,
      definition: {
        ...source.definition,
        repositories: source.definition.repositories.map((r) => ({ ...r, keyring: '/usr/share/keyrings/debian-archive-removed-keys.gpg' })),
      },
    };
    await assert.rejects(resolveSource(wrongKey, { mirrorOverrides: overrides }), /OpenPGP signature check failed/);
  });
});
