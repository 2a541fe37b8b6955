import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { createKeyer, kernelCanonicalJson, keyInputs, keyOf, RECIPE_VERSIONS, targetKey } from '../src/graph/key.js';
import { canonicalJson, sha256Hex } from '../src/util/hash.js';
import { generate } from '../src/generate/generate.js';
import { withTempDir } from './helpers/cli.js';
import { driversText, kernel, makeProject, sourceDefinitionText } from './helpers/graph-project.js';
import type { KernelDescriptor } from '../src/config/types.js';
import type { BuilderPin, DriverKind, ResolvedDriver } from '../src/graph/types.js';

// Which input changes move a target's key, and which do not (docs/KEYS.md).

type Args = { kernel: KernelDescriptor; osRelease: Record<string, string>; driver: ResolvedDriver; builder: BuilderPin; kind: DriverKind };

function base(): Args {
  return {
    kernel: kernel('6.1.0-50-amd64'),
    osRelease: { ID: 'debian', VERSION_ID: '12' },
    driver: {
      name: 'falco',
      version: '9.1.0+driver',
      source: { url: 'https://example.invalid/libs.tar.gz', sha256: sha256Hex('libs'), strip: 1 },
      recipe: 'falco-libs',
      bpfDir: 'driver/bpf',
      object: 'probe.o',
      kinds: ['bpf'],
      kernels: { min: '4.14', max: '6.13' },
      sourceSha256: sha256Hex('libs'),
    },
    builder: { kind: 'host', clang: '14.0.6' },
    kind: 'bpf',
  };
}

const pkg0 = (a: Args) => a.kernel.packages[0]!;

const MOVES: [string, (a: Args) => void][] = [
  ['kernel name', (a) => (a.kernel.name = 'other')],
  ['release (uname -r)', (a) => (a.kernel.release = '6.1.0-51-amd64')],
  ['version (uname -v)', (a) => (a.kernel.version = '#2 SMP Debian 6.1.0-2')],
  ['machine (uname -m)', (a) => (a.kernel.machine = 'aarch64')],
  ["Falco's kernelversion", (a) => (a.kernel.kernelVersion = '2')],
  ['targetId', (a) => (a.kernel.targetId = 'debian-cloud')],
  ['flavour', (a) => (a.kernel.flavour = 'cloud-amd64')],
  ['flavour removed', (a) => delete a.kernel.flavour],
  ['package name', (a) => (pkg0(a).name = 'linux-headers-x')],
  ['package version', (a) => (pkg0(a).version = '6.1.0-2')],
  ['package repository', (a) => (pkg0(a).repository = 'security')],
  ['package path', (a) => (pkg0(a).path = 'pool/other.deb')],
  ['package sha256', (a) => (pkg0(a).sha256 = sha256Hex('other bytes'))],
  ['package size', (a) => (pkg0(a).size += 1)],
  ['package role', (a) => (pkg0(a).role = 'kbuild')],
  ['package added', (a) => a.kernel.packages.push({ ...pkg0(a), name: 'linux-kbuild-6.1', sha256: sha256Hex('kbuild') })],
  ['package removed', (a) => a.kernel.packages.pop()],
  ['os-release value', (a) => (a.osRelease['VERSION_ID'] = '13')],
  ['os-release key added', (a) => (a.osRelease['VERSION_CODENAME'] = 'bookworm')],
  ['driver sourceSha256', (a) => (a.driver.sourceSha256 = sha256Hex('other libs'))],
  ['driver version', (a) => (a.driver.version = '9.1.1+driver')],
  ['driver name', (a) => (a.driver.name = 'falco2')],
  ['driver recipe', (a) => (a.driver.recipe = 'kbuild')],
  ['driver bpfDir', (a) => (a.driver.bpfDir = 'driver/bpf2')],
  ['driver object', (a) => (a.driver.object = 'other.o')],
  ['builder clang version', (a) => (a.builder = { kind: 'host', clang: '15.0.7' })],
  ['builder kind (docker)', (a) => (a.builder = { kind: 'docker', image: `sha256:${sha256Hex('image')}`, clang: '14.0.6' })],
  ['kind', (a) => (a.kind = 'kmod')],
];

