import { recordPublished } from '../../repository/published-record.js';
import { readIndex } from '../../repository/index-file.js';
import { join, resolve } from 'node:path';
import { FalcoProbesError } from '../../util/errors.js';
import { publishRepository } from '../../repository/publish.js';
import { loadPrivateKey } from '../../repository/signature.js';
import { DEFAULT_REPOSITORY_DIR } from '../../run/paths.js';
import type { Command } from '../context.js';
import { OK } from '../outcome.js';

function seconds(value: unknown, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || n > 86_400)
    throw new FalcoProbesError('usage', `${flag} expects seconds from 0 to 86400, got ${JSON.stringify(value)}`);
  return n;
}

export const command: Command = {
  name: 'publish',
  summary: 'copy new probes from the local repository into a published directory, then index and sign it',
  usage: `usage: falco-probes publish --to DIR [--from DIR] [--key FILE] [options]

Adds the probes of the local repository (--from, default repository/) to DIR,
which a static host, a bucket sync or a Pages site then serves. A file already
published is never replaced with different bytes: such a conflict fails, names
the file, and changes nothing. Each copied file's sha256 is checked against the
source index before anything is renamed into place; index.json, SHA256SUMS and
the signature (index.json.sig) are written last, atomically, and only when
their bytes change, so publishing twice copies and changes nothing.

Publishing is additive: merging the repositories of several CI shards is
publishing each of them into the same DIR. Another publish (or build) into DIR
holds a lock; this one waits up to --lock-wait seconds, then fails cleanly.

For Falco's older loaders, which fetch <version>/<file> without an arch folder,
DIR also gets a copy of each x86_64 probe there (listed in SHA256SUMS, not in
the index); --no-legacy-layout turns that off.

options:
  --to DIR              the published repository (created when missing)
  --from DIR            the local repository to publish (default: repository/ under --root)
  --key FILE            ed25519 private key (falco-probes keygen) to sign index.json and SHA256SUMS;
                        required when DIR is already signed
  --no-legacy-layout    do not keep <version>/<file> copies of x86_64 probes
  --lock-wait SECONDS   how long to wait for another publisher (default 60; 0: fail at once)
  --refuse VERDICT      hold back artifacts whose recorded load test (load-test) gave VERDICT:
                        refused, no-boot, timeout or unknown (repeatable; comma lists too). They
                        stay out of DIR and are listed; what DIR already holds is never removed
  --record FILE         also add every artifact of DIR's index to FILE (kernels/published.json: the
                        checked-in record generate takes Please's hashes from); commit it
  --json                print the report as JSON
`,
  options: {
    to: { type: 'string' },
    from: { type: 'string' },
    key: { type: 'string' },
    'no-legacy-layout': { type: 'boolean' },
    'lock-wait': { type: 'string' },
    json: { type: 'boolean' },
    record: { type: 'string' },
    refuse: { type: 'string', multiple: true },
  },
  allowPositionals: false,
  async run({ values }, ctx) {
    const to = values['to'];
    if (typeof to !== 'string' || !to)
      throw new FalcoProbesError('usage', 'publish needs --to DIR', { hint: 'see: falco-probes publish --help' });
    const from = typeof values['from'] === 'string' ? resolve(process.cwd(), values['from']) : join(ctx.root, DEFAULT_REPOSITORY_DIR);
    const lockWaitMs = seconds(values['lock-wait'], '--lock-wait', 60) * 1000;
    let signingKey;
    if (typeof values['key'] === 'string') {
      const loaded = await loadPrivateKey(resolve(process.cwd(), values['key']));
      if (loaded.groupOrWorldReadable) ctx.logger.warn(`${values['key']}: the private key is readable by other users (chmod 600 it)`);
      signingKey = loaded.key;
    }
    const refuseVerdicts = ((values['refuse'] as string[] | undefined) ?? [])
      .flatMap((v) => v.split(','))
      .map((v) => v.trim())
      .filter(Boolean);
    for (const v of refuseVerdicts)
      if (!['refused', 'no-boot', 'timeout', 'unknown'].includes(v))
        throw new FalcoProbesError('usage', `--refuse expects refused, no-boot, timeout or unknown, got ${JSON.stringify(v)}`);
    const report = await publishRepository({
      refuseVerdicts,
      from,
      to: resolve(process.cwd(), to),
      ...(signingKey ? { signingKey } : {}),
      legacyLayout: values['no-legacy-layout'] !== true,
      lockWaitMs,
      logger: ctx.logger,
    });
    if (typeof values['record'] === 'string') {
      const recordFile = resolve(process.cwd(), values['record']);
      const added = await recordPublished(recordFile, await readIndex(resolve(process.cwd(), to)));
      ctx.logger.info(`${recordFile}: ${added} artifact(s) recorded`);
    }
    if (values['json'] === true) {
      ctx.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    } else {
      for (const f of report.copied) ctx.stdout.write(`copied ${f}\n`);
      for (const f of report.adopted) ctx.stdout.write(`adopted ${f}\n`);
      for (const f of report.rekeyed) ctx.stdout.write(`rekeyed ${f}\n`);
      for (const h of report.held ?? []) ctx.stdout.write(`held back ${h.file} (${h.verdict})\n`);
      ctx.logger.info(
        `published into ${resolve(process.cwd(), to)}: ${report.copied.length} file(s) copied, ${report.unchanged} already there` +
          (report.written.length ? `; wrote ${report.written.join(', ')}` : '; index unchanged') +
          (report.signed ? ' (signed)' : ''),
      );
    }
    return OK;
  },
};
