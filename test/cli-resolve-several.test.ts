import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './helpers/cli.js';
import { startMirror, type TestMirror } from './helpers/server.js';
import { debianLikeDefinition, debianLikeSuites, writeAptSuite } from './helpers/apt-fixture.js';

// `resolve` with several OSes through the real binary: every OS is resolved before
// any lockfile is written, so a failure in one leaves every lockfile as it was and
// every failure is reported under its OS's name.

let dir: string;
let mirror: TestMirror;
const kernels = () => join(dir, 'kernels');
const lockOf = (os: string) => join(kernels(), `${os}.lock.yaml`);
const cli = (args: string[]) => runCli(args, { cwd: dir, timeoutMs: 60_000 });

/** A definition for OS `id` with kernels/debian12.yaml's rules, its two suites served from `variant` folders of the mirror. */
function definition(id: string, bookworm = 'good', security = 'good', extra = ''): string {
  const text = debianLikeDefinition({
    bookworm: `${mirror.url}/${bookworm}/bookworm`,
    'bookworm-security': `${mirror.url}/${security}/bookworm-security`,
  }).replace(/^id: debian12$/m, `id: ${id}`);
  return `${text}${extra}`;
}
const define = (id: string, text: string) => writeFile(join(kernels(), `${id}.yaml`), text);

async function snapshot(os: string): Promise<{ bytes: Buffer; mtimeMs: number }> {
  return { bytes: await readFile(lockOf(os)), mtimeMs: (await stat(lockOf(os))).mtimeMs };
}
async function assertUntouched(os: string, was: { bytes: Buffer; mtimeMs: number }): Promise<void> {
  const now = await snapshot(os);
  assert.ok(now.bytes.equals(was.bytes), `${os}.lock.yaml kept its bytes`);
  assert.equal(now.mtimeMs, was.mtimeMs, `${os}.lock.yaml kept its modification time`);
}
/** No temporary lockfile left behind by an aborted write. */
async function assertNoTemporaries(): Promise<void> {
  assert.deepEqual(
    (await readdir(kernels())).filter((f) => f.endsWith('.tmp')),
    [],
  );
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'falco-probes-cli-resolve-several-'));
  const root = join(dir, 'mirror');
  const [bookworm, security] = debianLikeSuites();
  await writeAptSuite(join(root, 'good', 'bookworm'), bookworm!);
  await writeAptSuite(join(root, 'good', 'bookworm-security'), security!);
  // 6.1.0-12 gone from security: a resolve against it would drop three kernels.
  const fewer = {
    ...security!,
    components: { main: security!.components['main']!.filter((p) => !('name' in p) || !p.name.includes('6.1.0-12')) },
  };
  await writeAptSuite(join(root, 'fewer', 'bookworm-security'), fewer);
  // Nothing is served under missing/: every request there is a 404.
  mirror = await startMirror({ root });
  await mkdir(kernels());
  await define('alpha', definition('alpha'));
  await define('beta', definition('beta'));
});

after(async () => {
  await mirror.close();
  await rm(dir, { recursive: true, force: true });
});

