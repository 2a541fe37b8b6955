import { readFile } from 'node:fs/promises';
import { relative } from 'node:path';
import { FalcoProbesError } from '../../util/errors.js';
import { writeFileAtomic } from '../../util/fs.js';
import { driversPathFor, loadDrivers, parseDriversText, setDriverSha256 } from '../../config/drivers.js';
import { downloadDriverTarball } from '../../graph/pin-driver.js';
import type { Command } from '../context.js';

export const command: Command = {
  name: 'pin',
  summary: "download a driver's source tarball and write its sha256 into kernels/drivers.yaml",
  usage: `usage: falco-probes pin [DRIVER] [--update]

Downloads the source tarball of DRIVER (every driver with a source.url when no
DRIVER is named), checks that it is a tarball holding the driver's bpfDir, and
writes its sha256 into kernels/drivers.yaml, keeping the file's comments and
layout. A driver without a sha256 has no key, so it gets no targets and
\`build\` refuses it: run this on a machine that can download it.

An existing sha256 that differs from the download is refused (the tarball
changed upstream, or the URL now points elsewhere) unless --update is given.

options:
  --update    replace an existing sha256 that differs from the download
`,
  options: { update: { type: 'boolean' } },
  allowPositionals: true,
  async run({ values, positionals }, ctx) {
    if (positionals.length > 1) throw new FalcoProbesError('usage', 'pin takes at most one DRIVER; see falco-probes pin --help');
    const update = values['update'] === true;
    const file = driversPathFor(ctx.kernelsDir);
    const shown = relative(ctx.root, file) || file;
    const loaded = await loadDrivers(file);
    const wanted = positionals[0];
    const chosen = wanted === undefined ? loaded.drivers.filter((d) => 'url' in d.source) : loaded.drivers.filter((d) => d.name === wanted);
    if (wanted !== undefined && chosen.length === 0)
      throw new FalcoProbesError('usage', `no driver named "${wanted}" in ${shown}`, { hint: `drivers: ${loaded.drivers.map((d) => d.name).join(', ') || 'none'}` });
    if (chosen.length === 0) {
      ctx.stdout.write(`no driver in ${shown} has a source.url; nothing to pin\n`);
      return 0;
    }

    // Download and check everything first: the file is written once, or not at all.
    let text = await readFile(file, 'utf8');
    let changes = 0;
    for (const driver of chosen) {
      if (!('url' in driver.source))
        throw new FalcoProbesError('usage', `driver ${driver.name} has a local source (${driver.source.path}); its identity is its tree hash and there is nothing to pin`);
      ctx.logger.info(`${driver.name}: downloading ${driver.source.url}`);
      const got = await downloadDriverTarball(driver);
      const pinned = driver.source.sha256;
      if (pinned === got.sha256) {
        ctx.stdout.write(`${driver.name}: sha256 ${got.sha256} (unchanged, ${got.size} bytes)\n`);
        continue;
      }
      if (pinned !== undefined && !update)
        throw new FalcoProbesError('checksum', `driver ${driver.name}: the download's sha256 is ${got.sha256}, but ${shown} pins ${pinned}; not changing it`, {
          location: loaded.where(['drivers', loaded.drivers.indexOf(driver), 'source', 'sha256']),
          hint: 'the tarball changed upstream or the URL points elsewhere; if the new bytes are right, run again with --update',
        });
      text = setDriverSha256(text, file, driver.name, got.sha256);
      changes++;
      ctx.stdout.write(`${driver.name}: sha256 ${got.sha256} (${pinned === undefined ? 'pinned' : `updated from ${pinned}`}, ${got.size} bytes, ${got.entries} entries)\n`);
    }
    if (changes) {
      parseDriversText(text, file); // the edited text must still be a valid pin file
      await writeFileAtomic(file, text);
      ctx.logger.info(`wrote ${shown}; run falco-probes generate`);
    }
    return 0;
  },
};
