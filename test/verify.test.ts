import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, withTempDir } from './helpers/cli.js';
import { startMirror } from './helpers/server.js';
import { sha256Hex } from '../src/util/hash.js';
import { writeIndex } from '../src/repository/index-file.js';
import { openRepository } from '../src/repository/remote.js';
import { verifyRepository } from '../src/repository/verify.js';
import { generateKeyFiles, loadPrivateKey, loadPublicKey } from '../src/repository/signature.js';
import { publishRepository } from '../src/repository/publish.js';
import { createMemoryLogger } from '../src/util/log.js';
import { repositoryFileUrl } from '../src/repository/falco-url.js';
import type { ProbeEntry } from '../src/repository/types.js';

// verify over loopback HTTP and on a directory: the signature (checked here
// also with openssl, to prove the documented format), every file's sha256 and
// size, and the faults: a tampered byte, a missing file, an extra file, a
// malformed index, an index changed after signing, another key, a server
// that stalls.

const PROBES = [
  {
    file: '9.1.0+driver/x86_64/falco_debian_6.12.117+deb12-amd64_1.o',
    kernel: '6.12.117+deb12-amd64',
    arch: 'x86_64',
    bytes: Buffer.from('\x7fELF probe for 6.12 '.repeat(50)),
  },
  {
    file: '9.1.0+driver/x86_64/falco_debian_6.1.0-50-amd64_1.o',
    kernel: '6.1.0-50-amd64',
    arch: 'x86_64',
    bytes: Buffer.from('\x7fELF probe for 6.1 '.repeat(40)),
  },
  {
    file: '9.1.0+driver/aarch64/falco_debian_6.1.0-50-arm64_1.o',
    kernel: '6.1.0-50-arm64',
    arch: 'aarch64',
    bytes: Buffer.from('\x7fELF arm probe '.repeat(30)),
  },
];

function entry(p: (typeof PROBES)[number]): ProbeEntry {
  return {
    file: p.file,
    key: sha256Hex(p.file),
    sha256: sha256Hex(p.bytes),
    size: p.bytes.length,
    os: 'debian12',
    kernel: p.kernel,
    driver: 'falco',
    driverVersion: '9.1.0+driver',
    arch: p.arch,
    kind: 'bpf',
  };
}

/** A signed, published repository at dir/site (built by the real publish), keys at dir/k.{key,pub} and dir/other.{key,pub}. */
async function published(dir: string): Promise<string> {
  const local = join(dir, 'repository');
  for (const p of PROBES) {
    await mkdir(join(local, p.file, '..'), { recursive: true });
    await writeFile(join(local, p.file), p.bytes);
  }
  await writeIndex(local, { version: 1, probes: PROBES.map(entry) });
  // The CLI forms of keygen and publish are tested in publish.test.ts; here the library is quicker.
  for (const k of ['k', 'other']) await generateKeyFiles(join(dir, k));
  const { key } = await loadPrivateKey(join(dir, 'k.key'));
  await publishRepository({ from: local, to: join(dir, 'site'), signingKey: key, logger: createMemoryLogger() });
  return join(dir, 'site');
}

test('verify over HTTP: a good repository passes; the signature also checks with openssl as docs/PUBLISHING.md says', async () => {
  await withTempDir(async (dir) => {
    const site = await published(dir);
    const mirror = await startMirror({ root: site });
    try {
      const ok = await runCli(['verify', '--repository', mirror.url, '--public-key', 'k.pub'], { cwd: dir });
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stderr, /5 file\(s\), \d+ bytes checked; signature verified; OK/);
      // The `+` travels as %2B.
      assert.ok(mirror.requests.includes('9.1.0+driver/x86_64/falco_debian_6.12.117+deb12-amd64_1.o'));

      // The documented independent check: the statement names both files' sha256, and openssl verifies the signature.
      const sig = JSON.parse(await readFile(join(site, 'index.json.sig'), 'utf8')) as { statement: string; signature: string };
      const index = await readFile(join(site, 'index.json'));
      const sums = await readFile(join(site, 'SHA256SUMS'));
      assert.equal(
        sig.statement,
        `falco-probes repository signature v1\nindex.json ${sha256Hex(index)} ${index.length}\nSHA256SUMS ${sha256Hex(sums)} ${sums.length}\n`,
      );
      await writeFile(join(dir, 'statement'), sig.statement);
      await writeFile(join(dir, 'sig.bin'), Buffer.from(sig.signature, 'base64'));
      const out = execFileSync(
        'openssl',
        ['pkeyutl', '-verify', '-pubin', '-inkey', 'k.pub', '-rawin', '-in', 'statement', '-sigfile', 'sig.bin'],
        { cwd: dir, encoding: 'utf8' },
      );
      assert.match(out, /Signature Verified Successfully/);
    } finally {
      await mirror.close();
    }
  });
});

