import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, rename, rm, stat, writeFile, appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import fg from 'fast-glob';
import { runCli, withTempDir } from './helpers/cli.js';
import { driversText, kernel, makeProject, writeLockfileFor } from './helpers/graph-project.js';
import { serializeIndex } from '../src/repository/index-file.js';
import { renderPublishedRecord } from '../src/repository/published-record.js';
import { sha256Hex } from '../src/util/hash.js';
import { probeFileOf } from '../src/graph/targets.js';

// `falco-probes generate` end to end, through the real binary, in throwaway projects.

const KERNELS = () => [kernel('6.1.0-50-amd64'), kernel('6.1.0-50-cloud-amd64', { flavour: 'cloud-amd64' }), kernel('6.12.9+deb12-amd64')];

/** Every generated file and stamp with its bytes and nanosecond mtime. */
async function snapshot(root: string): Promise<Map<string, { text: string; mtime: bigint }>> {
  const files = await fg(['probes/**', 'generated/**', '.falco-probes/keys/**'], { cwd: root, dot: true, onlyFiles: true });
  const out = new Map<string, { text: string; mtime: bigint }>();
  for (const f of files.sort())
    out.set(f, { text: await readFile(join(root, f), 'utf8'), mtime: (await stat(join(root, f), { bigint: true })).mtimeNs });
  return out;
}

type Targets = { targets: { label: string; name: string; key: string; driver: string; output: string; arch: string }[] };
const targetsOf = async (root: string) => JSON.parse(await readFile(join(root, 'generated', 'targets.json'), 'utf8')) as Targets;

test('generate writes every file, byte-identical and untouched on a second run; --check agrees', async () => {
  await withTempDir(async (root) => {
    await makeProject(root, { oses: { debian12: KERNELS(), other: [kernel('5.10.0-30-amd64', { machine: 'aarch64' })] } });
    const first = await runCli(['generate'], { cwd: root });
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /debian12: 6 target\(s\)/);
    assert.match(first.stdout, /other: 2 target\(s\)/);
    assert.match(first.stdout, /7 file\(s\) written, 0 unchanged/);
    const before = await snapshot(root);
    assert.deepEqual([...before.keys()].sort(), [
      'generated/Makefile',
      'generated/drivers.schema.json',
      'generated/lockfile.schema.json',
      'generated/source-definition.schema.json',
      'generated/targets.json',
      'probes/debian12/BUILD',
      'probes/other/BUILD',
    ]);

    await new Promise((r) => setTimeout(r, 30));
    const second = await runCli(['generate'], { cwd: root });
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /0 file\(s\) written, 7 unchanged\n$/);
    assert.deepEqual(await snapshot(root), before, 'same bytes and same modification times');

    const check = await runCli(['generate', '--check'], { cwd: root });
    assert.equal(check.code, 0, check.stdout + check.stderr);
    assert.match(check.stdout, /0 file\(s\) out of date/);

    // A new kernel: --check names the three files that would change and writes nothing.
    await writeLockfileFor(root, 'debian12', [...KERNELS(), kernel('6.1.0-51-amd64')]);
    const stale = await runCli(['generate', '--check'], { cwd: root });
    assert.equal(stale.code, 1);
    assert.deepEqual(
      stale.stdout
        .split('\n')
        .filter((l) => l.startsWith('would'))
        .sort(),
      ['would write generated/Makefile', 'would write generated/targets.json', 'would write probes/debian12/BUILD'],
    );
    assert.deepEqual(await snapshot(root), before, '--check wrote nothing');
  });
});

test('target names: the kernel alone for one driver, with the driver for several, with the arch when machines share a name', async () => {
  await withTempDir(async (root) => {
    await makeProject(root, {
      oses: {
        one: [kernel('6.1.0-49-amd64')],
        two: [kernel('6.1.0-50-amd64'), kernel('5.15.0-1019-aws', { machine: 'aarch64' }), kernel('5.15.0-1019-aws')],
      },
      drivers: driversText({ remote: 'pinned' }),
    });
    // In "one", give the falco driver a range that admits nothing: only one driver applies.
    await writeFile(
      join(root, 'kernels', 'drivers.yaml'),
      driversText({ remote: 'pinned' }).replace('min: "4.14"\n      max: "6.13"', 'min: "6.13"'),
    );
    const r = await runCli(['generate'], { cwd: root });
    assert.equal(r.code, 0, r.stderr);
    const names = (await targetsOf(root)).targets.map((t) => t.label);
    assert.deepEqual(names, [
      '//probes/one:6.1.0-49-amd64',
      '//probes/two:5.15.0-1019-aws-aarch64',
      '//probes/two:5.15.0-1019-aws-x86_64',
      '//probes/two:6.1.0-50-amd64',
    ]);
    await writeFile(join(root, 'kernels', 'drivers.yaml'), driversText({ remote: 'pinned' }));
    assert.equal((await runCli(['generate'], { cwd: root })).code, 0);
    const t = (await targetsOf(root)).targets;
    assert.deepEqual(
      t.filter((x) => x.label.startsWith('//probes/one:')).map((x) => x.name),
      ['6.1.0-49-amd64-example-1.0.0', '6.1.0-49-amd64-falco-9.1.0+driver'],
    );
    assert.ok(t.every((x) => x.output.startsWith(x.driver === 'falco' ? '9.1.0+driver/' : '1.0.0/')));
  });
});

