import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareNatural, releaseAtLeast } from '../src/util/natural-sort.js';
import { canonicalJson, sha256Canonical } from '../src/util/hash.js';
import { checkRelativePath, checkRelease, checkPackageName, isValidTargetName, checkUnameVersion } from '../src/util/names.js';
import { writeCacheFileSync, writeFileAtomic, writeFileIfChanged } from '../src/util/fs.js';
import { httpGetBuffer, httpGetStream } from '../src/util/http.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { startMirror } from './helpers/server.js';

test('natural sort orders version numbers numerically', () => {
  const input = [
    '4.14.10',
    '4.14.9',
    '4.14.232-176.381.amzn2',
    '5.4.1',
    '4.19.0',
    '6.1.0-10-amd64',
    '6.1.0-9-amd64',
    '6.12.117+deb12-amd64',
  ];
  assert.deepEqual([...input].sort(compareNatural), [
    '4.14.9',
    '4.14.10',
    '4.14.232-176.381.amzn2',
    '4.19.0',
    '5.4.1',
    '6.1.0-9-amd64',
    '6.1.0-10-amd64',
    '6.12.117+deb12-amd64',
  ]);
  assert.equal(compareNatural('a', 'a'), 0);
  assert.ok(releaseAtLeast('4.14.0-1', '4.14'));
  assert.ok(!releaseAtLeast('4.9.337', '4.14'));
  assert.ok(releaseAtLeast('6.12.117+deb12-amd64', '4.14'));
  assert.ok(!releaseAtLeast('garbage', '4.14'));
});

test('canonical JSON sorts keys and ignores undefined members', () => {
  assert.equal(canonicalJson({ b: 1, a: [1, { d: 'x', c: undefined }] }), '{"a":[1,{"d":"x"}],"b":1}');
  assert.equal(sha256Canonical({ x: 1, y: 2 }), sha256Canonical({ y: 2, x: 1 }));
  assert.notEqual(sha256Canonical({ x: 1 }), sha256Canonical({ x: '1' }));
  assert.throws(() => canonicalJson({ n: Number.NaN }));
});

test('name rules refuse hostile values from mirrors', () => {
  for (const bad of ['$(reboot)', 'a`b`', "a'b", 'a"b', 'a\nb', 'a b', 'a/b', '..', '-x']) {
    assert.throws(() => checkPackageName(bad), FalcoProbesError, bad);
  }
  for (const bad of ['/etc/passwd', '../x', 'pool/../x', 'pool//x', 'pool/$(x)', 'pool/a b', '']) {
    assert.throws(() => checkRelativePath(bad), FalcoProbesError, bad);
  }
  assert.equal(checkRelativePath('pool/main/l/linux/linux-headers-6.1.0-50-amd64_6.1.176-1_amd64.deb').length > 0, true);
  assert.equal(checkRelativePath('pool/main/e/epoch/x_1%3a2.0_all.deb').length > 0, true);
  assert.throws(() => checkRelease('6.1..0'));
  assert.doesNotThrow(() => checkRelease('4.14.232-176.381.amzn2.x86_64'));
  assert.doesNotThrow(() => checkUnameVersion('#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2025-10-01)'));
  assert.throws(() => checkUnameVersion('#1 $(id)'));
  assert.ok(isValidTargetName('4.14.232-176.381.amzn2'));
  assert.ok(isValidTargetName('6.12.117+deb12-amd64'));
  for (const bad of ['all', '.hidden', '_x', 'a:b', 'a/b', 'a$b', 'a b', 'a|b', 'a*b', 'a(b)', 'a&b', 'a\\b', 'a{b}', 'a[b]', 'a?b']) {
    assert.equal(isValidTargetName(bad), false, bad);
  }
});

