import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type Docker from 'dockerode';
import { createDockerBuilder, PROBE_COMMAND } from '../src/builders/docker.js';
import { builderImageDefinition, ensureImage, type ImageRef } from '../src/builders/docker-image.js';
import { sha256Hex } from '../src/util/hash.js';
import { DockerPinMemo, dockerPinMemoDir } from '../src/builders/docker-pin-memo.js';
import type { BuilderPin } from '../src/graph/types.js';
import { ensureBaseImage, ensureBuilderImage, ensureTestLoaderImage, obtainDocker, ourLeftovers, releaseDocker } from './helpers/docker.js';
import { skipOrFail } from './helpers/require.js';

// The Docker builder's pin memo on a real dockerd: a pin is learnt from the
// image once (a `clang --version` container) and then read back by image id.
// Containers are counted by the daemon's own event log: `create` events of
// containers that this test process owns (the builder labels each one with
// its owner's pid).

let skip: string | undefined;
let docker: Docker;
let scratch: string;
let builderImage: ImageRef;
let loaderImage: ImageRef;

before(async () => {
  const d = await obtainDocker();
  if (!d.ok) {
    skip = d.skip;
    return;
  }
  docker = d.docker;
  const base = await ensureBaseImage(docker);
  if (!base.ok) {
    skip = base.skip;
    return;
  }
  builderImage = await ensureBuilderImage(docker);
  loaderImage = await ensureTestLoaderImage(docker, builderImage.tag);
  scratch = await mkdtemp(join(tmpdir(), 'falco-probes-docker-pin-'));
});

after(async () => {
  try {
    if (!skip && docker) assert.deepEqual((await ourLeftovers(docker)).containers, [], 'containers labelled falco-probes=1 are left');
  } finally {
    if (scratch) await rm(scratch, { recursive: true, force: true });
    await releaseDocker();
  }
});

/** Run `fn` and count the containers this process created meanwhile, as the daemon's event log records them. */
async function countingContainers<T>(fn: () => Promise<T>): Promise<{ value: T; created: number }> {
  const startNs = BigInt(Date.now()) * 1_000_000n;
  const value = await fn();
  const untilS = Math.ceil(Date.now() / 1000) + 1;
  const stream = await docker.getEvents({
    since: Math.floor(Number(startNs / 1_000_000_000n)) - 1,
    until: untilS,
    filters: { type: ['container'], event: ['create'], label: [`falco-probes.pid=${process.pid}`] },
  } as Parameters<Docker['getEvents']>[0]);
  let text = '';
  for await (const chunk of stream as AsyncIterable<Buffer>) text += chunk.toString('utf8');
  const events = text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as { timeNano: number | string; Action: string });
  // The API's `since` has whole seconds here; the nanosecond stamps make the window exact.
  return { value, created: events.filter((e) => BigInt(e.timeNano) >= startNs && e.Action === 'create').length };
}

/** The pin's image identity: the sha256 of the image's package list, never the daemon's image id. */
function idOf(pin: BuilderPin): string {
  assert.equal(pin.kind, 'docker');
  const id = pin.kind === 'docker' ? pin.image : '';
  assert.match(id, /^sha256:[0-9a-f]{64}$/);
  return id;
}

