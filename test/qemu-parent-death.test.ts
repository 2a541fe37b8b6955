import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PROJECT_ROOT } from './helpers/cli.js';
import { skipOrFail } from './helpers/require.js';
import { withParentDeathSignal } from '../src/verify/qemu.js';
import { existsSync } from 'node:fs';

// A VM runs in a process group of its own (so the whole VM is killed at once),
// which also keeps it from dying with the runner. qemu.ts starts it through
// `setpriv --pdeathsig KILL`: when the runner dies, a SIGKILL included, the
// kernel kills the VM. Shown here with a child that prints nothing (a silent
// hung guest, which no closed pipe would ever stop), through the real runner's
// function, in a real Node process that is SIGKILLed.

const alive = async (pid: number) => {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat !== '' && !/^\d+ \(.*\) Z /.test(stat);
};

test('a detached child started as a VM is started dies with its SIGKILLed parent', async (t) => {
  if (!existsSync('/usr/bin/setpriv') && !existsSync('/bin/setpriv')) return skipOrFail(t, 'setpriv (util-linux) is not installed');
  const argv = withParentDeathSignal(['sleep', '300']);
  assert.match(argv[0]!, /setpriv$/);
  assert.deepEqual(argv.slice(1), ['--pdeathsig', 'KILL', '--', 'sleep', '300']);
  // The parent: spawns the child detached, as runVm spawns qemu, says its pid, and waits.
  const script = `
    import { spawn } from 'node:child_process';
    import { withParentDeathSignal } from ${JSON.stringify(join(PROJECT_ROOT, 'src/verify/qemu.ts'))};
    const [cmd, ...args] = withParentDeathSignal(['sleep', '300']);
    const c = spawn(cmd, args, { stdio: 'ignore', detached: true });
    process.stdout.write(String(c.pid) + '\\n');
    setInterval(() => {}, 1000);
  `;
  const parent = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: PROJECT_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const pid = await new Promise<number>((resolve, reject) => {
    let out = '';
    parent.stdout.on('data', (d) => {
      out += String(d);
      if (out.includes('\n')) resolve(Number(out.trim()));
    });
    parent.once('exit', () => reject(new Error('the parent exited early')));
  });
  try {
    // setpriv has exec'd sleep by the time it sleeps: same pid.
    for (let i = 0; i < 100 && !(await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).startsWith('sleep'); i++)
      await new Promise((r) => setTimeout(r, 20));
    assert.ok(await alive(pid), 'the child runs');
    parent.kill('SIGKILL');
    await new Promise((r) => parent.once('exit', r));
    let gone = false;
    for (let i = 0; i < 100 && !gone; i++) {
      gone = !(await alive(pid));
      if (!gone) await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(gone, `pid ${pid} outlived its parent`);
  } finally {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone, as it should be
    }
  }
});