test('an unpinned remote driver gets no targets and a one-line notice; pinned drivers are unaffected', async () => {
  await withTempDir(async (root) => {
    await makeProject(root, { oses: { debian12: KERNELS() }, drivers: driversText({ remote: 'unpinned' }) });
    const r = await runCli(['generate'], { cwd: root });
    assert.equal(r.code, 0, r.stderr);
    const notices = r.stderr.split('\n').filter((l) => l.includes('falco'));
    assert.equal(notices.length, 1);
    assert.match(
      notices[0]!,
      /notice: driver falco 9\.1\.0\+driver has no sha256 pin; it gets no targets \(run `falco-probes pin falco`\)/,
    );
    const t = (await targetsOf(root)).targets;
    assert.equal(t.length, 3);
    assert.ok(
      t.every((x) => x.driver === 'example' && x.name.endsWith('-example-1.0.0')),
      'names keep the driver suffix: pinning renames nothing',
    );
  });
});

test('kernels/published.json pins published probes with hashes; the local repository only dates their fresh make stamps back', async () => {
  await withTempDir(async (root) => {
    await makeProject(root, { oses: { debian12: KERNELS() } });
    assert.equal((await runCli(['generate'], { cwd: root })).code, 0);
    const [one, two] = (await targetsOf(root)).targets;
    const bytes = 'a published probe\n';
    await mkdir(join(root, 'repository', one!.output, '..'), { recursive: true });
    await writeFile(join(root, 'repository', one!.output), bytes);
    const entry = (t: typeof one, sha: string) => ({
      file: t!.output,
      key: t!.key,
      sha256: sha,
      size: bytes.length,
      os: 'debian12',
      kernel: 'k',
      driver: t!.driver,
      driverVersion: '1',
      arch: t!.arch,
      kind: 'bpf',
    });
    // `two` is listed for another key: no stamp for it.
    await writeFile(
      join(root, 'repository', 'index.json'),
      serializeIndex({ version: 1, probes: [entry(one, sha256Hex(bytes)), { ...entry(two, sha256Hex('x')), key: sha256Hex('old key') }] }),
    );
    const r = await runCli(['generate'], { cwd: root });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /make key stamps: 1 created for probes the repository holds, 0 of old keys removed/);
    // Its make key stamp predates the published file, so make keeps it; the others have none yet.
    assert.equal((await stat(join(root, '.falco-probes', 'keys', one!.key))).mtimeMs, 0);
    await assert.rejects(stat(join(root, '.falco-probes', 'keys', two!.key)));
    // What a build left in repository/ pins nothing: the generated files come from checked-in files only.
    const buildPath = join(root, 'probes', 'debian12', 'BUILD');
    assert.doesNotMatch(await readFile(buildPath, 'utf8'), /hashes = /);

    // The checked-in record (what `publish --record` keeps) pins `one` for its key; `two`'s entry is for an old key.
    await writeFile(
      join(root, 'kernels', 'published.json'),
      renderPublishedRecord(
        new Map([
          [one!.key, { file: one!.output, sha256: sha256Hex(bytes) }],
          [sha256Hex('old key'), { file: two!.output, sha256: sha256Hex('x') }],
        ]),
      ),
    );
    const stale = await runCli(['generate', '--check'], { cwd: root });
    assert.equal(stale.code, 1);
    assert.match(stale.stdout, /would write probes\/debian12\/BUILD/);
    const pinned = await runCli(['generate'], { cwd: root });
    assert.equal(pinned.code, 0, pinned.stderr);
    const build = await readFile(buildPath, 'utf8');
    assert.equal(build.match(/hashes = /g)?.length, 1);
    const call = build.slice(build.indexOf(`name = "${one!.name}"`));
    assert.match(call.slice(0, call.indexOf(')')), new RegExp(`hashes = \\["${sha256Hex(bytes)}"\\]`));

    // A fresh clone (no repository/) or CI pointing elsewhere: --check gives the same answer.
    await rename(join(root, 'repository'), join(root, 'published'));
    const bare = await runCli(['generate', '--check'], { cwd: root });
    assert.equal(bare.code, 0, bare.stdout + bare.stderr);
    const pointed = await runCli(['generate', '--check', '--repository', 'published'], { cwd: root });
    assert.equal(pointed.code, 0, pointed.stdout + pointed.stderr);
    const wrong = await runCli(['generate', '--check', '--repository', 'nowhere'], { cwd: root });
    assert.equal(wrong.code, 2);
  });
});

