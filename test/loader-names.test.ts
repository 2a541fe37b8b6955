import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import {
  artifactFileName,
  falcoctlParts,
  legacyArtifactFileName,
  legacyScriptParts,
  loaderRequestPaths,
  type LoaderKernel,
  type LoaderParts,
} from '../src/naming/loader-names.js';
import { falcoctlProbeFile, legacyLoaderProbeFile } from './helpers/os-fixtures.js';
import { PROJECT_ROOT } from './helpers/cli.js';

const execFileAsync = promisify(execFile);

// The naming rules of Falco's two loaders (src/naming/loader-names.ts), checked against
// the cases upstream tests them with (falcosecurity/falcoctl v0.13.0
// pkg/driver/distro/*_test.go), the examples of the falco-driver-loader script
// (falcosecurity/falco 0.36.2), every kernel of the checked-in lockfiles, and the test
// loader's shell version of the Debian rule.

type Case = { targetId: string; release: string; version: string; kernelVersion?: string; want: LoaderParts | RegExp; note?: string };

const kernel = (
  c: Pick<Case, 'targetId' | 'release' | 'version' | 'kernelVersion'>,
  machine: LoaderKernel['machine'] = 'x86_64',
): LoaderKernel => ({
  targetId: c.targetId,
  release: c.release,
  version: c.version,
  kernelVersion: c.kernelVersion ?? '',
  machine,
});

function check(derive: (k: LoaderKernel) => LoaderParts, cases: readonly Case[]): void {
  for (const c of cases) {
    const label = `${c.targetId} ${c.release} ${JSON.stringify(c.version)}${c.note ? ` (${c.note})` : ''}`;
    if (c.want instanceof RegExp) assert.throws(() => derive(kernel(c)), c.want, label);
    else assert.deepEqual(derive(kernel(c)), c.want, label);
  }
}

const parts = (targetId: string, release: string, kernelVersion: string): LoaderParts => ({ targetId, release, kernelVersion });