const STAYS: [string, (a: Args) => void][] = [
  ['package order', (a) => a.kernel.packages.reverse()],
  [
    'driver source URL (same sha256)',
    (a) => (a.driver.source = { url: 'https://mirror.invalid/elsewhere.tar.gz', sha256: sha256Hex('libs'), strip: 1 }),
  ],
  ['driver source given as a local path (same content hash)', (a) => (a.driver.source = { path: 'vendor/libs' })],
  ['driver kinds list', (a) => (a.driver.kinds = ['bpf', 'kmod'])],
  ['driver kernel range', (a) => (a.driver.kernels = { min: '5.4' })],
  ['object key order', (a) => (a.kernel = Object.fromEntries(Object.entries(a.kernel).reverse()) as unknown as KernelDescriptor)],
  ['os-release key order', (a) => (a.osRelease = Object.fromEntries(Object.entries(a.osRelease).reverse()))],
  // Only verify-load reads the bootable image: adding it, or Debian moving it from -unsigned to signed, rebuilds nothing.
  [
    'image package added',
    (a) => a.kernel.packages.push({ ...pkg0(a), name: 'linux-image-6.1.0-50-amd64', role: 'image', sha256: sha256Hex('image') }),
  ],
  [
    'image package replaced (unsigned to signed)',
    (a) => {
      a.kernel.packages.push({ ...pkg0(a), name: 'linux-image-6.1.0-50-amd64-unsigned', role: 'image', sha256: sha256Hex('unsigned') });
      const image = a.kernel.packages.at(-1)!;
      image.name = 'linux-image-6.1.0-50-amd64';
      image.sha256 = sha256Hex('signed');
      image.path = 'pool/main/l/linux-signed-amd64/linux-image-6.1.0-50-amd64_6.1.50-1_amd64.deb';
    },
  ],
];

test('key table: every field of the descriptor, driver, builder and kind moves the key', () => {
  const before = targetKey(base());
  assert.match(before, /^[0-9a-f]{64}$/);
  const keys = new Set([before]);
  for (const [what, change] of MOVES) {
    const a = base();
    change(a);
    const after = targetKey(a);
    assert.notEqual(after, before, `${what} should move the key`);
    keys.add(after);
  }
  assert.equal(keys.size, MOVES.length + 1, 'every change gives its own key');
});

test('key table: the recipe version moves the key', () => {
  const inputs = keyInputs(base());
  assert.equal(inputs.recipeVersion, RECIPE_VERSIONS['falco-libs']);
  assert.notEqual(keyOf({ ...inputs, recipeVersion: inputs.recipeVersion + 1 }), keyOf(inputs));
});

test('key table: order, source location, kinds and ranges do not move the key', () => {
  const before = targetKey(base());
  for (const [what, change] of STAYS) {
    const a = base();
    change(a);
    assert.equal(targetKey(a), before, `${what} should not move the key`);
  }
});

test('key inputs hold exactly the documented fields', async () => {
  const inputs = keyInputs(base()) as unknown as Record<string, unknown>;
  assert.deepEqual(Object.keys(inputs).sort(), ['arch', 'builder', 'driver', 'kernel', 'kind', 'osRelease', 'recipeVersion']);
  assert.deepEqual(Object.keys(inputs['driver'] as object).sort(), ['bpfDir', 'name', 'object', 'recipe', 'sourceSha256', 'version']);
  // docs/KEYS.md documents the same field names.
  const doc = await readFile(new URL('../docs/KEYS.md', import.meta.url), 'utf8');
  for (const field of [
    'recipeVersion',
    'osRelease',
    'sourceSha256',
    'bpfDir',
    'kernelVersion',
    'targetId',
    'flavour',
    'repository',
    'sha256',
    'size',
    'role',
    'clang',
    'image',
  ])
    assert.ok(doc.includes(`\`${field}\``), `docs/KEYS.md mentions ${field}`);
});

