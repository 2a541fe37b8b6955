import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FalcoProbesError } from '../src/util/errors.js';
import { editDistance, nearMatches, parsePattern, selectTargets } from '../src/run/select.js';
import type { Target } from '../src/graph/types.js';

// Target patterns and label filters over a small graph of two OSes, named as
// generate names them (src/graph/targets.ts): the kernel alone where one driver
// entry applies (amazonlinux2), `<kernel>-<driver>-<version>` where two do (debian12).

function target(os: string, kernel: string, driver = 'example', flavour?: string): Target {
  const version = driver === 'example' ? '1.0.0' : '9.1.0+driver';
  const name = os === 'debian12' ? `${kernel}-${driver}-${version}` : kernel;
  return {
    label: `//probes/${os}:${name}`,
    name,
    os,
    kernel: {
      name: kernel,
      release: kernel,
      version: '#1',
      machine: 'x86_64',
      kernelVersion: '1',
      targetId: os,
      packages: [],
      ...(flavour ? { flavour } : {}),
    },
    osRelease: { ID: os },
    driver: {
      name: driver,
      version,
      source: { path: 'x' },
      recipe: 'kbuild',
      bpfDir: '.',
      kinds: ['bpf'],
      object: 'probe.o',
      sourceSha256: '0'.repeat(64),
    },
    builder: { kind: 'host', clang: '14.0.6' },
    kind: 'bpf',
    arch: 'x86_64',
    key: '1'.repeat(64),
    probeFile: `${driver}_${os}_${kernel}_1.o`,
    output: `${version}/x86_64/${driver}_${os}_${kernel}_1.o`,
  };
}

const graph = [
  target('amazonlinux2', '4.14.232-176.381.amzn2.x86_64'),
  target('amazonlinux2', '5.10.1-1.amzn2.x86_64'),
  target('debian12', '6.1.0-50-amd64', 'example', 'amd64'),
  target('debian12', '6.1.0-50-amd64', 'falco', 'amd64'),
  target('debian12', '6.1.0-50-cloud-amd64', 'example', 'cloud-amd64'),
  target('debian12', '6.12.117+deb12-amd64', 'example', 'amd64'),
];
const labels = (ts: Target[]) => ts.map((t) => t.label);

test('//probes/... (and no pattern) selects everything, in graph order', () => {
  assert.deepEqual(labels(selectTargets(graph, { patterns: ['//probes/...'] })), labels(graph));
  assert.deepEqual(labels(selectTargets(graph, { patterns: [] })), labels(graph));
});

test('//probes/<os>/..., //probes/<os> and //probes/<os>:all select one OS', () => {
  for (const p of ['//probes/debian12/...', '//probes/debian12', '//probes/debian12:all'])
    assert.deepEqual(labels(selectTargets(graph, { patterns: [p] })), labels(graph.slice(2)), p);
});

test('//probes/<os>:<name> selects one target; a kernel name selects every target of that kernel', () => {
  assert.deepEqual(labels(selectTargets(graph, { patterns: ['//probes/debian12:6.1.0-50-amd64-falco-9.1.0+driver'] })), [
    '//probes/debian12:6.1.0-50-amd64-falco-9.1.0+driver',
  ]);
  assert.deepEqual(labels(selectTargets(graph, { patterns: ['//probes/debian12:6.1.0-50-amd64'] })), [
    '//probes/debian12:6.1.0-50-amd64-example-1.0.0',
    '//probes/debian12:6.1.0-50-amd64-falco-9.1.0+driver',
  ]);
  assert.deepEqual(labels(selectTargets(graph, { patterns: ['//probes/debian12:6.12.117+deb12-amd64'] })), [
    '//probes/debian12:6.12.117+deb12-amd64-example-1.0.0',
  ]);
  // Where the kernel alone is the target's name, it is that one target.
  assert.deepEqual(labels(selectTargets(graph, { patterns: ['//probes/amazonlinux2:5.10.1-1.amzn2.x86_64'] })), [
    '//probes/amazonlinux2:5.10.1-1.amzn2.x86_64',
  ]);
});

test('several patterns select the union, without duplicates', () => {
  const got = selectTargets(graph, {
    patterns: ['//probes/amazonlinux2/...', '//probes/debian12:6.1.0-50-cloud-amd64', '//probes/amazonlinux2:5.10.1-1.amzn2.x86_64'],
  });
  assert.deepEqual(labels(got), [graph[0]!.label, graph[1]!.label, graph[4]!.label]);
});

test('labels narrow the selection: different keys all match, values of one key are alternatives', () => {
  assert.deepEqual(labels(selectTargets(graph, { patterns: [], labels: ['driver=falco'] })), [
    '//probes/debian12:6.1.0-50-amd64-falco-9.1.0+driver',
  ]);
  assert.deepEqual(labels(selectTargets(graph, { patterns: [], labels: ['os=debian12', 'driver=example', 'flavour=amd64'] })), [
    graph[2]!.label,
    graph[5]!.label,
  ]);
  assert.equal(
    selectTargets(graph, { patterns: [], labels: ['os=debian12', 'os=amazonlinux2', 'arch=x86_64', 'kind=bpf'] }).length,
    graph.length,
  );
});

function usageError(fn: () => unknown, message: RegExp, hint?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof FalcoProbesError, String(err));
    assert.equal(err.kind, 'usage');
    assert.match(err.message, message);
    if (hint) assert.match(err.hint ?? '', hint);
    return true;
  });
}

test('an unknown OS or kernel is a usage error that lists near matches', () => {
  usageError(() => selectTargets(graph, { patterns: ['//probes/debain12/...'] }), /unknown OS "debain12"/, /did you mean: debian12$/);
  usageError(() => selectTargets(graph, { patterns: ['//probes/amazon:x'] }), /unknown OS "amazon"/, /amazonlinux2/);
  usageError(
    () => selectTargets(graph, { patterns: ['//probes/debian12:6.1.0-5-amd64'] }),
    /unknown kernel "6\.1\.0-5-amd64" in debian12/,
    /6\.1\.0-50-amd64/,
  );
  usageError(() => selectTargets(graph, { patterns: [], labels: ['driver=falc'] }), /unknown value of label driver: "falc"/, /falco/);
  // An OS with a lockfile but no targets is known, not a typo.
  assert.deepEqual(selectTargets(graph, { patterns: ['//probes/ubuntu/...'], knownOs: ['ubuntu'] }), []);
});

test('malformed patterns and labels are usage errors', () => {
  for (const p of ['debian12', '//probes', '//other/...', '//probes/debian12/x', '//probes/a:b:c', '//probes/...:x'])
    usageError(() => parsePattern(p), /not a target pattern/);
  usageError(() => selectTargets(graph, { patterns: [], labels: ['colour=red'] }), /--label expects KEY=VALUE/);
  usageError(() => selectTargets(graph, { patterns: [], labels: ['=x'] }), /--label expects KEY=VALUE/);
});

test('edit distance and near matches', () => {
  assert.equal(editDistance('kitten', 'sitting'), 3);
  assert.equal(editDistance('', 'abc'), 3);
  assert.equal(editDistance('same', 'same'), 0);
  assert.deepEqual(nearMatches('debian', ['debian12', 'debian11', 'ubuntu']), ['debian11', 'debian12']);
  assert.deepEqual(nearMatches('zzz', ['debian12']), []);
});