describe('falcoctl, the cases of pkg/driver/distro/*_test.go (v0.13.0)', () => {
  test('debian_test.go TestDistroDebianFixup: the release is rebuilt from uname -v, kernelversion "1"', () => {
    check(falcoctlParts, [
      {
        targetId: 'debian',
        release: '5.10.0-0.deb10.22-rt-amd64',
        version: '#1 SMP PREEMPT_DYNAMIC Debian 5.10.178-3',
        want: parts('debian', '5.10.178-3-rt-amd64', '1'),
      },
      {
        targetId: 'debian',
        release: '6.1.0-13-amd64',
        version: '#1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 (2023-09-29)',
        want: parts('debian', '6.1.55-1-amd64', '1'),
      },
      {
        targetId: 'debian',
        release: '5.10.0-0.deb10.22-amd64',
        version: '#1 SMP PREEMPT_DYNAMIC',
        want: parts('debian', '5.10.0-0.deb10.22-amd64', '1'),
      },
      { targetId: 'debian', release: '5.10.0-0', version: '#39 SMP PREEMPT_DYNAMIC', want: parts('debian', '5.10.0-0', '39') },
      {
        targetId: 'debian',
        release: '6.5.3-1~bpo12+1-rt-amd64',
        version: '#1 SMP PREEMPT_DYNAMIC',
        want: parts('debian', '6.5.3-1~bpo12+1-rt-amd64', '1'),
      },
      // falcoctl keeps "malformed" as the kernelversion; a name from it is refused here.
      { targetId: 'debian', release: '6.5.3-1~bpo12+1-rt-amd64', version: 'malformed', want: /uname -v has no "#<number>"/ },
    ]);
  });

  test('debian: the brief, cloud and arm64 flavours, Debian 12 backports and Debian 13 releases', () => {
    check(falcoctlParts, [
      {
        targetId: 'debian',
        release: '6.1.0-47-amd64',
        version: '#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3',
        want: parts('debian', '6.1.170-3-amd64', '1'),
      },
      {
        targetId: 'debian',
        release: '6.1.0-47-cloud-amd64',
        version: '#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3',
        want: parts('debian', '6.1.170-3-cloud-amd64', '1'),
      },
      {
        targetId: 'debian',
        release: '6.1.0-47-rt-amd64',
        version: '#1 SMP PREEMPT_RT Debian 6.1.170-3',
        want: parts('debian', '6.1.170-3-rt-amd64', '1'),
      },
      { targetId: 'debian', release: '6.1.0-47-arm64', version: '#1 SMP Debian 6.1.170-3', want: parts('debian', '6.1.170-3-arm64', '1') },
      {
        targetId: 'debian',
        release: '6.1.0-47-rt-arm64',
        version: '#1 SMP PREEMPT_RT Debian 6.1.170-3',
        want: parts('debian', '6.1.170-3-rt-arm64', '1'),
      },
      {
        targetId: 'debian',
        release: '6.12.117+deb12-amd64',
        version: '#1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1~deb12u1 (2025-11-20)',
        want: parts('debian', '6.12.117-1-amd64', '1'),
      },
      {
        targetId: 'debian',
        release: '6.12.43+deb13-cloud-arm64',
        version: '#1 SMP PREEMPT_DYNAMIC Debian 6.12.43-1',
        want: parts('debian', '6.12.43-1-cloud-arm64', '1'),
      },
      // An arch Debian's rule does not know: the package version alone.
      {
        targetId: 'debian',
        release: '6.1.0-47-686-pae',
        version: '#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3',
        want: parts('debian', '6.1.170-3', '1'),
      },
      // falcoctl sets the kernelversion to "1" whatever the number after # was.
      {
        targetId: 'debian',
        release: '5.10.0-23-amd64',
        version: '#2 SMP Debian 5.10.179-1',
        want: parts('debian', '5.10.179-1-amd64', '1'),
      },
    ]);
  });

  test('ubuntu_test.go TestDistroUbuntuInitFixup: ubuntu-<flavour> from the release, kernelversion the first word', () => {
    check(falcoctlParts, [
      {
        targetId: 'ubuntu',
        release: '5.0.0-1028-aws-5.0',
        version: '#26~22.04.1-Ubuntu SMP Mon Apr 24 01:58:15 UTC 2023',
        want: parts('ubuntu-aws', '5.0.0-1028-aws-5.0', '26~22.04.1'),
      },
      { targetId: 'ubuntu', release: '5.0.0-1028-aws-5.0', version: '#26', want: parts('ubuntu-aws', '5.0.0-1028-aws-5.0', '26') },
      { targetId: 'ubuntu', release: '5.0.0-1028-aws-5.0', version: '#26-Ubuntu', want: parts('ubuntu-aws', '5.0.0-1028-aws-5.0', '26') },
      { targetId: 'ubuntu', release: '5.0.0', version: '#26', want: parts('ubuntu-generic', '5.0.0', '26') },
      { targetId: 'ubuntu', release: '6.5.0-9-lowlatency', version: '#9.1', want: parts('ubuntu-lowlatency', '6.5.0-9-lowlatency', '9.1') },
      { targetId: 'ubuntu', release: '6.5.0-1008-gcp', version: '#8', want: parts('ubuntu-gcp', '6.5.0-1008-gcp', '8') },
      { targetId: 'ubuntu', release: '6.5.0-1008-aws', version: '#8~22.04.1', want: parts('ubuntu-aws', '6.5.0-1008-aws', '8~22.04.1') },
      // The recorded id only picks the rule; the flavour is the release's.
      {
        targetId: 'ubuntu-generic',
        release: '5.15.0-1019-aws',
        version: '#23-Ubuntu SMP',
        want: parts('ubuntu-aws', '5.15.0-1019-aws', '23'),
      },
      {
        targetId: 'ubuntu-generic',
        release: '5.15.0-91-generic',
        version: '#101-Ubuntu SMP Tue Nov 14 13:30:08 UTC 2023',
        want: parts('ubuntu-generic', '5.15.0-91-generic', '101'),
      },
      { targetId: 'ubuntu-generic', release: '5.15.0-91-generic', version: 'SMP 101', want: /does not start with "#<number>"/ },
    ]);
  });

  test('generic_test.go TestDistroGeneric: the digits of the first #<number>', () => {
    check(falcoctlParts, [
      {
        targetId: 'photon',
        release: '4.19.283-3.ph3',
        version: '#1-photon SMP Fri Jun 16 02:25:27 UTC 2023',
        want: parts('photon', '4.19.283-3.ph3', '1'),
      },
      {
        targetId: 'arch',
        release: '6.7.2-arch1-2',
        version: '#1 SMP PREEMPT_DYNAMIC Wed, 31 Jan 2024 09:22:15 +0000',
        want: parts('arch', '6.7.2-arch1-2', '1'),
      },
      { targetId: 'arch', release: '6.7.2-arch1-2', version: '#231asfa #rf3f', want: parts('arch', '6.7.2-arch1-2', '231') },
      { targetId: 'arch', release: '6.7.2-arch1-2', version: '#231asfa234', want: parts('arch', '6.7.2-arch1-2', '231') },
      { targetId: 'arch', release: '6.7.2-arch1-2', version: 'SMP PREEMPT_DYNAMIC', want: /uname -v has no "#<number>"/ },
    ]);
  });

  test('amzn_test.go TestDistroAmznInit: VERSION_ID picks the target id; the rule is the generic one', () => {
    const amzn: [string | undefined, string][] = [
      ['', 'amazonlinux'],
      ['2', 'amazonlinux2'],
      ['2022', 'amazonlinux2022'],
      ['2023', 'amazonlinux2023'],
      [undefined, 'amazonlinux'],
    ];
    for (const [versionId, id] of amzn) {
      const osRelease = { ID: 'amzn', ...(versionId !== undefined ? { VERSION_ID: versionId } : {}) };
      const release = '4.14.232-176.381.amzn2.x86_64';
      assert.equal(
        falcoctlProbeFile(osRelease, release, '#1 SMP Tue May 4 20:23:03 UTC 2021'),
        `falco_${id}_${release}_1.o`,
        `VERSION_ID=${versionId}`,
      );
      assert.equal(
        legacyLoaderProbeFile(osRelease, release, '#1 SMP Tue May 4 20:23:03 UTC 2021'),
        `falco_${id}_${release}_1.o`,
        `VERSION_ID=${versionId}`,
      );
    }
    check(falcoctlParts, [
      {
        targetId: 'amazonlinux2',
        release: '4.14.232-176.381.amzn2.x86_64',
        version: '#1 SMP',
        want: parts('amazonlinux2', '4.14.232-176.381.amzn2.x86_64', '1'),
      },
      {
        targetId: 'amazonlinux2023',
        release: '6.1.61-85.141.amzn2023.aarch64',
        version: '#1 SMP PREEMPT_DYNAMIC',
        want: parts('amazonlinux2023', '6.1.61-85.141.amzn2023.aarch64', '1'),
      },
      { targetId: 'amzn', release: '4.14.232-176.381.amzn2.x86_64', version: '#1 SMP', want: /no loader asks for target "amzn"/ },
    ]);
  });

  test('cos_test.go, centos_test.go, rhel_test.go, distro_test.go (ol, unknown ids): the generic rule', () => {
    check(falcoctlParts, [
      // BUILD_ID (cos_test.go) only fetches headers; the release keeps its trailing +.
      { targetId: 'cos', release: '6.1.100+', version: '#1 SMP Thu Aug 15 09:13:24 UTC 2024', want: parts('cos', '6.1.100+', '1') },
      {
        targetId: 'centos',
        release: '5.14.0-427.el9.x86_64',
        version: '#1 SMP PREEMPT_DYNAMIC Fri Feb 23 04:52:18 UTC 2024',
        want: parts('centos', '5.14.0-427.el9.x86_64', '1'),
      },
      {
        targetId: 'rhel',
        release: '4.18.0-553.el8_10.x86_64',
        version: '#1 SMP Fri May 10 15:19:13 EDT 2024',
        want: parts('rhel', '4.18.0-553.el8_10.x86_64', '1'),
      },
      {
        targetId: 'ol',
        release: '5.10.0-2047.510.5.5.el7uek.x86_64',
        version: '#2 SMP Wed Jan 1 00:00:00 PST 2025',
        want: parts('ol', '5.10.0-2047.510.5.5.el7uek.x86_64', '2'),
      },
      { targetId: 'foo', release: '5.10.0', version: '#1 SMP', want: parts('foo', '5.10.0', '1') },
      {
        targetId: 'rocky',
        release: '5.14.0-503.14.1.el9_5.x86_64',
        version: '#1 SMP PREEMPT_DYNAMIC',
        want: parts('rocky', '5.14.0-503.14.1.el9_5.x86_64', '1'),
      },
      // Devuan is not Debian to falcoctl: os-release ID devuan has no rule of its own.
      {
        targetId: 'devuan',
        release: '6.1.0-10-amd64',
        version: '#1 SMP PREEMPT_DYNAMIC Debian 6.1.38-1',
        want: parts('devuan', '6.1.0-10-amd64', '1'),
      },
      // The loaders lower-case os-release's ID.
      {
        targetId: 'Fedora',
        release: '6.8.5-301.fc40.x86_64',
        version: '#1 SMP PREEMPT_DYNAMIC',
        want: parts('fedora', '6.8.5-301.fc40.x86_64', '1'),
      },
    ]);
  });

  test('bottlerocket_test.go, talos_test.go, minikube_test.go: the kernelversion is 1_<os-release version>, recorded', () => {
    check(falcoctlParts, [
      {
        targetId: 'bottlerocket',
        release: '5.15.160',
        version: '#1 SMP',
        kernelVersion: '1_1.11.0-aws',
        want: parts('bottlerocket', '5.15.160', '1_1.11.0-aws'),
      },
      {
        targetId: 'bottlerocket',
        release: '5.15.160',
        version: '#1 SMP',
        kernelVersion: '1_1.17.0-aws',
        want: parts('bottlerocket', '5.15.160', '1_1.17.0-aws'),
      },
      {
        targetId: 'talos',
        release: '6.6.33-talos',
        version: '#1 SMP',
        kernelVersion: '1_1.11.0',
        want: parts('talos', '6.6.33-talos', '1_1.11.0'),
      },
      {
        targetId: 'talos',
        release: '6.6.33-talos',
        version: '#1 SMP',
        kernelVersion: '1_1.17.0',
        want: parts('talos', '6.6.33-talos', '1_1.17.0'),
      },
      {
        targetId: 'minikube',
        release: '5.10.57',
        version: '#1 SMP',
        kernelVersion: '1_1.26.0',
        want: parts('minikube', '5.10.57', '1_1.26.0'),
      },
      { targetId: 'talos', release: '6.6.33-talos', version: '#1 SMP', kernelVersion: '1', want: /kernelversion is "1_<VERSION_ID>"/ },
    ]);
  });

  test('flatcar_test.go: the release is os-release VERSION_ID, which a descriptor lacks: refused', () => {
    check(falcoctlParts, [
      {
        targetId: 'flatcar',
        release: '6.1.62-flatcar',
        version: '#1 SMP PREEMPT_DYNAMIC Mon Nov 20 22:57:52 -00 2023',
        want: /VERSION_ID/,
      },
    ]);
    check(legacyScriptParts, [{ targetId: 'flatcar', release: '6.1.62-flatcar', version: '#1 SMP', want: /VERSION_ID/ }]);
  });

  test('driverkit parses the release first: one it cannot parse is refused, not named ""', () => {
    check(falcoctlParts, [
      { targetId: 'raspbian', release: '6.1.21-v8+', version: '#1642 SMP PREEMPT', want: /driverkit cannot parse the release/ },
    ]);
    // The script takes uname -r as it is.
    check(legacyScriptParts, [
      { targetId: 'raspbian', release: '6.1.21-v8+', version: '#1642 SMP PREEMPT', want: parts('raspbian', '6.1.21-v8+', '1642') },
    ]);
  });
});