test('mirror URLs, lockfile package order, file times and the pinned source URL do not move any key', async () => {
  await withTempDir(async (a) => {
    await withTempDir(async (b) => {
      const kernels = [kernel('6.1.0-50-amd64'), kernel('6.12.9+deb12-amd64'), kernel('5.10.0-30-amd64')];
      await makeProject(a, { oses: { debian12: kernels }, mirror: 'https://one.invalid/debian' });
      await makeProject(b, {
        oses: { debian12: kernels },
        mirror: 'https://two.invalid/debian',
        drivers: driversText({ remoteUrl: 'https://elsewhere.invalid/libs-9.1.0.tar.gz' }),
      });
      // b's lockfile lists packages (and kernels) in another order, as a hand edit could.
      const defText = sourceDefinitionText('debian12', 'https://two.invalid/debian');
      const shuffled = {
        os: 'debian12',
        source: { path: 'kernels/debian12.yaml', sha256: sha256Hex(defText) },
        osRelease: { VERSION_ID: '12', ID: 'debian' },
        kernels: [...kernels].reverse().map((k) => ({ ...k, packages: [...k.packages].reverse() })),
      };
      await writeFile(join(b, 'kernels', 'debian12.lock.yaml'), stringify(shuffled));
      await utimes(join(b, 'kernels', 'debian12.lock.yaml'), new Date(2001, 1, 1), new Date(2001, 1, 1));

      await generate(a);
      await new Promise((r) => setTimeout(r, 20));
      await generate(b);
      const ta = await readFile(join(a, 'generated', 'targets.json'), 'utf8');
      const tb = await readFile(join(b, 'generated', 'targets.json'), 'utf8');
      assert.equal(JSON.parse(ta).targets.length, 6); // 3 kernels x (example, falco)
      assert.equal(tb, ta);
      assert.equal(
        await readFile(join(b, 'probes', 'debian12', 'BUILD'), 'utf8'),
        await readFile(join(a, 'probes', 'debian12', 'BUILD'), 'utf8'),
      );
    });
  });
});

test("the encoder gives exactly the sha256 of the documented inputs' canonical JSON", () => {
  const keyer = createKeyer();
  const cases: Args[] = [base()];
  for (const [, change] of [...MOVES, ...STAYS]) {
    const a = base();
    change(a);
    cases.push(a);
  }
  for (const a of cases) {
    assert.equal(keyer(a), keyOf(keyInputs(a)));
    assert.equal(targetKey(a), keyOf(keyInputs(a)));
    assert.equal(keyer(a), keyer(a), 'cached parts give the same key again');
  }
});

test('the descriptor encoder writes exactly canonical JSON', () => {
  const kernels = [kernel('6.1.0-50-amd64'), kernel('5.15.0-24~20.04.3-generic', { machine: 'aarch64' })];
  const noFlavour = kernel('4.14.232-176.381.amzn2.x86_64');
  delete noFlavour.flavour;
  delete noFlavour.packages[0]!.role;
  noFlavour.packages[1]!.size = 0;
  kernels.push(noFlavour);
  // Packages out of order, and with the image (which no key takes): the same text, and the descriptor left as it was.
  const unordered = kernel('6.12.9+deb12-amd64');
  unordered.packages.reverse();
  const withImage = kernel('6.1.0-51-amd64');
  withImage.packages.unshift({ ...withImage.packages[0]!, name: 'linux-image-6.1.0-51-amd64', role: 'image' });
  kernels.push(unordered, withImage);
  const before = JSON.stringify(kernels);
  for (const k of kernels) assert.equal(kernelCanonicalJson(k), canonicalJson(keyInputs({ ...base(), kernel: k }).kernel));
  assert.equal(JSON.stringify(kernels), before, 'the descriptors are not changed');
});
