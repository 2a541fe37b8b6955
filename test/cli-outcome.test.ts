import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { exitStatusOf, main } from '../src/cli/main.js';
import { NOT_OK, OK, okIf, worse, type Outcome } from '../src/cli/outcome.js';
import { createMemoryLogger } from '../src/util/log.js';
import { withTempDir } from './helpers/cli.js';

// Commands return an outcome (or throw); main.ts alone makes exit statuses of
// them. And the load test's command is load-test, with verify-load, its old
// name, still accepted with a note on stderr.

/** main() in this process, with its stdout and log lines caught. */
async function run(args: string[], root = process.cwd()) {
  let stdout = '';
  const out = new Writable({
    write(chunk, _enc, done) {
      stdout += String(chunk);
      done();
    },
  });
  const logger = createMemoryLogger();
  const code = await main(['--root', root, ...args], { logger, stdout: out });
  return { code, stdout, stderr: logger.lines.join('\n') };
}

test('outcomes become exit statuses in main alone: ok 0, not-ok 1, interrupted 128 + the signal', () => {
  assert.equal(exitStatusOf(OK), 0);
  assert.equal(exitStatusOf(NOT_OK), 1);
  assert.equal(exitStatusOf({ kind: 'interrupted', signal: 'SIGINT' }), 130);
  assert.equal(exitStatusOf({ kind: 'interrupted', signal: 'SIGTERM' }), 143);
  assert.equal(okIf(true), OK);
  assert.equal(okIf(false), NOT_OK);
  const stopped: Outcome = { kind: 'interrupted', signal: 'SIGTERM' };
  // A build and its load test: the worse of the two.
  assert.equal(worse(OK, OK), OK);
  assert.equal(worse(OK, NOT_OK), NOT_OK);
  assert.equal(worse(NOT_OK, OK), NOT_OK);
  assert.equal(worse(NOT_OK, stopped), stopped);
  assert.equal(worse(stopped, OK), stopped);
});

test('usage errors that commands used to map themselves still exit 2', async () => {
  await withTempDir(async (root) => {
    const lk = await run(['list-kernels'], root);
    assert.equal(lk.code, 2, lk.stderr);
    assert.match(lk.stderr, /^error: list-kernels takes exactly one OS; see falco-probes list-kernels --help$/m);
    // is-uploaded answers by its status: any error is 2, never 1 (here: no project to read).
    const up = await run(['is-uploaded', 'debian12', '6.1.0-1-amd64'], root);
    assert.equal(up.code, 2, up.stderr);
    assert.match(up.stderr, /^error: /m);
    const unknown = await run(['no-such-command'], root);
    assert.equal(unknown.code, 2);
  });
});

test('load-test --help, and verify-load (its old name) works the same with a one-line note on stderr', async () => {
  const now = await run(['load-test', '--help']);
  assert.equal(now.code, 0, now.stderr);
  assert.match(now.stdout, /^usage: falco-probes load-test \[PATTERN\.\.\.\] \[options\]$/m);
  assert.equal(now.stderr, '');

  const old = await run(['verify-load', '--help']);
  assert.equal(old.code, 0, old.stderr);
  assert.equal(old.stdout, now.stdout);
  const notes = old.stderr.split('\n');
  assert.equal(notes.length, 1, old.stderr);
  assert.match(notes[0]!, /^warning: "verify-load" is the old name of "load-test".*use falco-probes load-test$/);

  // Both names check their options alike: a bad -j is a usage error (2), after the note.
  await withTempDir(async (root) => {
    const a = await run(['load-test', '-j', '0'], root);
    const b = await run(['verify-load', '-j', '0'], root);
    assert.equal(a.code, 2, a.stderr);
    assert.equal(b.code, 2, b.stderr);
    assert.equal(b.stderr, `${notes[0]}\n${a.stderr}`);
  });
});

test('the global --help lists load-test, and verify-load only as its old name', async () => {
  const help = await run(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^ {2}load-test {8}boot each probe's own kernel/m);
  const [commands, old] = help.stdout.split('old names, still accepted:');
  assert.doesNotMatch(commands!, /verify-load/);
  assert.match(old!, /^ {2}verify-load {6}the old name of load-test/m);
});

test('build --load-test, and --verify-load with a note', async () => {
  const help = await run(['build', '--help']);
  assert.match(help.stdout, /^ {6}--load-test {12}after building, boot the kernel/m);
  assert.match(help.stdout, /^ {6}--verify-load {10}the old name of --load-test/m);
  await withTempDir(async (root) => {
    // No project here: the run fails after the options are read, the note said first.
    const r = await run(['build', '--verify-load'], root);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr.split('\n')[0]!, /^warning: --verify-load is the old name of --load-test/);
    const n = await run(['build', '--load-test'], root);
    assert.equal(n.code, r.code);
    assert.doesNotMatch(n.stderr, /old name/);
  });
});
