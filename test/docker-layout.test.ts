import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import type { KernelDescriptor } from '../src/config/types.js';
import { kernelMounts, mockMounts, osReleaseText, unameValuesText } from '../src/builders/docker-layout.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { PROJECT_ROOT, withTempDir } from './helpers/cli.js';

// What a build container is given, without a Docker daemon: the kernel trees
// it mounts (and where), the mock files, and the uname shim run by a real sh.

const execFileAsync = promisify(execFile);
const SHIM = join(PROJECT_ROOT, 'builder', 'mock', 'uname');

/** A Debian-like kernel root: headers with an absolute include of -common and links into linux-kbuild. */
async function debianRoot(root: string, release: string, abi: string): Promise<void> {
  const headers = join(root, 'usr/src', `linux-headers-${release}`);
  await mkdir(join(headers, 'include'), { recursive: true });
  await writeFile(join(headers, 'Makefile'), `include /usr/src/linux-headers-${abi}-common/Makefile\n`);
  await writeFile(join(headers, '.config'), 'CONFIG_BPF=y\n');
  await symlink('../../lib/linux-kbuild-6.1/scripts', join(headers, 'scripts'));
  await mkdir(join(root, 'usr/src', `linux-headers-${abi}-common`), { recursive: true });
  await writeFile(join(root, 'usr/src', `linux-headers-${abi}-common`, 'Makefile'), 'all:\n');
  await mkdir(join(root, 'usr/lib/linux-kbuild-6.1/scripts'), { recursive: true });
  await mkdir(join(root, 'usr/lib/unrelated'), { recursive: true });
  await symlink('../lib/linux-kbuild-6.1', join(root, 'usr/src/linux-kbuild-6.1'));
  await mkdir(join(root, 'lib/modules', release), { recursive: true });
  await symlink(`/usr/src/linux-headers-${release}`, join(root, 'lib/modules', release, 'build'));
}

const kernel = (release: string, version = '#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (6.1.192)'): KernelDescriptor => ({
  name: release,
  release,
  version,
  machine: 'x86_64',
  kernelVersion: '1',
  targetId: 'debian',
  packages: [],
});

