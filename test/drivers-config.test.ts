import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PROJECT_ROOT } from './helpers/cli.js';
import { join } from 'node:path';
import { driversPathFor, isUnpinnedRemote, loadDrivers, parseDriversText, setDriverPin } from '../src/config/drivers.js';
import { resolveDriverIdentities } from '../src/graph/driver-identity.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { sha256Hex } from '../src/util/hash.js';

// kernels/drivers.yaml: the three source forms (tarball by sha256 or tree,
// Debian package, local folder), the fields each kind needs, one driver
// name with several versions, and errors at file:line:col.

const SHA = 'a'.repeat(64);
const TREE = 'b'.repeat(64);

const file = (drivers: string) => `builder:
  kind: host
  clang: "14.0.6"
drivers:
${drivers}`;

const debDriver = (over: { path?: string; dir?: string; extra?: string } = {}) => `  - name: scap
    version: 0.23.2
    source:
      deb:
        archive: debian
        aptPath: /debian
        name: falcosecurity-scap-dkms
        version: 0.23.2-6
        path: ${over.path ?? 'pool/main/f/falcosecurity-libs/falcosecurity-scap-dkms_0.23.2-6_all.deb'}
        sha256: ${SHA}
        size: 154920${over.extra ?? ''}
      dir: ${over.dir ?? 'usr/src/scap-0.23.2'}
    recipe: kbuild
    kinds: [kmod, bpf]
    kmodDir: .
    module: scap.ko
    bpfDir: bpf
    object: probe.o
`;

const falco = (version: string, source: string, rest = '    kinds: [kmod]\n    kmodDir: driver\n    module: falco.ko\n') => `  - name: falco
    version: ${version}
    source:
${source}    recipe: falco-libs
${rest}`;

function refused(text: string, pattern: RegExp): void {
  assert.throws(
    () => parseDriversText(text, 'drivers.yaml'),
    (e: unknown) => {
      assert.ok(e instanceof FalcoProbesError, String(e));
      assert.match(e.format(), pattern);
      return true;
    },
  );
}

test('the three source forms load; one name may have several versions; a tarball without a pin is unpinned', () => {
  const loaded = parseDriversText(
    file(
      debDriver() +
        falco('10.2.0+driver', `      url: https://github.invalid/libs/10.2.0%2Bdriver.tar.gz\n      strip: 1\n      tree: ${TREE}\n`) +
        falco(
          '9.1.0+driver',
          `      url: https://github.invalid/libs/9.1.0%2Bdriver.tar.gz\n      sha256: ${SHA}\n`,
          '    kinds: [kmod, bpf]\n    kmodDir: driver\n    module: falco.ko\n    bpfDir: driver/bpf\n    object: probe.o\n',
        ) +
        falco('8.0.0+driver', '      url: https://github.invalid/libs/8.0.0%2Bdriver.tar.gz\n') +
        '  - name: example\n    version: 1.0.0\n    source:\n      path: examples/probe\n    recipe: kbuild\n    kinds: [bpf]\n    bpfDir: .\n    object: probe.o\n',
    ),
    'drivers.yaml',
  );
  assert.deepEqual(
    loaded.drivers.map((d) => `${d.name} ${d.version}`),
    ['scap 0.23.2', 'falco 10.2.0+driver', 'falco 9.1.0+driver', 'falco 8.0.0+driver', 'example 1.0.0'],
  );
  assert.deepEqual(
    loaded.drivers.map((d) => isUnpinnedRemote(d)),
    [false, false, false, true, false],
  );
});