describe('falco-driver-loader script (falco 0.36.2, naming as 0.35.1)', () => {
  test('its own examples and the cases where it differs from falcoctl', () => {
    check(legacyScriptParts, [
      // get_target_id's Debian comment: "5.10.0-0.deb10.22-rt-amd64" with "5.10.178-3" is "5.10.178-3-rt-amd64".
      {
        targetId: 'debian',
        release: '5.10.0-0.deb10.22-rt-amd64',
        version: '#1 SMP PREEMPT_DYNAMIC Debian 5.10.178-3',
        want: parts('debian', '5.10.178-3-rt-amd64', '1'),
      },
      // The usage text's DRIVER_KERNEL_RELEASE / DRIVER_KERNEL_VERSION example.
      {
        targetId: 'debian',
        release: '6.1.0-10-cloud-amd64',
        version: '#1 SMP PREEMPT_DYNAMIC Debian 6.1.38-2 (2023-07-27)',
        want: parts('debian', '6.1.38-2-cloud-amd64', '1'),
      },
      {
        targetId: 'debian',
        release: '6.1.0-47-amd64',
        version: '#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3',
        want: parts('debian', '6.1.170-3-amd64', '1'),
      },
      { targetId: 'debian', release: '5.10.0-0', version: '#39 SMP PREEMPT_DYNAMIC', want: parts('debian', '5.10.0-0', '39') },
      {
        targetId: 'debian',
        release: '5.10.0-23-amd64',
        version: '#2 SMP Debian 5.10.179-1',
        want: parts('debian', '5.10.179-1-amd64', '2'),
        note: 'falcoctl: 1',
      },
      // get_target_id's Ubuntu comments: 5.0.0-1028-aws-5.0 and 5.15.0-1009-aws are ubuntu-aws; #26~22.04.1-Ubuntu keeps 26~22.04.1.
      {
        targetId: 'ubuntu',
        release: '5.0.0-1028-aws-5.0',
        version: '#26~22.04.1-Ubuntu SMP Mon Apr 24 01:58:15 UTC 2023',
        want: parts('ubuntu-aws', '5.0.0-1028-aws-5.0', '26~22.04.1'),
      },
      {
        targetId: 'ubuntu-aws',
        release: '5.15.0-1009-aws',
        version: '#11-Ubuntu SMP Thu May 26 19:39:49 UTC 2022',
        want: parts('ubuntu-aws', '5.15.0-1009-aws', '11'),
      },
      {
        targetId: 'ubuntu',
        release: '6.5.0-9-lowlatency',
        version: '#9.1',
        want: parts('ubuntu-lowlatency', '6.5.0-9-lowlatency', '9'),
        note: 'falcoctl: 9.1',
      },
      {
        targetId: 'ubuntu',
        release: '6.5.0-1008-aws',
        version: '#8~22.04.1',
        want: parts('ubuntu-aws', '6.5.0-1008-aws', '8'),
        note: 'no "-Ubuntu ": falcoctl 8~22.04.1',
      },
      {
        targetId: 'photon',
        release: '4.19.283-3.ph3',
        version: '#1-photon SMP Fri Jun 16 02:25:27 UTC 2023',
        want: parts('photon', '4.19.283-3.ph3', '1'),
      },
      { targetId: 'arch', release: '6.7.2-arch1-2', version: '#231asfa #rf3f', want: parts('arch', '6.7.2-arch1-2', '231') },
      { targetId: 'cos', release: '6.1.100+', version: '#1 SMP Thu Aug 15 09:13:24 UTC 2024', want: parts('cos', '6.1.100+', '1') },
      {
        targetId: 'amazonlinux2',
        release: '5.10.219-208.866.amzn2.x86_64',
        version: '#1 SMP',
        want: parts('amazonlinux2', '5.10.219-208.866.amzn2.x86_64', '1'),
      },
      {
        targetId: 'bottlerocket',
        release: '5.15.160',
        version: '#1 SMP',
        kernelVersion: '1_1.11.0-aws',
        want: parts('bottlerocket', '5.15.160', '1_1.11.0-aws'),
      },
      { targetId: 'arch', release: '6.7.2-arch1-2', version: 'SMP PREEMPT_DYNAMIC', want: /uname -v has no "#<number>"/ },
    ]);
  });
});

