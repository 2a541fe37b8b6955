import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startMirror, type TestMirror } from './helpers/server.js';
import { PROJECT_ROOT, runCli } from './helpers/cli.js';
import { debianLikeSuites, type FixturePackage } from './helpers/apt-fixture.js';
import {
  createTestSigner,
  falcoctlProbeFile,
  legacyLoaderProbeFile,
  tempDir,
  writeAptRepository,
  type TestSigner,
} from './helpers/os-fixtures.js';
import { readLockfileText } from '../src/lockfile/lockfile.js';

// README.md shows adding an OS as one YAML file. This test takes that block
// as it is written (only its keyring paths point at a test key, because the
// loopback archive is signed by that key, not by Devuan), resolves it with the
// real binary against a signed loopback archive shaped like Devuan's merged
// archive, and checks the probe names Falco's loaders would ask for: a README
// example that is incomplete, breaks the schema or names a wrong key fails here.

let signer: TestSigner;
let mirror: TestMirror;
let root: string;
let project: string;

/** The first ```yaml block under the README's "Adding an OS" heading. */
async function readmeDefinition(): Promise<string> {
  const readme = await readFile(join(PROJECT_ROOT, 'README.md'), 'utf8');
  const start = readme.search(/^## Adding an OS/m);
  assert.ok(start >= 0, 'README.md has an "Adding an OS" section');
  const block = /```yaml\n([\s\S]*?)\n```/.exec(readme.slice(start));
  assert.ok(block, 'the section has a yaml block');
  return `${block[1]}\n`;
}

before(async () => {
  signer = await createTestSigner();
  root = await tempDir('readme-os-mirror-');
  project = await tempDir('readme-os-project-');
  // Devuan's merged archive carries Debian's kernel packages under its own suite names.
  for (const suite of debianLikeSuites()) {
    const name = suite.suite.replace('bookworm', 'daedalus');
    const packages = suite.components['main']!.filter((p): p is FixturePackage => 'name' in p);
    await writeAptRepository(join(root, 'merged'), { suite: name, arches: { amd64: packages }, signer, formats: ['xz'] });
  }
  mirror = await startMirror({ root });
});

after(async () => {
  await mirror.close();
  await signer.close();
  await rm(root, { recursive: true, force: true });
  await rm(project, { recursive: true, force: true });
});

test("the README's one-file OS definition resolves, signature checked, into the probe names Falco asks for", async () => {
  const text = await readmeDefinition();
  assert.match(text, /^id: devuan5\b/m);
  const keyrings = [...text.matchAll(/^(\s+keyring: ).*$/gm)];
  assert.equal(keyrings.length, 2, 'both repositories name a keyring');
  await mkdir(join(project, 'kernels'), { recursive: true });
  await writeFile(join(project, 'kernels', 'devuan5.yaml'), text.replace(/^(\s+keyring: ).*$/gm, `$1${signer.keyring}`));

  const r = await runCli(
    ['resolve', 'devuan5', '--mirror', `daedalus=${mirror.url}/merged`, '--mirror', `daedalus-security=${mirror.url}/merged`],
    { cwd: project, timeoutMs: 60_000 },
  );
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /signature not checked/);

  const lock = readLockfileText(await readFile(join(project, 'kernels', 'devuan5.lock.yaml'), 'utf8'), 'devuan5.lock.yaml');
  // The fixture's ABIs 6.1.0-10, -11, -12 and 6.12.30+deb12, plain and cloud (rt is not
  // in the definition; 4.9 is older than minimumKernel).
  const releases = lock.kernels.map((k) => k.release);
  assert.deepEqual(releases, [
    '6.1.0-10-amd64',
    '6.1.0-10-cloud-amd64',
    '6.1.0-11-amd64',
    '6.1.0-11-cloud-amd64',
    '6.1.0-12-amd64',
    '6.1.0-12-cloud-amd64',
    '6.12.30+deb12-amd64',
    '6.12.30+deb12-cloud-amd64',
  ]);
  for (const k of lock.kernels) {
    // What a Devuan node reports: os-release ID devuan, uname -r, uname -v "#1 SMP PREEMPT_DYNAMIC Debian <version>".
    const expected = `falco_devuan_${k.release}_1.o`;
    assert.equal(`falco_${k.targetId}_${k.release}_${k.kernelVersion}.o`, expected, k.release);
    assert.equal(falcoctlProbeFile(lock.osRelease, k.release, k.version), expected, `falcoctl, ${k.release}`);
    assert.equal(legacyLoaderProbeFile(lock.osRelease, k.release, k.version), expected, `legacy loader, ${k.release}`);
  }
  const k10 = lock.kernels.find((k) => k.release === '6.1.0-10-amd64')!;
  assert.equal(k10.version, '#1 SMP PREEMPT_DYNAMIC Debian 6.1.38-1');
  // The `image:` line finds the kernel image too (signed or, for 6.1.0-11, only -unsigned).
  assert.deepEqual(k10.packages.map((p) => p.role).sort(), ['common', 'headers', 'image', 'kbuild']);
  const k11 = lock.kernels.find((k) => k.release === '6.1.0-11-amd64')!;
  assert.equal(k11.packages.find((p) => p.role === 'image')?.name, 'linux-image-6.1.0-11-amd64-unsigned');
});
