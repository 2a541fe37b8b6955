import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { startMirror, type TestMirror } from './helpers/server.js';
import { runCli } from './helpers/cli.js';
import { copyShippedDefinition, createTestSigner, shippedRepositoryNames, tempDir, type TestSigner } from './helpers/os-fixtures.js';
import { ubuntuOverrides, writeUbuntuMirror } from './helpers/apt-os-fixtures.js';
import { EL9_BUILDS, el9Repos, writeYumRepos } from './helpers/yum-os-fixtures.js';
import { loadSourceDefinition } from '../src/config/source-definition.js';
import { resolveSource } from '../src/resolve/index.js';
import { FalcoProbesError } from '../src/util/errors.js';

// What a user sees when a definition or a mirror is wrong: a typo in a key
// (file:line:col), a mirror answering HTML instead of metadata (the URL and a
// hint), a flavour pattern or package name that matches nothing (a
// definition error naming the pattern's line), an architecture no repository
// serves. Each through the real definitions and, for the exit codes, the CLI;
// no lockfile is written.

const HTTP = { idleTimeoutMs: 5000, attempts: 1, backoffMs: 10 };
let signer: TestSigner;
let mirror: TestMirror;
let root: string;
let project: string;

before(async () => {
  signer = await createTestSigner();
  root = await tempDir('os-errors-mirror-');
  await writeUbuntuMirror(root, 'jammy', signer, 5);
  await writeYumRepos(root, el9Repos('9-stream', EL9_BUILDS, { compression: 'gz', fillers: 5 }), ['x86_64', 'aarch64']);
  mirror = await startMirror({ root });
  project = await tempDir('os-errors-project-');
});

after(async () => {
  await mirror.close();
  await signer.close();
  await rm(root, { recursive: true, force: true });
  await rm(project, { recursive: true, force: true });
});

/** A shipped definition copied into the project with one edit, and where the edit is (1-based line and column of `needle`). */
async function edited(id: string, from: string, to: string): Promise<{ file: string; line: number; column: number }> {
  const file = await copyShippedDefinition(id, project, signer.keyring);
  const text = await readFile(file, 'utf8');
  const at = text.indexOf(from);
  assert.ok(at >= 0, `${from} in ${id}`);
  await writeFile(file, text.slice(0, at) + to + text.slice(at + from.length));
  const before = text.slice(0, at).split('\n');
  return { file, line: before.length, column: before.at(-1)!.length + 1 };
}

const jammyOverrides = async () => ubuntuOverrides(await shippedRepositoryNames('ubuntu-jammy'), mirror.url);
const centosOverrides = () =>
  new Map([
    ['appstream', [`${mirror.url}/9-stream/AppStream/$basearch/os/`]],
    ['baseos', [`${mirror.url}/9-stream/BaseOS/$basearch/os/`]],
  ]);

async function resolveError(file: string, overrides: Map<string, string[]>): Promise<FalcoProbesError> {
  const source = await loadSourceDefinition(file, project);
  try {
    await resolveSource(source, { mirrorOverrides: overrides, http: HTTP });
  } catch (err) {
    assert.ok(err instanceof FalcoProbesError, String(err));
    return err;
  }
  assert.fail('the resolve succeeded');
}

describe('a typo in a key', () => {
  for (const [id, from, to, key, parent] of [
    ['ubuntu-jammy', '  versionPattern:', '  versionPatern:', 'versionPatern', 'apt'],
    ['centos-stream9', '  kernel: [kernel-core, kernel]', '  kernal: [kernel-core, kernel]', 'kernal', 'yum'],
    ['cos', '  milestones:', '  milestone:', 'milestone', 'cos'],
  ] as const) {
    test(`${id}: "${key}" is named with its file, line and column; the CLI exits 2`, async () => {
      const at = await edited(id, from, to);
      await assert.rejects(loadSourceDefinition(at.file, project), (err: unknown) => {
        assert.ok(err instanceof FalcoProbesError);
        assert.equal(err.kind, 'config');
        assert.equal(err.format().split('\n')[0], `${at.file}:${at.line}:${at.column + 2}: unknown key "${key}" in ${parent}`);
        return true;
      });
      const r = await runCli(['resolve', id], { cwd: project, timeoutMs: 60_000 });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`kernels/${id}\\.yaml:${at.line}:${at.column + 2}: unknown key "${key}"`));
    });
  }
});