describe('file names and request paths', () => {
  const debian: LoaderKernel = kernel({
    targetId: 'debian',
    release: '6.1.0-47-amd64',
    version: '#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3',
  });

  test('<driver>_<target>_<release>_<kernelversion>.<o|ko>', () => {
    assert.equal(artifactFileName('falco', 'bpf', debian), 'falco_debian_6.1.170-3-amd64_1.o');
    assert.equal(artifactFileName('falco', 'kmod', debian), 'falco_debian_6.1.170-3-amd64_1.ko');
    assert.equal(legacyArtifactFileName('falco', 'bpf', debian), 'falco_debian_6.1.170-3-amd64_1.o');
    assert.equal(
      artifactFileName('example', 'kmod', { ...debian, targetId: 'ubuntu-generic', release: '6.5.0-9-lowlatency', version: '#9.1' }),
      'example_ubuntu-lowlatency_6.5.0-9-lowlatency_9.1.ko',
    );
    assert.equal(
      legacyArtifactFileName('example', 'kmod', { ...debian, targetId: 'ubuntu-generic', release: '6.5.0-9-lowlatency', version: '#9.1' }),
      'example_ubuntu-lowlatency_6.5.0-9-lowlatency_9.ko',
    );
    assert.throws(() => artifactFileName('../falco', 'bpf', debian), /driver name/);
  });

  test('falcoctl escapes the driver version only; the script escapes every +', () => {
    const backport = { ...debian, release: '6.12.117+deb12-amd64', version: '#1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1~deb12u1' };
    assert.deepEqual(loaderRequestPaths('9.1.0+driver', backport, 'falco', 'bpf'), {
      falcoctl: '9.1.0%2Bdriver/x86_64/falco_debian_6.12.117-1-amd64_1.o',
      legacyScript: '9.1.0%2Bdriver/x86_64/falco_debian_6.12.117-1-amd64_1.o',
    });
    const cos = kernel({ targetId: 'cos', release: '6.1.100+', version: '#1 SMP Thu Aug 15 09:13:24 UTC 2024' }, 'aarch64');
    assert.deepEqual(loaderRequestPaths('9.1.0+driver', cos, 'falco', 'kmod'), {
      falcoctl: '9.1.0%2Bdriver/aarch64/falco_cos_6.1.100+_1.ko',
      legacyScript: '9.1.0%2Bdriver/aarch64/falco_cos_6.1.100%2B_1.ko',
    });
    const hwe = kernel({ targetId: 'ubuntu-generic', release: '6.2.0-26-generic', version: '#26~22.04.1-Ubuntu SMP' });
    assert.deepEqual(loaderRequestPaths('7.0.0+driver', hwe, 'falco', 'bpf'), {
      falcoctl: '7.0.0%2Bdriver/x86_64/falco_ubuntu-generic_6.2.0-26-generic_26~22.04.1.o',
      legacyScript: '7.0.0%2Bdriver/x86_64/falco_ubuntu-generic_6.2.0-26-generic_26~22.04.1.o',
    });
    assert.throws(() => loaderRequestPaths('../9.1.0', debian, 'falco', 'bpf'), /driver version/);
    assert.throws(() => loaderRequestPaths('9.1.0+driver', { ...debian, machine: 'arm64' as never }, 'falco', 'bpf'), /machine/);
  });
});

