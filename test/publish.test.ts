import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmod, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, runCli, withTempDir } from './helpers/cli.js';
import { sha256Hex } from '../src/util/hash.js';
import { writeIndex, readIndex } from '../src/repository/index-file.js';
import { acquireLock } from '../src/repository/lock.js';
import { LOCK_FILE } from '../src/repository/local.js';
import type { ProbeEntry } from '../src/repository/types.js';
import { publishRepository } from '../src/repository/publish.js';
import { createMemoryLogger } from '../src/util/log.js';
import { FalcoProbesError } from '../src/util/errors.js';

// publish with real files and the real binary: new probes are copied and
// verified, nothing is ever replaced with other bytes, a second publish
// changes nothing (bytes and mtimes), conflicts and damaged sources change
// nothing, signing, and two publishers at once.

interface Fixture {
  file: string;
  os: string;
  kernel: string;
  arch: 'x86_64' | 'aarch64';
  bytes: Buffer;
}

/** A real BPF ELF object (clang -target bpf): `value` makes each one's bytes different. */
function bpfObject(dir: string, value: number): Buffer {
  const src = join(dir, `probe-${value}.c`);
  const out = join(dir, `probe-${value}.o`);
  writeFileSync(
    src,
    'int value = VALUE;\n' +
      '__attribute__((section("raw_tracepoint/sys_enter"), used)) int probe(void *ctx) { return value; }\n' +
      'char _license[] __attribute__((section("license"), used)) = "GPL";\n',
  );
  execFileSync('clang', ['-target', 'bpf', '-O2', `-DVALUE=${value}`, '-c', src, '-o', out], { timeout: 60_000 });
  const bytes = readFileSync(out);
  assert.equal(bytes.subarray(0, 4).toString('latin1'), '\x7fELF');
  return bytes;
}

function entryOf(f: Fixture): ProbeEntry {
  return {
    file: f.file,
    key: sha256Hex(`key of ${f.file}`),
    sha256: sha256Hex(f.bytes),
    size: f.bytes.length,
    os: f.os,
    kernel: f.kernel,
    driver: 'falco',
    driverVersion: f.file.split('/')[0]!,
    arch: f.arch,
    kind: 'bpf',
  };
}

/** A local repository as the runner leaves it: probe files, index.json, SHA256SUMS. */
async function localRepository(root: string, probes: Fixture[], entries = probes.map(entryOf)): Promise<void> {
  for (const p of probes) {
    await mkdir(join(root, p.file, '..'), { recursive: true });
    await writeFile(join(root, p.file), p.bytes);
  }
  await writeIndex(root, { version: 1, probes: entries });
}

function fixtures(dir: string): Fixture[] {
  return [
    {
      file: '9.1.0+driver/x86_64/falco_debian_6.1.0-50-amd64_1.o',
      os: 'debian12',
      kernel: '6.1.0-50-amd64',
      arch: 'x86_64',
      bytes: bpfObject(dir, 1),
    },
    {
      file: '9.1.0+driver/x86_64/falco_debian_6.12.117+deb12-amd64_1.o',
      os: 'debian12',
      kernel: '6.12.117+deb12-amd64',
      arch: 'x86_64',
      bytes: bpfObject(dir, 2),
    },
    {
      file: '9.1.0+driver/aarch64/falco_amazonlinux2_5.10.1-1.amzn2.aarch64_1.o',
      os: 'amazonlinux2',
      kernel: '5.10.1-1.amzn2.aarch64',
      arch: 'aarch64',
      bytes: bpfObject(dir, 3),
    },
  ];
}

/** Every file under root with its bytes' sha256 and mtime, to prove "nothing changed". */
async function snapshot(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const e of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const path = join(
      (e as unknown as { parentPath?: string; path: string }).parentPath ?? (e as unknown as { path: string }).path,
      e.name,
    );
    const st = await stat(path);
    out.set(path.slice(root.length + 1), `${sha256Hex(await readFile(path))} ${st.mtimeMs}`);
  }
  return out;
}