test('verify over HTTP: a flipped byte, a missing file and a wrong size each fail, naming the URL', async () => {
  await withTempDir(async (dir) => {
    const site = await published(dir);
    const mirror = await startMirror({ root: site });
    try {
      const flipped = Buffer.from(PROBES[0]!.bytes);
      flipped[10] = flipped[10]! ^ 0x20;
      mirror.files.set(PROBES[0]!.file, flipped);
      await rm(join(site, PROBES[1]!.file));
      mirror.files.set('9.1.0+driver/falco_debian_6.1.0-50-amd64_1.o', Buffer.concat([PROBES[1]!.bytes, Buffer.from('x')]));
      const r = await runCli(['verify', '--repository', mirror.url, '--public-key', 'k.pub'], { cwd: dir });
      assert.equal(r.code, 1);
      const url = (f: string) => repositoryFileUrl(mirror.url, f);
      assert.ok(
        r.stderr.includes(`${url(PROBES[0]!.file)}: sha256 ${sha256Hex(flipped)} differs from the index's ${sha256Hex(PROBES[0]!.bytes)}`),
        r.stderr,
      );
      assert.ok(r.stderr.includes(`${url(PROBES[1]!.file)}: missing (the index lists it)`), r.stderr);
      assert.ok(r.stderr.includes(url('9.1.0+driver/falco_debian_6.1.0-50-amd64_1.o')), r.stderr);
      assert.match(r.stderr, /%2Bdriver\/x86_64\/falco_debian_6\.12\.117%2Bdeb12-amd64_1\.o/);
      assert.match(r.stderr, /3 problem\(s\)/);
    } finally {
      await mirror.close();
    }
  });
});

test('verify: a signature by another key, an index changed after signing, an unsigned repository when a key is asked', async () => {
  await withTempDir(async (dir) => {
    const site = await published(dir);
    const wrong = await runCli(['verify', '--repository', 'site', '--public-key', 'other.pub'], { cwd: dir });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /site\/index\.json\.sig: signed by another key \(key id [0-9a-f]{16}\), not by the public key given/);

    // Re-sign with the other key: now k.pub is the wrong one.
    assert.equal((await runCli(['publish', '--to', 'site', '--key', 'other.key'], { cwd: dir })).code, 0);
    assert.equal((await runCli(['verify', '--repository', 'site', '--public-key', 'other.pub'], { cwd: dir })).code, 0);
    assert.equal((await runCli(['verify', '--repository', 'site', '--public-key', 'k.pub'], { cwd: dir })).code, 1);

    // index.json edited without the key (the entries still match the files): the signature catches it.
    const index = JSON.parse(await readFile(join(site, 'index.json'), 'utf8')) as { probes: ProbeEntry[] };
    index.probes[0]!.kernel = 'tampered';
    await writeFile(join(site, 'index.json'), `${JSON.stringify(index, null, 2)}\n`);
    const edited = await runCli(['verify', '--repository', 'site', '--public-key', 'other.pub'], { cwd: dir });
    assert.equal(edited.code, 1);
    assert.match(edited.stderr, /index\.json\.sig: index\.json changed after it was signed/);

    await rm(join(site, 'index.json.sig'));
    const unsigned = await runCli(['verify', '--repository', 'site', '--public-key', 'other.pub'], { cwd: dir });
    assert.equal(unsigned.code, 1);
    assert.match(unsigned.stderr, /index\.json\.sig: missing: the repository is not signed/);
  });
});

test('verify on a directory: an extra unindexed probe is a warning; a malformed index is an error naming it; a stalled server times out', async () => {
  await withTempDir(async (dir) => {
    const site = await published(dir);
    await writeFile(join(site, '9.1.0+driver/x86_64/falco_debian_9.9.9_1.o'), 'stray');
    const extra = await runCli(['verify', '--repository', 'site', '--public-key', 'k.pub'], { cwd: dir });
    assert.equal(extra.code, 0, extra.stderr);
    assert.match(extra.stderr, /warning: .*site\/9\.1\.0\+driver\/x86_64\/falco_debian_9\.9\.9_1\.o: not in the index/);

    const mirror = await startMirror({ root: site });
    try {
      mirror.faults.set('index.json', { kind: 'body', body: '{"version": 1, "probes": [\n  {"file": "../../etc/passwd"}\n]}\n' });
      const bad = await runCli(['verify', '--repository', mirror.url], { cwd: dir });
      assert.equal(bad.code, 2);
      assert.ok(bad.stderr.includes(`${mirror.url}/index.json`), bad.stderr);
      assert.match(bad.stderr, /malformed repository index/);

      mirror.faults.set('index.json', { kind: 'stall' });
      const started = Date.now();
      const stalled = await runCli(['verify', '--repository', mirror.url, '--timeout', '0.3'], { cwd: dir });
      assert.equal(stalled.code, 1);
      assert.match(stalled.stderr, /index\.json: timed out after 300 ms without data/);
      assert.ok(Date.now() - started < 15_000);
    } finally {
      await mirror.close();
    }
  });
});

test('verifyRepository reports every problem at once (library level, no CLI)', async () => {
  await withTempDir(async (dir) => {
    const site = await published(dir);
    await writeFile(join(site, PROBES[2]!.file), 'short');
    await writeFile(
      join(site, 'SHA256SUMS'),
      (await readFile(join(site, 'SHA256SUMS'), 'utf8')).replace(
        /^([0-9a-f]{64}) {2}9\.1\.0\+driver\/falco_debian_6\.1\.0-50-amd64_1\.o$/m,
        `${'0'.repeat(64)}  9.1.0+driver/falco_debian_6.1.0-50-amd64_1.o`,
      ),
    );
    const report = await verifyRepository(openRepository(site, dir), { publicKey: await loadPublicKey(join(dir, 'k.pub')) });
    assert.equal(report.signature, 'failed');
    assert.ok(
      report.problems.some((p) => p.includes('SHA256SUMS changed after it was signed')),
      report.problems.join('\n'),
    );
    assert.ok(
      report.problems.some((p) => p.includes(`${join(site, PROBES[2]!.file)}: 5 bytes, the index says ${PROBES[2]!.bytes.length}`)),
      report.problems.join('\n'),
    );
    assert.ok(
      report.problems.some((p) => p.includes('lists 9.1.0+driver/falco_debian_6.1.0-50-amd64_1.o with sha256 0000')),
      report.problems.join('\n'),
    );
  });
});