test('a lockfile whose source definition changed is refused: run resolve', async () => {
  await withTempDir(async (root) => {
    await makeProject(root, { oses: { debian12: KERNELS() } });
    await appendFile(join(root, 'kernels', 'debian12.yaml'), '# edited after resolving\n');
    const r = await runCli(['generate'], { cwd: root });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /kernels\/debian12\.lock\.yaml:\d+:\d+: kernels\/debian12\.lock\.yaml is stale/);
    assert.match(r.stderr, /run `falco-probes resolve debian12`/);
    assert.deepEqual(await fg(['probes/**', 'generated/**', '.falco-probes/**'], { cwd: root, dot: true }), [], 'nothing written');
  });
});

test('a hostile kernel name stops generation, naming the lockfile entry; nothing is written', async () => {
  await withTempDir(async (root) => {
    await makeProject(root, { oses: { debian12: KERNELS() } });
    assert.equal((await runCli(['generate'], { cwd: root })).code, 0);
    const before = await snapshot(root);
    const lockPath = join(root, 'kernels', 'debian12.lock.yaml');
    const good = await readFile(lockPath, 'utf8');
    const hostile = good.replace('  - name: 6.1.0-50-cloud-amd64\n', '  - name: "6.1$(touch pwned):x"\n');
    assert.notEqual(hostile, good);
    await writeFile(lockPath, hostile);
    const line = hostile.split('\n').findIndex((l) => l.includes('pwned')) + 1;
    const r = await runCli(['generate'], { cwd: root });
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`kernels/debian12\\.lock\\.yaml:${line}:5: kernels\\[\\d\\]: refusing target name "6\\.1\\$\\(touch pwned\\):x"`),
    );
    assert.deepEqual(await snapshot(root), before, 'nothing written');

    // A name the lockfile rules accept but that is too long once the driver is added.
    const long = `6.1.0-${'a'.repeat(245)}`;
    await writeFile(lockPath, good.replace('  - name: 6.1.0-50-cloud-amd64\n', `  - name: ${long}\n`));
    const r2 = await runCli(['generate'], { cwd: root });
    assert.equal(r2.code, 2, r2.stderr);
    assert.match(
      r2.stderr,
      new RegExp(
        `kernels/debian12\\.lock\\.yaml:${line}:5: kernels/debian12\\.lock\\.yaml: kernel "${long}" \\(x86_64\\): target name "${long}-example-1\\.0\\.0" is not one Please and Make can take literally`,
      ),
    );
    assert.deepEqual(await snapshot(root), before, 'nothing written');

    // Names a recipe's command line would read as an option (`-`) or the shell would expand (`~`).
    for (const name of ['--help', '-j99', '~root', '~']) {
      await writeFile(lockPath, good.replace('  - name: 6.1.0-50-cloud-amd64\n', `  - name: "${name}"\n`));
      const r3 = await runCli(['generate'], { cwd: root });
      assert.equal(r3.code, 2, `${name}: ${r3.stderr}`);
      assert.ok(
        r3.stderr.includes(`kernels/debian12.lock.yaml:${line}:5: kernels[1]: refusing target name "${name}"`),
        `${name}: ${r3.stderr}`,
      );
      assert.match(r3.stderr, /starting with a letter or digit/);
      assert.deepEqual(await snapshot(root), before, `${name}: nothing written`);
    }
  });
});