describe('Docker builder pin memo', () => {
  test('the memo folder sits beside the package cache', () => {
    assert.equal(dockerPinMemoDir({ XDG_CACHE_HOME: '/x/cache' }), '/x/cache/falco-probes/docker-pins');
    assert.equal(dockerPinMemoDir({ FALCO_PROBES_CACHE: '/srv/cache/packages', XDG_CACHE_HOME: '/x/cache' }), '/srv/cache/docker-pins');
    const memo = new DockerPinMemo('/m');
    assert.equal(memo.path(`sha256:${'a'.repeat(64)}`), `/m/sha256-${'a'.repeat(64)}.json`);
    assert.equal(memo.path('sha256:../../etc/passwd'), undefined);
  });

  test('a second pin() in a fresh builder starts no container and gives the identical pin', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const dir = join(scratch, 'memo-second');
    const unmemoized = await countingContainers(() => createDockerBuilder({ docker, pinMemoDir: false }).pin());
    assert.equal(unmemoized.created, 1, 'the pin without a memo runs one container');
    assert.notEqual(idOf(unmemoized.value), builderImage.id, 'the pin names the content, not the image id');

    const first = await countingContainers(() => createDockerBuilder({ docker, pinMemoDir: dir }).pin());
    assert.equal(first.created, 1);
    assert.deepEqual(first.value, unmemoized.value);
    const file = new DockerPinMemo(dir).path(builderImage.id)!;
    const entry = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    assert.equal(entry['image'], builderImage.id);
    assert.match(String(entry['output']), /clang version/);

    const second = await countingContainers(() => createDockerBuilder({ docker, pinMemoDir: dir }).pin());
    assert.equal(second.created, 0, 'the remembered pin started a container');
    assert.deepEqual(second.value, unmemoized.value);
    t.diagnostic(`pin ${JSON.stringify(second.value)}`);
  });

  test('a corrupted memo is ignored and written again', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const dir = join(scratch, 'memo-corrupt');
    const good = await createDockerBuilder({ docker, pinMemoDir: dir }).pin();
    const file = new DockerPinMemo(dir).path(builderImage.id)!;
    const goodText = await readFile(file, 'utf8');

    for (const bad of [
      goodText.slice(0, goodText.length / 2),
      '',
      'null\n',
      `${JSON.stringify({ ...JSON.parse(goodText), output: 42 })}\n`,
    ]) {
      await writeFile(file, bad);
      const again = await countingContainers(() => createDockerBuilder({ docker, pinMemoDir: dir }).pin());
      assert.equal(again.created, 1, `the memo ${JSON.stringify(bad.slice(0, 40))} was not ignored`);
      assert.deepEqual(again.value, good);
      assert.equal(await readFile(file, 'utf8'), goodText, 'the memo was not written again');
    }
  });

  test("another image id never uses an image's memo", async (t) => {
    if (skip) return skipOrFail(t, skip);
    assert.notEqual(loaderImage.id, builderImage.id);
    const dir = join(scratch, 'memo-other');
    const memo = new DockerPinMemo(dir);
    // A well-formed entry for the builder image that says something no container would: read back as is.
    const command = PROBE_COMMAND;
    const packages = 'clang 1:99.1.2 amd64\ngcc-99 99.0.1-1 amd64\n';
    await memo.set(
      builderImage.id,
      command,
      `Debian clang version 99.1.2\n----\n  LLVM version 99.1.2\n----\ngcc (Debian 99.0.1-1) 99.0.1\n----\n${packages}`,
    );
    const marked = await countingContainers(() => createDockerBuilder({ docker, pinMemoDir: dir }).pin());
    assert.equal(marked.created, 0);
    assert.deepEqual(marked.value, {
      kind: 'docker',
      image: `sha256:${sha256Hex(packages)}`,
      clang: 'Debian clang version 99.1.2',
      gcc: 'gcc (Debian 99.0.1-1) 99.0.1',
    });

    // The same entry under the loader image's name: its content names another image, so it is ignored.
    await copyFile(memo.path(builderImage.id)!, memo.path(loaderImage.id)!);
    const loader = await countingContainers(() =>
      createDockerBuilder({ docker, pinMemoDir: dir, recipe: 'driver-loader', image: loaderImage.tag }).pin(),
    );
    assert.equal(loader.created, 1);
    assert.notEqual(idOf(loader.value), idOf(marked.value));
    assert.doesNotMatch(loader.value.clang, /99\.1\.2/);
    const fresh = await createDockerBuilder({ docker, pinMemoDir: false, recipe: 'driver-loader', image: loaderImage.tag }).pin();
    assert.deepEqual(loader.value, fresh);
    assert.equal((await memo.get(loaderImage.id, command)) !== undefined, true, "the loader image's memo was not written");
    assert.match((await memo.get(builderImage.id, command)) ?? '', /99\.1\.2/, "the builder image's memo was touched");
  });
  test('the builder image made twice (no layer reused) has two image ids and one identity, so one set of keys', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const again = await ensureImage(docker, { ...builderImageDefinition(), repository: 'falco-probes/builder-made-again', noCache: true });
    t.after(async () => {
      await docker
        .getImage(again.tag)
        .remove({ force: true })
        .catch(() => undefined);
    });
    assert.notEqual(again.id, builderImage.id, 'a second build from scratch gives another image id');
    const first = await createDockerBuilder({ docker, pinMemoDir: false }).pin();
    const second = await createDockerBuilder({ docker, pinMemoDir: false, image: again.tag }).pin();
    assert.equal(idOf(second), idOf(first));
    assert.deepEqual(second, first);
    t.diagnostic(`image ids ${builderImage.id} and ${again.id}; identity ${idOf(first)}`);
  });
});
