import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './helpers/cli.js';
import { startMirror, type TestMirror } from './helpers/server.js';
import {
  fillerPackage,
  kernelBuild,
  rpmFileName,
  writeYumRepository,
  yumDefinitionYaml,
  type FixturePackage,
} from './helpers/yum-fixture.js';
import { sha256Hex } from '../src/util/hash.js';

// The yum faults of issue 2 through the real binary: test/resolve-yum-faults.test.ts
// checks each error in-process; here each fault must also give a non-zero exit,
// a message naming the URL, and leave the existing lockfile as it was (same
// bytes, same modification time, no temporary file beside it).

let mirror: TestMirror;
let root: string;
let project: string;
let serial = 0;

const ID = 'yumfaults';
const lockPath = () => join(project, 'kernels', `${ID}.lock.yaml`);

function packages(): FixturePackage[] {
  return [
    ...kernelBuild('4.14.232', '176.381.amzn2', 'x86_64', 0),
    ...Array.from({ length: 40 }, (_, i) => fillerPackage(i, 'x86_64', 0)),
  ].map((p) => ({ ...p, href: `Packages/${rpmFileName(p)}` }));
}

async function repo(opts: Parameters<typeof writeYumRepository>[3] = {}) {
  const base = `r${++serial}/`;
  const written = await writeYumRepository(root, base, packages(), { blobstore: false, ...opts });
  return { ...written, url: `${mirror.url}/${base}` };
}

const resolveWith = (url: string) =>
  runCli(['resolve', ID, '--mirror', `core=${url}`, '--timeout', '1'], { cwd: project, timeoutMs: 60_000 });

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'falco-probes-yum-cli-mirror-'));
  project = await mkdtemp(join(tmpdir(), 'falco-probes-yum-cli-'));
  mirror = await startMirror({ root });
  await mkdir(join(project, 'kernels'));
  await writeFile(
    join(project, 'kernels', `${ID}.yaml`),
    yumDefinitionYaml({ id: ID, kernel: ['kernel'], repos: [{ name: 'core', mirrors: ['http://127.0.0.1:9/unused/'] }] }),
  );
  const good = await repo();
  const r = await resolveWith(good.url);
  assert.equal(r.code, 0, r.stderr);
});

after(async () => {
  await mirror.close();
  await rm(root, { recursive: true, force: true });
  await rm(project, { recursive: true, force: true });
});

test('each yum fault exits non-zero through the CLI, names the URL, and leaves the lockfile untouched', { timeout: 180_000 }, async () => {
  const before = { bytes: await readFile(lockPath()), mtime: (await stat(lockPath())).mtimeMs };
  assert.match(before.bytes.toString(), /name: 4\.14\.232-176\.381\.amzn2\.x86_64/);

  const faults: { what: string; url: () => Promise<string>; message: RegExp }[] = [
    { what: 'HTTP 404 on repomd.xml', url: async () => `${mirror.url}/nowhere/`, message: /HTTP 404/ },
    {
      what: 'HTTP 500 on the primary metadata',
      url: async () => {
        const r = await repo();
        mirror.faults.set(`${r.base}${r.primaryHref}`, { kind: 'status', status: 500 });
        return r.url;
      },
      message: /HTTP 500/,
    },
    {
      what: 'a connection reset in the primary metadata',
      url: async () => {
        const r = await repo();
        mirror.faults.set(`${r.base}${r.primaryHref}`, { kind: 'reset', afterBytes: 100 });
        return r.url;
      },
      message: /connection (reset|closed|failed)/,
    },
    {
      what: 'a stalled repomd.xml',
      url: async () => {
        const r = await repo();
        mirror.faults.set(`${r.base}repodata/repomd.xml`, { kind: 'stall' });
        return r.url;
      },
      message: /timed out/,
    },
    {
      what: 'truncated xz primary metadata',
      url: async () => {
        const r = await repo({ compression: 'xz' });
        mirror.faults.set(`${r.base}${r.primaryHref}`, { kind: 'truncate', bytes: Math.floor(r.primary.length / 2) });
        return r.url;
      },
      message: /corrupt or truncated xz data/,
    },
    {
      what: 'a checksum mismatch with repomd.xml',
      url: async () => (await repo({ repomd: (e) => [{ ...e, checksum: sha256Hex('other') }] })).url,
      message: /does not match .* given by repomd\.xml/,
    },
    {
      what: 'malformed XML in the primary metadata',
      url: async () =>
        (
          await repo({
            compression: 'none',
            primaryXml: '<?xml version="1.0"?>\n<metadata packages="1">\n<package type="rpm"><name>kernel</nam></package>\n',
          })
        ).url,
      message: /primary/,
    },
    {
      what: 'an HTML page instead of repomd.xml',
      url: async () => {
        const r = await repo();
        mirror.faults.set(`${r.base}repodata/repomd.xml`, { kind: 'body', body: '<html><body>Service unavailable</body></html>' });
        return r.url;
      },
      message: /repomd\.xml/,
    },
  ];
  for (const f of faults) {
    const url = await f.url();
    const r = await resolveWith(url);
    // 1: the run failed on what a mirror served (2 is for usage and configuration errors, 70 for a bug).
    assert.equal(r.code, 1, `${f.what}: exit code\n${r.stderr}`);
    assert.match(r.stderr, f.message, f.what);
    assert.ok(r.stderr.includes(url.replace(/\/$/, '')), `${f.what}: the message names the mirror URL\n${r.stderr}`);
    assert.deepEqual(await readFile(lockPath()), before.bytes, `${f.what}: lockfile bytes`);
    assert.equal((await stat(lockPath())).mtimeMs, before.mtime, `${f.what}: lockfile not rewritten`);
    assert.deepEqual(
      (await readdir(join(project, 'kernels'))).sort(),
      [`${ID}.lock.yaml`, `${ID}.yaml`],
      `${f.what}: nothing else written`,
    );
  }
});
