import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generate } from '../src/generate/generate.js';
import { buildString } from '../src/generate/build-file.js';
import { withTempDir, PROJECT_ROOT } from './helpers/cli.js';
import { kernel, makeProject } from './helpers/graph-project.js';

// Generated BUILD files (and the hand-written build_defs) against the
// BUILD-language subset of docs/ARCHITECTURE.md, checked by python3's own parser.

const CHECKER = fileURLToPath(new URL('./helpers/build-checker.py', import.meta.url));

function check(files: string[]): { code: number; out: string } {
  const r = spawnSync('python3', [CHECKER, ...files], { encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw r.error;
  return { code: r.status ?? 1, out: `${r.stdout}${r.stderr}` };
}

test('generated BUILD files and the build_defs pass the BUILD-language checker', async () => {
  await withTempDir(async (root) => {
    await makeProject(root, {
      oses: {
        debian12: [kernel('6.1.0-50-amd64'), kernel('6.12.9+deb12-amd64'), kernel('5.15.0-24~20.04.3-generic', { machine: 'aarch64' })],
        ubuntu: [kernel('5.15.0-1019-aws'), kernel('5.15.0-1019-aws', { machine: 'aarch64' })],
      },
    });
    await generate(root);
    const files = [
      join(root, 'probes', 'debian12', 'BUILD'),
      join(root, 'probes', 'ubuntu', 'BUILD'),
      join(PROJECT_ROOT, 'BUILD'),
      join(PROJECT_ROOT, 'build_defs', 'BUILD'),
      join(PROJECT_ROOT, 'build_defs', 'falco_probe.build_defs'),
    ];
    const r = check(files);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /ok: 5 file\(s\)/);
    const build = await readFile(files[0]!, 'utf8');
    assert.match(build, /^subinclude\("\/\/build_defs:falco_probe"\)$/m);
    assert.match(build, /name = "6\.12\.9\+deb12-amd64-example-1\.0\.0"/);
    assert.equal((build.match(/^falco_probe\($/gm) ?? []).length, 6);
  });
});

test('the committed probes/*/BUILD files pass the checker too', async () => {
  const fg = (await import('fast-glob')).default;
  const files = await fg('probes/*/BUILD', { cwd: PROJECT_ROOT, absolute: true });
  if (files.length === 0) return; // generate has not been run in this checkout yet
  const r = check(files);
  assert.equal(r.code, 0, r.out);
});

test('the checker rejects each kind of bad BUILD file', async () => {
  const bad: Record<string, [string, RegExp]> = {
    import: ['import os\n', /imports are not allowed/],
    from: ['from x import y\n', /imports are not allowed/],
    class: ['class A:\n    pass\n', /classes are not allowed/],
    positional: ['falco_probe("a", os = "x")\n', /positional arguments; rules take keyword arguments only/],
    kwargs: ['falco_probe(**args)\n', /\*\*kwargs are not allowed/],
    subinclude: ['subinclude("//a", "//b")\n', /subinclude\(\) takes exactly one positional string/],
    hexEscape: ['x = "a\\x41"\n', /escape \\x is not one the BUILD language decodes/],
    unicodeEscape: ['x = "\\u00e9"\n', /escape \\u is not one/],
    octalEscape: ['x = "\\101"\n', /escape \\1 is not one/],
    rawString: ['x = r"\\d"\n', /string prefix 'r' is not allowed/],
    fString: ['x = f"{y}"\n', /f-strings are not allowed|string prefix 'f'/],
    tab: ['falco_probe(\n\tname = "a",\n)\n', /tab character/],
    semicolon: ['x = 1; y = 2\n', /';' is not allowed/],
    colonName: ['falco_probe(name = "a:b")\n', /forbidden character/],
    slashName: ['falco_probe(name = "a/b")\n', /forbidden character/],
    dollarName: ['falco_probe(name = "a$b")\n', /forbidden character/],
    spaceName: ['falco_probe(name = "a b")\n', /forbidden character/],
    dotName: ['falco_probe(name = ".hidden")\n', /must not start with \. or _/],
    underscoreName: ['falco_probe(name = "_private")\n', /must not start with \. or _/],
    allName: ['falco_probe(name = "all")\n', /"all" is reserved/],
    duplicate: ['a(name = "x")\nb(name = "x")\n', /target name 'x' is also defined on line 1/],
  };
  await withTempDir(async (dir) => {
    await mkdir(dir, { recursive: true });
    for (const [what, [text, expected]] of Object.entries(bad)) {
      const file = join(dir, `${what}.BUILD`);
      await writeFile(file, text);
      const r = check([file]);
      assert.equal(r.code, 1, `${what} should be rejected:\n${r.out}`);
      assert.match(r.out, expected, what);
      assert.match(r.out, new RegExp(`${what}\\.BUILD:\\d+:\\d+: `), `${what}: the message names file:line:col`);
    }
    // The escapes the language does decode are fine.
    const good = join(dir, 'good.BUILD');
    await writeFile(good, `x = "a\\n\\t\\\\\\'\\"b"\nfalco_probe(name = "4.14.232-176.381.amzn2+x~1")\n`);
    const r = check([good]);
    assert.equal(r.code, 0, r.out);
  });
});

test('BUILD strings use only the escapes the language decodes', () => {
  assert.equal(buildString('plain-1.0+x~y'), '"plain-1.0+x~y"');
  assert.equal(buildString('a"b\\c\nd\te'), '"a\\"b\\\\c\\nd\\te"');
  assert.throws(() => buildString('bell\u0007'), /control character U\+0007/);
});