test('the rules: one pin per tarball, the fields each kind needs and no others, unique versions, safe paths; each at file:line:col', () => {
  const tarball = (pins: string) => file(falco('10.2.0+driver', `      url: https://github.invalid/x.tar.gz\n${pins}`));
  refused(
    tarball(`      sha256: ${SHA}\n      tree: ${TREE}\n`),
    /^drivers\.yaml:10:7: driver falco 10\.2\.0\+driver: source has both sha256 and tree; pin it one way/,
  );
  refused(tarball('      tree: abc\n'), /^drivers\.yaml:9:7: drivers\.0\.source\.tree must match/);
  // bpf needs bpfDir and object; kmod needs kmodDir and module; a field of a kind not built is refused.
  refused(
    file(
      falco(
        '9.1.0+driver',
        `      url: https://x.invalid/a.tar.gz\n      tree: ${TREE}\n`,
        '    kinds: [kmod, bpf]\n    kmodDir: driver\n    module: falco.ko\n    bpfDir: driver/bpf\n',
      ),
    ),
    /^drivers\.yaml:11:5: driver falco 9\.1\.0\+driver builds kind bpf, so it needs bpfDir and object .*; object is missing/,
  );
  refused(
    file(falco('9.1.0+driver', `      url: https://x.invalid/a.tar.gz\n      tree: ${TREE}\n`, '    kinds: [kmod]\n    kmodDir: driver\n')),
    /^drivers\.yaml:11:5: driver falco 9\.1\.0\+driver builds kind kmod, so it needs kmodDir and module .*; module is missing/,
  );
  refused(
    file(
      falco(
        '9.1.0+driver',
        `      url: https://x.invalid/a.tar.gz\n      tree: ${TREE}\n`,
        '    kinds: [kmod]\n    kmodDir: driver\n    module: falco.ko\n    bpfDir: driver/bpf\n',
      ),
    ),
    /^drivers\.yaml:14:5: driver falco 9\.1\.0\+driver has bpfDir but does not build kind bpf/,
  );
  for (const bad of ['falco.o', 'fal.co.ko', '../x.ko', '-x.ko', 'a b.ko'])
    refused(
      file(
        falco(
          '10.2.0+driver',
          `      url: https://x.invalid/a.tar.gz\n      tree: ${TREE}\n`,
          `    kinds: [kmod]\n    kmodDir: driver\n    module: "${bad}"\n`,
        ),
      ),
      /^drivers\.yaml:13:5: drivers\.0\.module must match/,
    );
  refused(
    file(
      falco(
        '10.2.0+driver',
        `      url: https://x.invalid/a.tar.gz\n      tree: ${TREE}\n`,
        '    kinds: [kmod]\n    kmodDir: driver/../..\n    module: falco.ko\n',
      ),
    ),
    /^drivers\.yaml:12:5: drivers\.0\.kmodDir must match/,
  );
  // Versions: a name twice with one version, or one version under two names.
  const one = falco('10.2.0+driver', `      url: https://x.invalid/a.tar.gz\n      tree: ${TREE}\n`);
  refused(file(one + one), /^drivers\.yaml:15:5: driver falco 10\.2\.0\+driver is listed twice \(also drivers\[0\]\)/);
  refused(
    file(one + one.replace('name: falco', 'name: other')),
    /^drivers\.yaml:15:5: driver version "10\.2\.0\+driver" is used by two drivers \(falco in drivers\[0\] and other\); the repository keeps one folder per driver version/,
  );
  // A package: a pool path and a folder that stay inside their roots, a size, mirrors that are URLs.
  refused(
    file(debDriver({ path: 'pool/../../etc/passwd' })),
    /^drivers\.yaml:13:9: source\.deb\.path "pool\/\.\.\/\.\.\/etc\/passwd" must be a path relative to the archive root/,
  );
  refused(file(debDriver({ path: '/pool/x.deb' })), /^drivers\.yaml:13:9: drivers\.0\.source\.deb\.path must match/);
  refused(file(debDriver({ dir: 'usr/../../x' })), /^drivers\.yaml:16:7: drivers\.0\.source\.dir must match/);
  refused(file(debDriver({ extra: '\n        mirrors: [not a url]' })), /drivers\.0\.source\.deb\.mirrors\.0 must match/);
  refused(
    file(debDriver({ extra: '\n        aptPath: debian' }).replace('        aptPath: /debian\n', '')),
    /drivers\.0\.source\.deb\.aptPath must match/,
  );
  refused(file(debDriver().replace('size: 154920', 'size: 0')), /drivers\.0\.source\.deb\.size must be >= 1/);
  refused(
    file(debDriver().replace('      dir: usr/src/scap-0.23.2\n', '')),
    /drivers\.0\.source is missing the required key "dir"|unknown key "deb"/,
  );
});

test('identities: a tree pin is its tree hash, a package is sha256("deb:<sha256>:<dir>"), a sha256 pin is the sha256', async () => {
  const loaded = parseDriversText(
    file(
      debDriver() +
        falco('10.2.0+driver', `      url: https://x.invalid/a.tar.gz\n      tree: ${TREE}\n`) +
        falco('9.9.9+driver', `      url: https://x.invalid/b.tar.gz\n      sha256: ${SHA}\n`),
    ),
    'drivers.yaml',
  );
  const ids = await resolveDriverIdentities(loaded, PROJECT_ROOT);
  assert.deepEqual(
    ids.resolved.map((d) => d.sourceSha256),
    [sha256Hex(`deb:${SHA}:usr/src/scap-0.23.2`), TREE, SHA],
  );
});

test("the repository's kernels/drivers.yaml: Debian's scap package and Falco's two drivers, pinned, with no mirror host", async () => {
  const loaded = await loadDrivers(driversPathFor(join(PROJECT_ROOT, 'kernels')));
  assert.deepEqual(
    loaded.drivers.map((d) => `${d.name} ${d.version} [${d.kinds.join(',')}]`),
    ['scap 0.23.2 [kmod,bpf]', 'falco 10.2.0+driver [kmod]', 'falco 9.1.0+driver [kmod,bpf]'],
  );
  assert.equal(loaded.builder.gcc, 'gcc (Debian 12.2.0-14+deb12u1) 12.2.0');
  const ids = await resolveDriverIdentities(loaded, PROJECT_ROOT);
  assert.equal(ids.unpinned.length, 0);
  const scap = loaded.drivers[0]!.source;
  assert.ok('deb' in scap && scap.deb.mirrors === undefined, "the package names no mirror: apt's sources or --mirror debian=URL give it");
});

test('pin edits: setDriverPin finds a driver by name and version when the name is shared, and keeps the rest of the text', () => {
  const text = file(
    falco('10.2.0+driver', '      url: https://x.invalid/a.tar.gz\n      strip: 1\n') +
      falco('9.1.0+driver', '      url: https://x.invalid/b.tar.gz\n'),
  );
  assert.throws(
    () => setDriverPin(text, 'drivers.yaml', 'falco', 'tree', TREE),
    /2 drivers are named falco in drivers\.yaml; name the version too/,
  );
  const edited = setDriverPin(text, 'drivers.yaml', { name: 'falco', version: '9.1.0+driver' }, 'tree', TREE);
  assert.equal(edited, text.replace('b.tar.gz\n', `b.tar.gz\n      tree: ${TREE}\n`));
  const loaded = parseDriversText(edited, 'drivers.yaml');
  assert.deepEqual(
    loaded.drivers.map((d) => isUnpinnedRemote(d)),
    [true, false],
  );
});