test('publish copies probes and legacy copies, verify passes, sha256sum -c accepts SHA256SUMS; a second publish changes nothing', async () => {
  await withTempDir(async (dir) => {
    const probes = fixtures(dir);
    await localRepository(join(dir, 'repository'), probes);
    const keygen = await runCli(['keygen', '--out', 'signing'], { cwd: dir });
    assert.equal(keygen.code, 0, keygen.stderr);
    assert.equal((await stat(join(dir, 'signing.key'))).mode & 0o777, 0o600);

    const first = await runCli(['publish', '--to', 'site', '--key', 'signing.key', '--json'], { cwd: dir });
    assert.equal(first.code, 0, first.stderr);
    const report = JSON.parse(first.stdout) as { copied: string[]; written: string[]; signed: boolean };
    assert.deepEqual(
      report.copied.sort(),
      [
        ...probes.map((p) => p.file),
        // The no-arch layout of older loaders, for x86_64 only.
        '9.1.0+driver/falco_debian_6.1.0-50-amd64_1.o',
        '9.1.0+driver/falco_debian_6.12.117+deb12-amd64_1.o',
      ].sort(),
    );
    assert.deepEqual(report.written.sort(), ['SHA256SUMS', 'index.json', 'index.json.sig']);
    assert.equal(report.signed, true);
    for (const p of probes) assert.deepEqual(await readFile(join(dir, 'site', p.file)), p.bytes);
    await assert.rejects(stat(join(dir, 'site/9.1.0+driver/falco_amazonlinux2_5.10.1-1.amzn2.aarch64_1.o')), { code: 'ENOENT' });
    assert.deepEqual(
      (await readIndex(join(dir, 'site'))).probes.map((p) => p.file),
      probes.map((p) => p.file).sort(),
    );

    const sums = spawnSync('sha256sum', ['--strict', '-c', 'SHA256SUMS'], { cwd: join(dir, 'site'), encoding: 'utf8' });
    assert.equal(sums.status, 0, sums.stdout + sums.stderr);
    assert.equal(sums.stdout.trim().split('\n').length, 5);

    const verify = await runCli(['verify', '--repository', 'site', '--public-key', 'signing.pub'], { cwd: dir });
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stderr, /5 file\(s\).*signature verified; OK/);

    const before = await snapshot(join(dir, 'site'));
    await new Promise((r) => setTimeout(r, 30));
    const second = await runCli(['publish', '--to', 'site', '--key', 'signing.key', '--json'], { cwd: dir });
    assert.equal(second.code, 0, second.stderr);
    const again = JSON.parse(second.stdout) as { copied: string[]; written: string[]; unchanged: number };
    assert.deepEqual(again.copied, []);
    assert.deepEqual(again.written, []);
    assert.equal(again.unchanged, 3);
    assert.deepEqual(await snapshot(join(dir, 'site')), before, 'no file changed: same bytes, same modification times');
  });
});

test('publish, verify, flip one byte of a probe: verify fails naming it', async () => {
  await withTempDir(async (dir) => {
    const probes = fixtures(dir);
    await localRepository(join(dir, 'repository'), probes);
    assert.equal((await runCli(['publish', '--to', 'site'], { cwd: dir })).code, 0);
    const victim = join(dir, 'site', probes[1]!.file);
    const bytes = await readFile(victim);
    bytes[200] = bytes[200]! ^ 0x01;
    await writeFile(victim, bytes);
    const verify = await runCli(['verify', '--repository', 'site'], { cwd: dir });
    assert.equal(verify.code, 1);
    assert.ok(
      verify.stderr.includes(`${victim}: sha256 ${sha256Hex(bytes)} differs from the index's ${sha256Hex(probes[1]!.bytes)}`),
      verify.stderr,
    );
    assert.match(verify.stderr, /1 problem\(s\)/);
  });
});