describe('Docker build layout', () => {
  test('Debian headers: every usr/src tree and linux-kbuild at their own paths and under /host, read-only', async () => {
    await withTempDir(async (dir) => {
      const root = join(dir, 'kernel');
      await debianRoot(root, '6.1.0-57-amd64', '6.1.0-57');
      const { kernelDir, mounts } = await kernelMounts(root, '6.1.0-57-amd64');
      assert.equal(kernelDir, '/usr/src/linux-headers-6.1.0-57-amd64');
      const byTarget = new Map(mounts.map((m) => [m.target, m]));
      const expected: [string, string][] = [
        ['/usr/src/linux-headers-6.1.0-57-amd64', 'usr/src/linux-headers-6.1.0-57-amd64'],
        ['/usr/src/linux-headers-6.1.0-57-common', 'usr/src/linux-headers-6.1.0-57-common'],
        // A link in usr/src is mounted as the tree it points at.
        ['/usr/src/linux-kbuild-6.1', 'usr/lib/linux-kbuild-6.1'],
        ['/usr/lib/linux-kbuild-6.1', 'usr/lib/linux-kbuild-6.1'],
      ];
      for (const [target, source] of expected) {
        for (const t of [target, `/host${target}`]) {
          const m = byTarget.get(t);
          assert.ok(m, `no mount at ${t}`);
          assert.equal(m.source, join(root, source));
          assert.equal(m.readOnly, true);
        }
      }
      assert.equal(mounts.length, expected.length * 2, `unexpected mounts: ${mounts.map((m) => m.target).join(' ')}`);
    });
  });

  test('an RPM kernel-devel tree and a tree reached only through a link are mounted too', async () => {
    await withTempDir(async (dir) => {
      const root = join(dir, 'kernel');
      const release = '4.14.232-176.381.amzn2.x86_64';
      await mkdir(join(root, 'usr/src/kernels', release), { recursive: true });
      await writeFile(join(root, 'usr/src/kernels', release, 'Makefile'), 'all:\n');
      await mkdir(join(root, 'opt/vendor/scripts'), { recursive: true });
      await symlink('/opt/vendor/scripts', join(root, 'usr/src/kernels', release, 'scripts'));
      const { kernelDir, mounts } = await kernelMounts(root, release);
      assert.equal(kernelDir, `/usr/src/kernels/${release}`);
      assert.deepEqual(mounts.map((m) => m.target).sort(), [
        '/host/opt/vendor/scripts',
        '/host/usr/src/kernels',
        '/opt/vendor/scripts',
        '/usr/src/kernels',
      ]);
      assert.equal(mounts.find((m) => m.target === '/opt/vendor/scripts')?.source, join(root, 'opt/vendor/scripts'));
    });
  });

  test('kernel trees with unsafe names or at reserved paths are refused', async () => {
    await withTempDir(async (dir) => {
      const root = join(dir, 'kernel');
      await debianRoot(root, '6.1.0-57-amd64', '6.1.0-57');
      await mkdir(join(root, 'usr/src/bad name:x'), { recursive: true });
      await assert.rejects(
        kernelMounts(root, '6.1.0-57-amd64'),
        (err: unknown) => err instanceof FalcoProbesError && /refusing kernel tree path/.test(err.message),
      );
    });
    await withTempDir(async (dir) => {
      const root = join(dir, 'kernel');
      const release = '5.10.0-1-amd64';
      await mkdir(join(root, 'usr/src', `linux-headers-${release}`), { recursive: true });
      await mkdir(join(root, 'etc/evil'), { recursive: true });
      await symlink('/etc/evil', join(root, 'usr/src', `linux-headers-${release}`, 'scripts'));
      await assert.rejects(kernelMounts(root, release), (err: unknown) => err instanceof FalcoProbesError && /reserves/.test(err.message));
    });
  });

  test('mocks: os-release, uname values, hosts, resolv.conf and /lib/modules/<release>/build', async () => {
    await withTempDir(async (dir) => {
      const mounts = await mockMounts({
        workDir: dir,
        kernel: kernel('6.1.0-57-amd64'),
        osRelease: { PRETTY_NAME: 'Debian GNU/Linux 12 (bookworm)', ID: 'debian' },
        kernelDir: '/usr/src/linux-headers-6.1.0-57-amd64',
        origin: 'kernels/debian12.lock.yaml',
      });
      const at = (t: string) => mounts.find((m) => m.target === t)!;
      assert.equal(await readFile(at('/etc/os-release').source, 'utf8'), 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID="debian"\n');
      assert.equal(at('/host/etc/os-release').source, at('/etc/os-release').source);
      assert.equal(
        await readFile(at('/opt/falco-probes/mock/uname.values').source, 'utf8'),
        '6.1.0-57-amd64\n#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (6.1.192)\nx86_64\nfalco-probes\n',
      );
      assert.doesNotMatch(await readFile(at('/etc/resolv.conf').source, 'utf8'), /nameserver/);
      assert.equal(await readlink(join(at('/lib/modules').source, '6.1.0-57-amd64', 'build')), '/usr/src/linux-headers-6.1.0-57-amd64');
      assert.equal(at('/host/lib/modules').source, at('/lib/modules').source);
      assert.ok(mounts.every((m) => m.readOnly));
    });
  });

  test('hostile os-release and uname values never reach a file', () => {
    assert.throws(() => osReleaseText({ ID: 'debian"; rm -rf /' }, 'x.yaml'), FalcoProbesError);
    assert.throws(() => osReleaseText({ 'id; x': 'debian' }, 'x.yaml'), FalcoProbesError);
    assert.throws(() => unameValuesText(kernel('6.1.0-57-amd64', '#1 SMP\n6.6.6')), FalcoProbesError);
    assert.throws(() => unameValuesText(kernel('6.1.0-57-amd64', '#1 $(reboot)')), FalcoProbesError);
    assert.throws(() => unameValuesText(kernel('../../etc')), FalcoProbesError);
  });

  test('the uname shim answers as the target kernel, like GNU uname', async () => {
    await withTempDir(async (dir) => {
      const values = join(dir, 'uname.values');
      await writeFile(values, unameValuesText(kernel('6.12.117+deb12-amd64', '#1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1~deb12u1 (2025)')));
      const uname = async (...args: string[]) =>
        (await execFileAsync('sh', [SHIM, ...args], { env: { PATH: '/usr/bin:/bin', FALCO_PROBES_UNAME_VALUES: values } })).stdout;
      assert.equal(await uname(), 'Linux\n');
      assert.equal(await uname('-r'), '6.12.117+deb12-amd64\n');
      assert.equal(await uname('-v'), '#1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1~deb12u1 (2025)\n');
      assert.equal(await uname('-m'), 'x86_64\n');
      assert.equal(await uname('-n'), 'falco-probes\n');
      // Fields come in GNU's order whatever the order of the options.
      assert.equal(await uname('-m', '-s', '-r'), 'Linux 6.12.117+deb12-amd64 x86_64\n');
      assert.equal(await uname('-mr'), '6.12.117+deb12-amd64 x86_64\n');
      assert.equal(await uname('--kernel-release'), '6.12.117+deb12-amd64\n');
      assert.equal(
        await uname('-a'),
        'Linux falco-probes 6.12.117+deb12-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1~deb12u1 (2025) x86_64 GNU/Linux\n',
      );
      await assert.rejects(uname('-x'), /invalid option/);
      await assert.rejects(uname('extra'), /extra operand/);
    });
  });
});