test('writeFileAtomic leaves no temporary files; writeFileIfChanged keeps mtime when equal', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fp-util-'));
  try {
    const f = join(dir, 'sub', 'a.txt');
    await writeFileAtomic(f, 'one');
    assert.equal(await readFile(f, 'utf8'), 'one');
    const m1 = (await stat(f)).mtimeMs;
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(await writeFileIfChanged(f, 'one'), false);
    assert.equal((await stat(f)).mtimeMs, m1);
    assert.equal(await writeFileIfChanged(f, 'two'), true);
    assert.equal(await readFile(f, 'utf8'), 'two');
    assert.deepEqual(await readdir(join(dir, 'sub')), ['a.txt']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('writeCacheFileSync replaces a file whole, makes its folder, and leaves no temporary file, written or failed', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fp-util-'));
  try {
    const f = join(dir, 'cache', 'deep', 'x.memo');
    writeCacheFileSync(f, 'first\n');
    assert.equal(await readFile(f, 'utf8'), 'first\n');
    const ino = (await stat(f)).ino;
    writeCacheFileSync(f, Buffer.from('second\n'));
    assert.equal(await readFile(f, 'utf8'), 'second\n');
    assert.notEqual((await stat(f)).ino, ino, 'a new file renamed over the old one, not the old one rewritten');
    assert.deepEqual(await readdir(join(dir, 'cache', 'deep')), ['x.memo']);
    // A folder where the file should be: the rename fails, the error names the path, and the temporary file is gone.
    const blocked = join(dir, 'cache', 'deep', 'blocked');
    await writeFile(join(dir, 'cache', 'deep', 'keep'), '');
    await mkdir(join(blocked, 'inside'), { recursive: true });
    assert.throws(
      () => writeCacheFileSync(blocked, 'x'),
      (err: Error) => err.message.includes(blocked),
    );
    assert.deepEqual((await readdir(join(dir, 'cache', 'deep'))).sort(), ['blocked', 'keep', 'x.memo']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('HTTP client: retries 5xx, fails fast on 404, caps size, detects resets and timeouts', async () => {
  const mirror = await startMirror({ files: { 'ok.txt': 'hello', 'big.bin': Buffer.alloc(5000, 1) } });
  try {
    mirror.faults.set('ok.txt', { kind: 'status', status: 503, times: 2 });
    assert.equal((await httpGetBuffer(`${mirror.url}/ok.txt`, { backoffMs: 1 })).toString(), 'hello');
    assert.equal(mirror.requests.filter((p) => p === 'ok.txt').length, 3);

    await assert.rejects(
      httpGetBuffer(`${mirror.url}/missing`, { backoffMs: 1 }),
      (e: FalcoProbesError) => /HTTP 404/.test(e.message) && e.location.url!.endsWith('/missing'),
    );
    assert.equal(mirror.requests.filter((p) => p === 'missing').length, 1);

    await assert.rejects(httpGetBuffer(`${mirror.url}/big.bin`, { maxBytes: 1000 }), /larger than the limit/);

    mirror.faults.set('big.bin', { kind: 'reset', afterBytes: 100, times: 5 });
    await assert.rejects(httpGetBuffer(`${mirror.url}/big.bin`, { backoffMs: 1 }), (e: FalcoProbesError) => e.kind === 'network');

    mirror.faults.set('ok.txt', { kind: 'stall', times: 5 });
    const t0 = Date.now();
    await assert.rejects(httpGetStream(`${mirror.url}/ok.txt`, { idleTimeoutMs: 100, attempts: 2, backoffMs: 1 }), /timed out/);
    assert.ok(Date.now() - t0 < 5000);
  } finally {
    await mirror.close();
  }
});

test('YAML errors name file, line and column; unknown keys are errors', async () => {
  const { loadSourceDefinition } = await import('../src/config/source-definition.js');
  const dir = await mkdtemp(join(tmpdir(), 'fp-yaml-'));
  try {
    const text = (await readFile(new URL('../kernels/debian12.yaml', import.meta.url), 'utf8')).replace(
      'targetId: debian',
      'targetId: debian\ntargetIdd: debian',
    );
    const file = join(dir, 'debian12.yaml');
    await writeFile(file, text);
    await assert.rejects(loadSourceDefinition(file, dir), (e: FalcoProbesError) => {
      assert.equal(e.kind, 'config');
      assert.match(e.format(), /debian12\.yaml:\d+:1: unknown key "targetIdd"/);
      return true;
    });
    await writeFile(file, 'id: [unclosed\n');
    await assert.rejects(loadSourceDefinition(file, dir), /invalid YAML/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('jsonString is JSON.stringify for every string and number, plain or not', async () => {
  const { jsonString } = await import('../src/util/hash.js');
  const samples = [
    '',
    'abc',
    '6.1.0-47-amd64',
    'a"b',
    'a\\b',
    'x\ny',
    '\t',
    '\u0000',
    '\u001f',
    '\u007f',
    'é',
    '€',
    '😀',
    '\ud800',
    'x\udfff',
    '\u2028',
    '#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3',
  ];
  for (const s of samples) assert.equal(jsonString(s), JSON.stringify(s), JSON.stringify(s));
  for (const n of [0, 1, 1655296, -3, 1.5]) assert.equal(jsonString(n), JSON.stringify(n));
});