interface LockKernel extends LoaderKernel {
  name: string;
}

async function lockfileKernels(): Promise<{ file: string; kernel: LockKernel }[]> {
  const dir = join(PROJECT_ROOT, 'kernels');
  const out: { file: string; kernel: LockKernel }[] = [];
  for (const file of (await readdir(dir)).filter((f) => f.endsWith('.lock.yaml')).sort()) {
    const lock = parse(await readFile(join(dir, file), 'utf8')) as { kernels: LockKernel[] };
    for (const k of lock.kernels) out.push({ file, kernel: k });
  }
  return out;
}

describe('every kernel of kernels/*.lock.yaml', () => {
  test('is named as the loaders ask for it; Debian from the package version in uname -v', async () => {
    const all = await lockfileKernels();
    assert.ok(all.length > 0, 'the repository has lockfile kernels');
    let debianKernels = 0;
    for (const { file, kernel: k } of all) {
      const label = `${file}: ${k.name} (${k.machine})`;
      const file_ = artifactFileName('falco', 'bpf', k);
      if (k.targetId === 'debian') {
        debianKernels++;
        // Stated from the lockfile's own fields: the x.y.z-n in uname -v, and the flavour.
        const packageVersion = /(\d+\.\d+\.\d+-\d+)/.exec(k.version)?.[1];
        assert.ok(packageVersion, `${label}: uname -v names the package version`);
        assert.ok(k.flavour && k.release.endsWith(`-${k.flavour}`), `${label}: the release ends with the flavour`);
        assert.equal(file_, `falco_debian_${packageVersion}-${k.flavour}_1.o`, label);
        assert.notEqual(file_, `falco_debian_${k.release}_1.o`, `${label}: not uname -r`);
      } else {
        assert.equal(file_, `falco_${k.targetId}_${k.release}_${k.kernelVersion}.o`, label);
      }
      // The recorded target id and kernelversion are what falcoctl derives.
      const p = falcoctlParts(k);
      assert.equal(p.targetId, k.targetId, `${label}: target id`);
      assert.equal(p.kernelVersion, k.kernelVersion, `${label}: kernelversion`);
      // Both loaders ask for the same file for every shipped kernel, module or probe.
      assert.equal(legacyArtifactFileName('falco', 'bpf', k), file_, `${label}: the legacy script`);
      assert.equal(artifactFileName('falco', 'kmod', k), file_.replace(/\.o$/, '.ko'), `${label}: kmod`);
      assert.equal(loaderRequestPaths('9.1.0+driver', k, 'falco', 'bpf').falcoctl, `9.1.0%2Bdriver/${k.machine}/${file_}`, label);
    }
    const byRelease = new Map(all.map(({ kernel: k }) => [k.release, k]));
    const known: [string, string][] = [
      ['6.1.0-47-amd64', 'falco_debian_6.1.170-3-amd64_1.o'],
      ['6.1.0-47-cloud-amd64', 'falco_debian_6.1.170-3-cloud-amd64_1.o'],
      ['6.1.0-47-rt-amd64', 'falco_debian_6.1.170-3-rt-amd64_1.o'],
      ['6.12.117+deb12-amd64', 'falco_debian_6.12.117-1-amd64_1.o'],
    ];
    for (const [release, name] of known) {
      const k = byRelease.get(release);
      if (k) assert.equal(artifactFileName('falco', 'bpf', k), name, release);
    }
    if (all.some(({ file }) => file === 'debian12.lock.yaml'))
      assert.ok(debianKernels > 0 && known.every(([r]) => byRelease.has(r)), 'debian12 kernels checked by name');
  });

  test("the test loader's shell rule (builder/test-loader/falco-driver-loader) names them the same", async () => {
    const script = await readFile(join(PROJECT_ROOT, 'builder', 'test-loader', 'falco-driver-loader'), 'utf8');
    const block = /^# -- probe name: begin.*?^# -- probe name: end[^\n]*$/ms.exec(script)?.[0];
    assert.ok(block, 'the script marks its naming functions');
    const dir = await mkdtemp(join(tmpdir(), 'loader-names-'));
    try {
      const cases: LoaderKernel[] = [
        ...(await lockfileKernels()).map(({ kernel: k }) => k),
        kernel({ targetId: 'debian', release: '5.10.0-0.deb10.22-rt-amd64', version: '#1 SMP PREEMPT_DYNAMIC Debian 5.10.178-3' }),
        kernel({ targetId: 'debian', release: '6.12.43+deb13-cloud-arm64', version: '#1 SMP PREEMPT_DYNAMIC Debian 6.12.43-1' }),
        kernel({ targetId: 'debian', release: '5.10.0-0', version: '#39 SMP PREEMPT_DYNAMIC' }),
        kernel({ targetId: 'rocky', release: '5.14.0-503.14.1.el9_5.x86_64', version: '#1 SMP PREEMPT_DYNAMIC' }),
      ];
      const osRelease = join(dir, 'os-release');
      for (const k of cases) {
        await writeFile(osRelease, `NAME="Test"\nID="${k.targetId}"\n`);
        const program: string = `set -eu\nos_release="$T_OS_RELEASE"\n${block}\nuname() { case "$1" in -r) printf '%s\\n' "$T_R";; -v) printf '%s\\n' "$T_V";; esac; }\nprobe_name\n`;
        const env = {
          PATH: process.env['PATH'] ?? '/usr/bin:/bin',
          DRIVER_NAME: 'falco',
          T_OS_RELEASE: osRelease,
          T_R: k.release,
          T_V: k.version,
        };
        const { stdout } = await execFileAsync('sh', ['-c', program], { env, encoding: 'utf8' });
        assert.equal(stdout.trim(), legacyArtifactFileName('falco', 'bpf', k), `${k.release} ${k.version}`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
