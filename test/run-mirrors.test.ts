import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { writeFile, mkdir } from 'node:fs/promises';
import { withTempDir } from './helpers/cli.js';
import { loadSourceDefinition, type LoadedSourceDefinition } from '../src/config/source-definition.js';
import { createMemoryLogger } from '../src/util/log.js';
import { createMirrorTable } from '../src/run/mirrors.js';
import type { PackageRef } from '../src/config/types.js';
import type { Target } from '../src/graph/types.js';

// Which mirrors serve a package: its OS's definition, per repository name,
// unless --mirror overrides the name; a name the definition lacks is a
// config error that names the definition.

function definition(os: string, repos: Record<string, string[]>): string {
  return `id: ${os}\ntype: apt\ntargetId: ${os}\narchitectures: [x86_64]\nminimumKernel: "4.14"\nosRelease:\n  ID: ${os}\nrepositories:\n${Object.entries(
    repos,
  )
    .map(([name, mirrors]) => `  - name: ${name}\n    mirrors: [${mirrors.join(', ')}]\n    suite: stable\n`)
    .join(
      '',
    )}apt:\n  headers:\n    - flavour: amd64\n      pattern: '^linux-headers-(?<release>.*)$'\n  follow: []\n  unameVersion: '#1'\n  kernelVersion: '1'\n`;
}

function pkg(repository: string): PackageRef {
  return { name: 'linux-headers-x', version: '1', repository, path: 'pool/x.deb', sha256: '0'.repeat(64), size: 1 };
}

function target(os: string, packages: PackageRef[]): Target {
  return { os, kernel: { packages } } as unknown as Target;
}

test('mirrors per OS and repository name; --mirror overrides by name; unknown names are reported', async () => {
  await withTempDir(async (dir) => {
    await mkdir(join(dir, 'kernels'));
    const sources = new Map<string, LoadedSourceDefinition>();
    const oses: Record<string, Record<string, string[]>> = {
      alpha: { main: ['http://a1/x', 'http://a2/x'], security: ['http://as/x'] },
      beta: { main: ['http://b/x'] },
    };
    for (const [os, repos] of Object.entries(oses)) {
      await writeFile(join(dir, 'kernels', `${os}.yaml`), definition(os, repos));
      sources.set(os, await loadSourceDefinition(join(dir, 'kernels', `${os}.yaml`), dir));
    }
    const [alphaMain, alphaSec, betaMain, betaNone] = [pkg('main'), pkg('security'), pkg('main'), pkg('nowhere')];
    const targets = [target('alpha', [alphaMain, alphaSec]), target('beta', [betaMain, betaNone])];

    const plain = createMirrorTable(targets, sources, new Map());
    assert.deepEqual(plain.mirrorsFor(alphaMain), ['http://a1/x', 'http://a2/x']);
    assert.deepEqual(plain.mirrorsFor(alphaSec), ['http://as/x']);
    assert.deepEqual(plain.mirrorsFor(betaMain), ['http://b/x'], 'the same repository name in another OS has its own mirrors');
    assert.throws(
      () => plain.mirrorsFor(betaNone),
      (err: Error & { kind?: string; location?: { file?: string } }) => {
        assert.equal(err.kind, 'config');
        assert.match(err.message, /names repository "nowhere", which kernels\/beta\.yaml does not define/);
        assert.equal(err.location?.file, join(dir, 'kernels', 'beta.yaml'));
        return true;
      },
    );

    const logger = createMemoryLogger();
    const overridden = createMirrorTable(
      targets,
      sources,
      new Map([
        ['main', ['file:///srv/mirror']],
        ['typo', ['http://t/x']],
      ]),
      logger,
    );
    assert.deepEqual(overridden.mirrorsFor(alphaMain), ['file:///srv/mirror']);
    assert.deepEqual(overridden.mirrorsFor(betaMain), ['file:///srv/mirror']);
    assert.deepEqual(overridden.mirrorsFor(alphaSec), ['http://as/x']);
    assert.deepEqual(logger.lines, ['warning: --mirror typo: no source definition in this build has a repository named typo']);
  });
});