describe('a mirror that answers HTML', () => {
  test('apt: an HTML page instead of InRelease names the URL and says what it is', async () => {
    const file = await copyShippedDefinition('ubuntu-jammy', project, signer.keyring);
    mirror.faults.set('ubuntu/dists/jammy/InRelease', {
      kind: 'body',
      body: '<!DOCTYPE html>\n<html><head><title>Proxy login</title></head></html>\n',
    });
    const err = await resolveError(file, await jammyOverrides());
    mirror.faults.delete('ubuntu/dists/jammy/InRelease');
    assert.equal(err.kind, 'input');
    assert.match(err.format(), /\/ubuntu\/dists\/jammy\/InRelease: the mirror answered with an HTML or XML page, not a Release file/);
    assert.match(err.format(), /hint: the URL may point at a web page/);
  });

  test('yum: an HTML page instead of repomd.xml names the URL and says what it is', async () => {
    const file = await copyShippedDefinition('centos-stream9', project);
    const path = '9-stream/AppStream/x86_64/os/repodata/repomd.xml';
    mirror.faults.set(path, { kind: 'body', body: '<html><body><h1>503 Service Unavailable</h1></body></html>' });
    const err = await resolveError(file, centosOverrides());
    mirror.faults.delete(path);
    assert.match(err.format(), new RegExp(`${path.replace(/[.]/g, '\\.')}: not a repomd\\.xml: its root element is <html>`));
    assert.match(err.format(), /error page/);
  });
});

describe('a pattern that matches nothing is a definition error', () => {
  test('apt: a headers pattern with a typo names the pattern and its line', async () => {
    const at = await edited('ubuntu-jammy', "[0-9]+-aws)$'", "[0-9]+-amazon)$'");
    const err = await resolveError(at.file, await jammyOverrides());
    assert.equal(err.kind, 'config');
    const line = (await readFile(at.file, 'utf8')).split('\n').findIndex((l) => l.includes('-amazon)$')) + 1;
    assert.match(
      err.format(),
      new RegExp(
        `^${at.file.replace(/[.]/g, '\\.')}:${line}:\\d+: the headers pattern .*-amazon\\)\\$ of flavour "aws" matched no package in any repository`,
      ),
    );
  });

  test('apt: a filename pattern that excludes every package its name pattern matched lists their folders', async () => {
    const at = await edited('ubuntu-jammy', "'^pool/main/l/linux-gke(?:-[0-9.]+)?/'", "'^pool/main/l/linux-gke-fips/'");
    const err = await resolveError(at.file, await jammyOverrides());
    assert.match(
      err.format(),
      /the filename pattern \^pool\/main\/l\/linux-gke-fips\/ of flavour "gke" matched none of the 2 package\(s\) its name pattern matched/,
    );
    assert.match(err.format(), /pool\/main\/l\/linux-gke\/linux-headers-5\.15\.0-1002-gke_5\.15\.0-1002\.2_amd64\.deb \(x86_64\)/);
  });

  test('yum: a devel package name no repository lists names the entry and its line', async () => {
    const at = await edited('centos-stream9', 'devel: [kernel-devel]', 'devel: [kernel-devl]');
    const err = await resolveError(at.file, centosOverrides());
    assert.equal(err.kind, 'config');
    assert.match(
      err.format(),
      new RegExp(`:${at.line}:\\d+: yum\\.devel names package "kernel-devl", which no repository lists for x86_64 or aarch64`),
    );
  });

  test('apt: an architecture that no repository serves (the ports archive left out)', async () => {
    const file = await copyShippedDefinition('ubuntu-jammy', project, signer.keyring);
    const text = await readFile(file, 'utf8');
    // Keep the three amd64 repositories only.
    await writeFile(file, text.replace(/ {2}- name: jammy(?:-updates|-security)?-ports\n(?: {4}.*\n| {6}.*\n)+/g, ''));
    const names = (await shippedRepositoryNames('ubuntu-jammy')).filter((n) => !n.endsWith('-ports'));
    const err = await resolveError(file, ubuntuOverrides(names, mirror.url));
    assert.match(err.format(), /no repository of ubuntu-jammy serves aarch64 \(arm64\): no Release file lists it in its Architectures/);
    assert.match(err.format(), /hint: add a repository for arm64 \(Ubuntu keeps arm64 on its ports archive\)/);
  });
});