describe('resolve with several OSes writes all lockfiles or none', () => {
  test('both resolve: both lockfiles are written', async () => {
    const r = await cli(['resolve', 'alpha', 'beta']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /alpha: wrote .*alpha\.lock\.yaml \(12 kernels\)/);
    assert.match(r.stderr, /beta: wrote .*beta\.lock\.yaml \(12 kernels\)/);
  });

  test("the second OS gets a 404: the first OS's stale lockfile is not rewritten, and the failure names beta and the URL", async () => {
    const alpha = await snapshot('alpha');
    const beta = await snapshot('beta');
    // A changed definition makes alpha's lockfile stale (its hash is in the header):
    // a resolve that wrote as it went would rewrite it before reaching beta.
    await define('alpha', definition('alpha', 'good', 'good', '# edited\n'));
    await define('beta', definition('beta', 'missing'));
    await new Promise((r) => setTimeout(r, 20));
    const r = await cli(['resolve', 'alpha', 'beta']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /resolve failed for beta \(1 of 2 OSes\); no lockfile was written/);
    assert.match(r.stderr, new RegExp(`^beta: ${mirror.url.replace(/[.]/g, '\\.')}/missing/bookworm/dists/bookworm: .*HTTP 404`, 'm'));
    assert.doesNotMatch(r.stderr, /^alpha: http/m, 'alpha resolved fine and is not reported as failed');
    assert.doesNotMatch(r.stderr, /wrote/);
    assert.equal(r.stdout, '', 'no diff is printed for a lockfile that was not written');
    await assertUntouched('alpha', alpha);
    await assertUntouched('beta', beta);
    await assertNoTemporaries();
  });

  test("the second OS's resolve would drop kernels: the removal is refused and the first lockfile stays as it was", async () => {
    const alpha = await snapshot('alpha');
    const beta = await snapshot('beta');
    await define('beta', definition('beta', 'good', 'fewer'));
    const r = await cli(['resolve', 'alpha', 'beta']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /resolve failed for beta \(1 of 2 OSes\); no lockfile was written/);
    assert.match(r.stderr, /^beta: this resolve would drop 3 kernel\(s\) that beta\.lock\.yaml has; the lockfile is unchanged/m);
    assert.match(r.stderr, /- 6\.1\.0-12-rt-amd64 \(x86_64\)/);
    assert.match(r.stderr, /--allow-removals/);
    await assertUntouched('alpha', alpha);
    await assertUntouched('beta', beta);
  });

  test('every failing OS is reported, a broken definition with its file:line:col, and the run goes on past the first failure', async () => {
    const alpha = await snapshot('alpha');
    const beta = await snapshot('beta');
    await define('alpha', definition('alpha', 'missing', 'good', '# edited\n'));
    await define('beta', definition('beta').replace(/^targetId:/m, 'targetID:'));
    await define('gamma', definition('gamma', 'good', 'missing'));
    try {
      // No OS named: every definition under kernels/, in name order.
      const r = await cli(['resolve']);
      assert.equal(r.code, 1, `a network failure among config failures exits 1\n${r.stderr}`);
      assert.match(r.stderr, /resolve failed for alpha, beta, gamma \(3 of 3 OSes\); no lockfile was written/);
      assert.match(r.stderr, /^alpha: http:\/\/127\.0\.0\.1:\d+\/missing\/bookworm\/dists\/bookworm: .*HTTP 404/m);
      assert.match(r.stderr, /^beta: \S*kernels\/beta\.yaml:4:1: unknown key "targetID"/m);
      assert.match(r.stderr, /^gamma: http:\/\/127\.0\.0\.1:\d+\/missing\/bookworm-security\/dists\/bookworm-security: .*HTTP 404/m);
      assert.match(r.stderr, /alpha: failed \(reported at the end\); resolving the other OSes/);
      await assertUntouched('alpha', alpha);
      await assertUntouched('beta', beta);
      await assert.rejects(stat(lockOf('gamma')), { code: 'ENOENT' });
    } finally {
      await rm(join(kernels(), 'gamma.yaml'));
      await define('beta', definition('beta'));
    }
  });

  test("--check with one failing OS: shows the other OS's diff, names the failure, exits non-zero, writes nothing", async () => {
    const alpha = await snapshot('alpha');
    const beta = await snapshot('beta');
    await define('alpha', definition('alpha', 'good', 'good', '# edited\n'));
    await define('beta', definition('beta', 'missing', 'missing'));
    const r = await cli(['resolve', '--check', 'alpha', 'beta']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /^alpha: 0 added, 0 removed, 0 changed\n {2}~ source$/m);
    assert.match(r.stderr, /resolve failed for beta \(1 of 2 OSes\); the check is incomplete/);
    await assertUntouched('alpha', alpha);
    await assertUntouched('beta', beta);
  });

  test('an unknown OS name stops the command before any mirror is asked', async () => {
    const asked = mirror.requests.length;
    const r = await cli(['resolve', 'alpha', 'nosuch', 'nosuch2']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /unknown OSes: unknown OS "nosuch"; unknown OS "nosuch2"/);
    assert.equal(mirror.requests.length, asked);
  });

  test('once every OS resolves, each changed lockfile is written', async () => {
    const beta = await snapshot('beta');
    await define('beta', definition('beta'));
    const r = await cli(['resolve', 'alpha', 'beta']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^alpha: 0 added, 0 removed, 0 changed\n {2}~ source$/m);
    assert.match(r.stderr, /alpha: wrote .*alpha\.lock\.yaml \(12 kernels\)/);
    assert.match(r.stderr, /beta: 12 kernels, beta\.lock\.yaml up to date/);
    await assertUntouched('beta', beta);
    assert.match(await readFile(lockOf('alpha'), 'utf8'), /^# Generated by `falco-probes resolve alpha` from kernels\/alpha\.yaml/);
  });
});