test('a probe with other bytes under a published name: publish refuses, names it, changes nothing', async () => {
  await withTempDir(async (dir) => {
    const probes = fixtures(dir);
    await localRepository(join(dir, 'repository'), probes);
    assert.equal((await runCli(['publish', '--to', 'site'], { cwd: dir })).code, 0);
    // A rebuild with other inputs that Falco names the same, plus one genuinely new probe.
    const changed = { ...probes[0]!, bytes: bpfObject(dir, 99) };
    const extra: Fixture = {
      file: '9.1.0+driver/x86_64/falco_debian_6.1.0-51-amd64_1.o',
      os: 'debian12',
      kernel: '6.1.0-51-amd64',
      arch: 'x86_64',
      bytes: bpfObject(dir, 4),
    };
    await localRepository(join(dir, 'local2'), [changed, extra]);
    const before = await snapshot(join(dir, 'site'));
    const r = await runCli(['publish', '--from', 'local2', '--to', 'site'], { cwd: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /refusing to replace 1 published file\(s\) with different bytes; nothing changed/);
    assert.ok(
      r.stderr.includes(`${changed.file}: published sha256 ${sha256Hex(probes[0]!.bytes)}, new sha256 ${sha256Hex(changed.bytes)}`),
      r.stderr,
    );
    assert.deepEqual(await snapshot(join(dir, 'site')), before);
  });
});

test('a damaged source probe (sha256 differs from its index) or a missing one: publish fails naming it, nothing changed', async () => {
  await withTempDir(async (dir) => {
    const probes = fixtures(dir);
    await localRepository(join(dir, 'repository'), probes);
    const damaged = join(dir, 'repository', probes[2]!.file);
    const bytes = await readFile(damaged);
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff;
    await writeFile(damaged, bytes);
    const r = await runCli(['publish', '--to', 'site'], { cwd: dir });
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(`${damaged}: sha256 ${sha256Hex(bytes)}`), r.stderr);
    assert.match(r.stderr, /differs from the source index .*nothing changed/);
    // Only the (empty) target directory and nothing in it: no probe, no index, no staging folder.
    assert.deepEqual(await readdir(join(dir, 'site')), []);

    await writeFile(damaged, probes[2]!.bytes);
    await rm(join(dir, 'repository', probes[0]!.file));
    const missing = await runCli(['publish', '--to', 'site'], { cwd: dir });
    assert.equal(missing.code, 1);
    assert.ok(
      missing.stderr.includes(`${join(dir, 'repository', probes[0]!.file)}: the source repository's index names a file that is not there`),
      missing.stderr,
    );
    assert.deepEqual(await readdir(join(dir, 'site')), []);
  });
});

test('publishing shards is additive: a shard index may name probes only the target has', async () => {
  await withTempDir(async (dir) => {
    const probes = fixtures(dir);
    await localRepository(join(dir, 'shard1'), [probes[0]!]);
    await publishRepository({ from: join(dir, 'shard1'), to: join(dir, 'site'), logger: createMemoryLogger() });
    // Shard 2 restored the published index, built one more probe, and ships only its new file.
    await localRepository(join(dir, 'shard2'), [probes[1]!], [entryOf(probes[0]!), entryOf(probes[1]!)]);
    const r = await runCli(['publish', '--from', 'shard2', '--to', 'site', '--json'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      (JSON.parse(r.stdout) as { copied: string[] }).copied.sort(),
      [probes[1]!.file, '9.1.0+driver/falco_debian_6.12.117+deb12-amd64_1.o'].sort(),
    );
    await localRepository(join(dir, 'shard3'), [probes[2]!]);
    await publishRepository({ from: join(dir, 'shard3'), to: join(dir, 'site'), logger: createMemoryLogger() });
    assert.deepEqual(
      (await readIndex(join(dir, 'site'))).probes.map((p) => p.file),
      probes.map((p) => p.file).sort(),
    );
    assert.equal((await runCli(['verify', '--repository', 'site'], { cwd: dir })).code, 0);
  });
});

test('a signed target: publishing without --key is refused; a stale staging folder is cleaned; a malformed target index changes nothing', async () => {
  await withTempDir(async (dir) => {
    const probes = fixtures(dir);
    await localRepository(join(dir, 'repository'), [probes[0]!]);
    assert.equal((await runCli(['keygen', '--out', 'k'], { cwd: dir })).code, 0);
    assert.equal((await runCli(['publish', '--to', 'site', '--key', 'k.key'], { cwd: dir })).code, 0);
    await localRepository(join(dir, 'repository'), probes);
    const before = await snapshot(join(dir, 'site'));
    const unsigned = await runCli(['publish', '--to', 'site'], { cwd: dir });
    assert.equal(unsigned.code, 2);
    assert.match(unsigned.stderr, /index\.json\.sig: the target repository is signed.*Nothing changed/);
    assert.deepEqual(await snapshot(join(dir, 'site')), before);

    // A publish killed mid-copy leaves a staging folder; the next one (holding the lock) removes it.
    await mkdir(join(dir, 'site', '.publish-staging-99999-deadbeef'));
    await writeFile(join(dir, 'site', '.publish-staging-99999-deadbeef', '0'), 'partial');
    assert.equal((await runCli(['publish', '--to', 'site', '--key', 'k.key'], { cwd: dir })).code, 0);
    assert.ok(!(await readdir(join(dir, 'site'))).some((n) => n.startsWith('.publish-staging-')));
    assert.equal((await runCli(['verify', '--repository', 'site', '--public-key', 'k.pub'], { cwd: dir })).code, 0);

    await writeFile(join(dir, 'site', 'index.json'), '{"version": 1, "probes": [ {"file": 3} ]}\n');
    const snap = await snapshot(join(dir, 'site'));
    const r = await runCli(['publish', '--to', 'site', '--key', 'k.key'], { cwd: dir });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /site\/index\.json:1:\d+: malformed repository index/);
    assert.deepEqual(await snapshot(join(dir, 'site')), snap);
  });
});

