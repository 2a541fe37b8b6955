import { readFile, stat } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { FalcoProbesError } from '../../util/errors.js';
import { writeFileAtomic } from '../../util/fs.js';
import { driverLabel, driversPathFor, loadDrivers, parseDriversText, setDriverPin } from '../../config/drivers.js';
import { defaultCacheDir } from '../../fetch/cache.js';
import { extractPackage } from '../../fetch/extract.js';
import { downloadDriverTarball } from '../../fetch/pin-driver.js';
import type { DriverPin } from '../../graph/types.js';
import { unpackTarballTree } from '../../fetch/driver-source.js';
import { withInterrupts } from '../../run/interrupt.js';
import { driverMirrorOptions, driverMirrorUsage, parseDriverMirrors } from '../driver-source-option.js';
import type { Command } from '../context.js';
import { OK } from '../outcome.js';

export const command: Command = {
  name: 'pin',
  summary: "download a driver's source tarball and write its source hash (sha256 or tree hash) into kernels/drivers.yaml",
  usage: `usage: falco-probes pin [DRIVER [VERSION]] [--update] [--tree]

Downloads the source tarball of DRIVER (every driver with a source.url when no
DRIVER is named; every version of DRIVER unless VERSION is named) and writes its
source hash into kernels/drivers.yaml, keeping the file's comments and layout:
- source.tree (the tree hash of the unpacked content after \`strip\`, as a local
  directory's identity is computed) for a driver hashed by tree, or with --tree;
  the way to fix tarballs whose bytes are not promised to stay the same
  (GitHub's). The verified tree is kept in the cache, so a build needs no
  second download;
- source.sha256 (of the tarball's bytes) otherwise.
The tarball must hold the driver's folders (bpfDir, kmodDir) after \`strip\`.
A driver without a source hash has no key, so it gets no targets and \`build\` refuses
it: run this on a machine that can download it (or with --driver-mirror).
Drivers shipped in a package (source.deb) are fixed by the package's sha256
already, and local directories by their tree hash: nothing to do for them.

An existing source hash that differs from the download is refused (the tarball
changed upstream, or the URL now points elsewhere) unless --update is given.

options:
  --update               replace an existing source hash that differs
  --tree                 hash a driver that has no source hash by its tree rather than sha256
  --cache DIR            package cache (default: $XDG_CACHE_HOME/falco-probes/packages)
${driverMirrorUsage('  ', 25)}
`,
  options: { update: { type: 'boolean' }, tree: { type: 'boolean' }, cache: { type: 'string' }, ...driverMirrorOptions },
  allowPositionals: true,
  async run({ values, positionals }, ctx) {
    if (positionals.length > 2)
      throw new FalcoProbesError('usage', 'pin takes at most a DRIVER and a VERSION; see falco-probes pin --help');
    const update = values['update'] === true;
    const byTree = values['tree'] === true;
    const urlRewrites = parseDriverMirrors(values);
    const cacheDir = values['cache'] !== undefined ? resolve(String(values['cache'])) : defaultCacheDir();
    const file = driversPathFor(ctx.kernelsDir);
    const shown = relative(ctx.root, file) || file;
    const loaded = await loadDrivers(file);
    const [wanted, wantedVersion] = positionals;
    const chosen =
      wanted === undefined
        ? loaded.drivers.filter((d) => 'url' in d.source)
        : loaded.drivers.filter((d) => d.name === wanted && (wantedVersion === undefined || d.version === wantedVersion));
    if (wanted !== undefined && chosen.length === 0)
      throw new FalcoProbesError(
        'usage',
        `no driver named "${wanted}"${wantedVersion !== undefined ? ` with version ${wantedVersion}` : ''} in ${shown}`,
        {
          hint: `drivers: ${loaded.drivers.map(driverLabel).join(', ') || 'none'}`,
        },
      );
    if (chosen.length === 0) {
      ctx.stdout.write(`no driver in ${shown} has a source.url; nothing to pin\n`);
      return OK;
    }
    // Messages name the driver alone when its name is unique in the file.
    const nameOf = (d: DriverPin) => (loaded.drivers.filter((o) => o.name === d.name).length > 1 ? driverLabel(d) : d.name);

    return withInterrupts(ctx.logger, async (signal) => {
      // Download and check everything first: the file is written once, or not at all.
      let text = await readFile(file, 'utf8');
      let changes = 0;
      for (const driver of chosen) {
        const source = driver.source;
        const index = loaded.drivers.indexOf(driver);
        if ('path' in source)
          throw new FalcoProbesError(
            'usage',
            `driver ${nameOf(driver)} has a local source (${source.path}); its identity is its tree hash and there is nothing to pin`,
          );
        if ('deb' in source) {
          if (wanted === undefined) continue;
          throw new FalcoProbesError(
            'usage',
            `driver ${nameOf(driver)} comes from the package ${source.deb.name} ${source.deb.version}, pinned by its sha256 and size; there is nothing to pin`,
          );
        }
        const field: 'sha256' | 'tree' = source.tree !== undefined || (source.sha256 === undefined && byTree) ? 'tree' : 'sha256';
        ctx.logger.info(`${nameOf(driver)}: downloading ${source.url}`);
        let got: string;
        let note: string;
        if (field === 'sha256') {
          // The tarball must hold the driver's folder (pin-driver.ts checks bpfDir; a kmod-only driver has kmodDir).
          // --driver-mirror rewrites say where the bytes come from (each that applies, in order, as a build tries them).
          const dl = await downloadDriverTarball(
            { ...driver, bpfDir: driver.bpfDir ?? driver.kmodDir ?? '.' },
            { cacheDir, urlRewrites, signal },
          );
          got = dl.sha256;
          note = `${dl.size} bytes, ${dl.entries} entries, from ${dl.from}`;
        } else {
          const unpacked = await unpackTarballTree(driver, source.url, source.strip ?? 0, {
            projectRoot: ctx.root,
            cacheDir,
            urlRewrites,
            signal,
            extract: async (f, dest, opts) => {
              await extractPackage(f, 'tgz', dest, { strip: opts.strip, ...(opts.signal ? { signal: opts.signal } : {}) });
            },
          });
          for (const dir of [driver.bpfDir, driver.kmodDir])
            if (dir !== undefined && !(await stat(join(unpacked.dir, dir)).catch(() => undefined))?.isDirectory())
              throw new FalcoProbesError(
                'input',
                `driver ${nameOf(driver)}: the tarball has no ${dir}/ after dropping ${source.strip ?? 0} leading path component(s); not pinning it`,
                {
                  location: { url: unpacked.from },
                  hint: 'check the URL, `strip`, `bpfDir` and `kmodDir` in kernels/drivers.yaml',
                },
              );
          got = unpacked.tree;
          note = `unpacked tree, from ${unpacked.from}`;
        }
        const pinned = source[field];
        if (pinned === got) {
          ctx.stdout.write(`${nameOf(driver)}: ${field} ${got} (unchanged, ${note})\n`);
          continue;
        }
        if (pinned !== undefined && !update)
          throw new FalcoProbesError(
            'checksum',
            `driver ${nameOf(driver)}: the download's ${field === 'tree' ? 'tree hash' : 'sha256'} is ${got}, but ${shown} pins ${pinned}; not changing it`,
            {
              location: loaded.where(['drivers', index, 'source', field]),
              hint: 'the tarball changed upstream or the URL points elsewhere; if the new bytes are right, run again with --update',
            },
          );
        text = setDriverPin(text, file, { name: driver.name, version: driver.version }, field, got);
        changes++;
        ctx.stdout.write(`${nameOf(driver)}: ${field} ${got} (${pinned === undefined ? 'pinned' : `updated from ${pinned}`}, ${note})\n`);
      }
      if (changes) {
        parseDriversText(text, file); // the edited text must still be a valid pin file
        await writeFileAtomic(file, text);
        ctx.logger.info(`wrote ${shown}; run falco-probes generate`);
      }
      return OK;
    });
  },
};