test('schema errors in a lockfile or in drivers.yaml stop generation with file:line:col; nothing is written', async () => {
  await withTempDir(async (root) => {
    await makeProject(root, { oses: { debian12: KERNELS() } });
    const lockPath = join(root, 'kernels', 'debian12.lock.yaml');
    const good = await readFile(lockPath, 'utf8');
    const broken = good.replace(/size: \d+/, 'size: -5');
    await writeFile(lockPath, broken);
    const line = broken.split('\n').findIndex((l) => l.includes('size: -5')) + 1;
    const r = await runCli(['generate'], { cwd: root });
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`kernels/debian12\\.lock\\.yaml:${line}:\\d+: kernels\\.0\\.packages\\.0\\.size must be >= 0`));
    assert.deepEqual(await fg(['probes/**', 'generated/**', '.falco-probes/**'], { cwd: root, dot: true }), []);

    // Not YAML the fast reader knows, and broken: the full parser still says where.
    await writeFile(lockPath, good.replace('kernels:\n', 'kernels: [\n'));
    const r2 = await runCli(['generate'], { cwd: root });
    assert.equal(r2.code, 2);
    assert.match(r2.stderr, /kernels\/debian12\.lock\.yaml:\d+:\d+: invalid YAML/);

    await writeFile(lockPath, good);
    const driversPath = join(root, 'kernels', 'drivers.yaml');
    const drivers = driversText().replace('recipe: kbuild', 'recipe: cmake');
    await writeFile(driversPath, drivers);
    const dline = drivers.split('\n').findIndex((l) => l.includes('cmake')) + 1;
    const r3 = await runCli(['generate'], { cwd: root });
    assert.equal(r3.code, 2);
    assert.match(r3.stderr, new RegExp(`kernels/drivers\\.yaml:${dline}:\\d+: drivers\\.0\\.recipe must be one of "kbuild", "falco-libs"`));

    await writeFile(driversPath, driversText().replace('version: 1.0.0', 'version: 9.1.0+driver'));
    const r4 = await runCli(['generate'], { cwd: root });
    assert.equal(r4.code, 2);
    assert.match(r4.stderr, /kernels\/drivers\.yaml:\d+:\d+: driver version "9\.1\.0\+driver" is used by two drivers/);
    assert.deepEqual(await fg(['probes/**', 'generated/**', '.falco-probes/**'], { cwd: root, dot: true }), [], 'still nothing written');
  });
});

test('a local driver directory that does not exist is a clear error at its line', async () => {
  await withTempDir(async (root) => {
    await makeProject(root, { oses: { debian12: KERNELS() } });
    await rm(join(root, 'drivers'), { recursive: true });
    const r = await runCli(['generate'], { cwd: root });
    assert.equal(r.code, 2);
    const line =
      driversText()
        .split('\n')
        .findIndex((l) => l.includes('path: drivers/example')) + 1;
    assert.match(
      r.stderr,
      new RegExp(`kernels/drivers\\.yaml:${line}:\\d+: driver example: source directory drivers/example does not exist`),
    );
  });
});

test('two OSes that would publish the same probe file are refused, naming both targets', async () => {
  await withTempDir(async (root) => {
    await makeProject(root, { oses: { first: [kernel('6.1.0-50-amd64')], second: [kernel('6.1.0-50-amd64')] } });
    const r = await runCli(['generate'], { cwd: root });
    assert.equal(r.code, 2);
    // The name Falco's loader asks for: the driver's own name, Debian's release rebuilt from the package version.
    const file = probeFileOf(kernel('6.1.0-50-amd64'), 'example', 'bpf');
    assert.equal(file, 'example_debian_6.1.50-1-amd64_1.o');
    assert.ok(
      r.stderr.includes(
        `//probes/second:6.1.0-50-amd64-example-1.0.0 and //probes/first:6.1.0-50-amd64-example-1.0.0 would both publish 1.0.0/x86_64/${file}`,
      ),
      r.stderr,
    );
  });
});

test('the BUILD file of an OS whose lockfile is gone is removed, and the key stamps of its targets', async () => {
  await withTempDir(async (root) => {
    await makeProject(root, { oses: { debian12: KERNELS(), gone: [kernel('5.10.0-30-amd64')] } });
    assert.equal((await runCli(['generate'], { cwd: root })).code, 0);
    // As a make run would leave them: a key stamp per built probe.
    const targets = (await targetsOf(root)).targets;
    await mkdir(join(root, '.falco-probes', 'keys'), { recursive: true });
    for (const t of targets) await writeFile(join(root, '.falco-probes', 'keys', t.key), '');
    await rm(join(root, 'kernels', 'gone.lock.yaml'));
    await rm(join(root, 'kernels', 'gone.yaml'));
    // A hand-written BUILD beside it is not ours to remove.
    await mkdir(join(root, 'probes', 'custom'), { recursive: true });
    await writeFile(join(root, 'probes', 'custom', 'BUILD'), '# mine\n');
    const check = await runCli(['generate', '--check'], { cwd: root });
    assert.equal(check.code, 1);
    assert.match(check.stdout, /would remove probes\/gone\/BUILD/);
    const r = await runCli(['generate'], { cwd: root });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /removed probes\/gone\/BUILD/);
    assert.match(r.stdout, /make key stamps: 0 created for probes the repository holds, 2 of old keys removed/);
    assert.equal((await fg('*', { cwd: join(root, '.falco-probes', 'keys') })).length, 6);
    assert.equal(await readFile(join(root, 'probes', 'custom', 'BUILD'), 'utf8'), '# mine\n');
    await assert.rejects(stat(join(root, 'probes', 'gone', 'BUILD')));
  });
});