test('two publishes at once into one directory: both land, the index is whole; with --lock-wait 0 a held lock fails cleanly', async () => {
  await withTempDir(async (dir) => {
    const probes = fixtures(dir);
    await localRepository(join(dir, 'a'), [probes[0]!, probes[2]!]);
    await localRepository(join(dir, 'b'), [probes[1]!, probes[2]!]);
    const [ra, rb] = await Promise.all([
      runCli(['publish', '--from', 'a', '--to', 'site'], { cwd: dir }),
      runCli(['publish', '--from', 'b', '--to', 'site'], { cwd: dir }),
    ]);
    assert.equal(ra.code, 0, ra.stderr);
    assert.equal(rb.code, 0, rb.stderr);
    assert.deepEqual(
      (await readIndex(join(dir, 'site'))).probes.map((p) => p.file),
      probes.map((p) => p.file).sort(),
    );
    assert.equal((await runCli(['verify', '--repository', 'site'], { cwd: dir })).code, 0);

    const lock = await acquireLock(join(dir, 'site', LOCK_FILE), { command: 'test holder' });
    try {
      await localRepository(join(dir, 'c'), [
        { ...probes[0]!, file: '9.1.0+driver/x86_64/falco_debian_6.1.0-52-amd64_1.o', kernel: '6.1.0-52-amd64' },
      ]);
      const before = await snapshot(join(dir, 'site'));
      const now = await runCli(['publish', '--from', 'c', '--to', 'site', '--lock-wait', '0'], { cwd: dir });
      assert.equal(now.code, 1);
      assert.match(now.stderr, /locked by another runner: pid \d+/);
      const bounded = await runCli(['publish', '--from', 'c', '--to', 'site', '--lock-wait', '1'], { cwd: dir });
      assert.equal(bounded.code, 1);
      assert.match(bounded.stderr, /gave up after 1 s waiting .*nothing changed/);
      const after = await snapshot(join(dir, 'site'));
      after.delete(LOCK_FILE);
      before.delete(LOCK_FILE);
      assert.deepEqual(after, before);
      // A publisher that waits gets the lock when the holder lets go (released once it says it waits).
      const child = spawn(process.execPath, [BIN, 'publish', '--from', 'c', '--to', 'site', '--lock-wait', '60'], {
        cwd: dir,
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`the publisher never waited: ${stderr}`)), 60_000);
        child.stderr.on('data', (d) => {
          stderr += d;
          if (stderr.includes('waiting up to 60 s for the lock')) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      await lock.release();
      assert.equal(await exited, 0, stderr);
      assert.equal((await readIndex(join(dir, 'site'))).probes.length, 4);
    } finally {
      await lock.release();
    }
  });
});

test('keygen refuses to replace a key; a key readable by others is warned about', async () => {
  await withTempDir(async (dir) => {
    assert.equal((await runCli(['keygen', '--out', 'k'], { cwd: dir })).code, 0);
    const again = await runCli(['keygen', '--out', 'k'], { cwd: dir });
    assert.equal(again.code, 2);
    assert.match(again.stderr, /k\.key: already exists; refusing to replace a key/);
    await chmod(join(dir, 'k.key'), 0o644);
    await localRepository(join(dir, 'repository'), fixtures(dir).slice(0, 1));
    const r = await runCli(['publish', '--to', 'site', '--key', 'k.key'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /readable by other users/);
  });
});

test('an index entry outside Falco layout (arch folder not its arch) is refused before anything is written', async () => {
  await withTempDir(async (dir) => {
    const [p] = fixtures(dir);
    const wrong: Fixture = { ...p!, file: '9.1.0+driver/aarch64/falco_debian_6.1.0-50-amd64_1.o' };
    await localRepository(join(dir, 'repository'), [wrong], [{ ...entryOf(wrong), arch: 'x86_64' }]);
    await assert.rejects(
      publishRepository({ from: join(dir, 'repository'), to: join(dir, 'site'), logger: createMemoryLogger() }),
      (err: unknown) =>
        err instanceof FalcoProbesError &&
        err.kind === 'input' &&
        /is not in Falco's layout/.test(err.message) &&
        err.location.file === join(dir, 'repository', 'index.json'),
    );
    assert.deepEqual(await readdir(join(dir, 'site')), []);
  });
});
