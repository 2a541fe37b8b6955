import { test } from 'node:test';
import assert from 'node:assert/strict';
import { access, copyFile, mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PROJECT_ROOT, runCli, withTempDir } from './helpers/cli.js';
import { startMirror } from './helpers/server.js';
import { FALCO_LIBS, haveFalcoLibs } from './helpers/require.js';
import { driversPathFor, loadDrivers } from '../src/config/drivers.js';
import { resolveDriverIdentities } from '../src/graph/driver-identity.js';
import { extractPackage } from '../src/fetch/extract.js';
import { createDriverSources } from '../src/fetch/driver-source.js';

// The repository's real pins for Falco's drivers (kernels/drivers.yaml:
// falco 10.2.0+driver and 9.1.0+driver, tarballs pinned by tree hash)
// against the real tarballs of those tags, served on loopback through
// --driver-mirror (GitHub is not reachable from here). The tarballs are the
// shared copies made with `git archive` (../shared/falco-libs, see its
// README); without that folder the test skips and says why (test/helpers/require.ts).

const TARBALLS: Record<string, string> = { '10.2.0+driver': 'libs-10.2.0-driver.tar.gz', '9.1.0+driver': 'libs-9.1.0-driver.tar.gz' };

test("Falco's driver tarballs match the tree pins of kernels/drivers.yaml, through pin --driver-mirror and through the runner's sources", {
  timeout: 300_000,
}, async (t) => {
  if (!haveFalcoLibs(t, Object.values(TARBALLS))) return;
  await withTempDir(async (dir) => {
    const files: Record<string, Buffer> = {};
    for (const [version, file] of Object.entries(TARBALLS)) files[`tags/${version}.tar.gz`] = await readFile(join(FALCO_LIBS, file));
    const mirror = await startMirror({ files });
    try {
      // A project holding exactly the repository's drivers.yaml.
      const root = join(dir, 'project');
      await mkdir(join(root, 'kernels'), { recursive: true });
      await copyFile(driversPathFor(join(PROJECT_ROOT, 'kernels')), driversPathFor(join(root, 'kernels')));
      const original = await readFile(driversPathFor(join(root, 'kernels')), 'utf8');
      const loaded = await loadDrivers(driversPathFor(join(root, 'kernels')));
      const falco = loaded.drivers.filter((d) => d.name === 'falco');
      assert.deepEqual(falco.map((d) => d.version).sort(), Object.keys(TARBALLS).sort());
      // Both URLs share one folder (GitHub's tags archive); the mirror serves the same file names under tags/.
      const urls = falco.map((d) => ('url' in d.source ? d.source.url : assert.fail('a tarball source')));
      const prefix = urls[0]!.slice(0, urls[0]!.lastIndexOf('/') + 1);
      assert.ok(urls.every((u) => u.startsWith(prefix)));
      const rewrite = `${prefix}=${mirror.url}/tags/`;
      const cache = join(dir, 'cache');

      // `pin` recomputes each tree hash from the served tarball (the rewrite given as Make and Please
      // recipes give it, in $FALCO_PROBES_DRIVER_MIRROR): unchanged, the file untouched.
      const pinned = await runCli(['pin', 'falco', '--cache', cache], {
        cwd: root,
        timeoutMs: 240_000,
        env: { FALCO_PROBES_DRIVER_MIRROR: ` https://unrelated.invalid/=http://127.0.0.1:9/ ; ${rewrite}` },
      });
      assert.equal(pinned.code, 0, pinned.stderr);
      for (const d of falco) {
        const tree = 'url' in d.source ? d.source.tree! : '';
        assert.match(
          pinned.stdout,
          new RegExp(
            `^falco ${d.version.replace(/[.+]/g, '\\$&')}: tree ${tree} \\(unchanged, unpacked tree, from ${mirror.url}/tags/`,
            'm',
          ),
        );
      }
      assert.equal(await readFile(driversPathFor(join(root, 'kernels')), 'utf8'), original);
      assert.deepEqual(
        (await readdir(join(cache, 'drivers'))).sort(),
        falco.map((d) => `tree-${'url' in d.source ? d.source.tree : ''}`).sort(),
        'the verified trees are kept by their hashes, nothing else',
      );
      assert.deepEqual(
        mirror.requests.sort(),
        Object.keys(TARBALLS)
          .map((v) => `tags/${v}.tar.gz`)
          .sort(),
      );

      // The runner's sources with the same rewrite (--driver-mirror's form) in a fresh cache:
      // each tree is verified against its pin; its folders are there.
      const { resolved } = await resolveDriverIdentities(loaded, root);
      const sources = createDriverSources({
        projectRoot: root,
        cacheDir: join(dir, 'cache2'),
        urlRewrites: [{ prefix, replacement: `${mirror.url}/tags/` }],
        extract: async (file, dest, o) => {
          await extractPackage(file, 'tgz', dest, { strip: o.strip });
        },
      });
      for (const d of resolved.filter((r) => r.name === 'falco')) {
        const tree = await sources(d);
        assert.equal(tree, join(dir, 'cache2', 'drivers', `tree-${d.sourceSha256}`));
        await access(join(tree, d.kmodDir!, 'main.c'));
        if (d.bpfDir !== undefined) await access(join(tree, d.bpfDir, 'Makefile'));
      }
    } finally {
      await mirror.close();
    }
  });
});
