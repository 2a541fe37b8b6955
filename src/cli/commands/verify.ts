import { join, resolve } from 'node:path';
import { openRepository, parseTimeoutSeconds } from '../../repository/remote.js';
import { loadPublicKey } from '../../repository/signature.js';
import { verifyRepository } from '../../repository/verify.js';
import { DEFAULT_REPOSITORY_DIR } from '../../run/paths.js';
import type { Command } from '../context.js';
import { NOT_OK, OK } from '../outcome.js';

export const command: Command = {
  name: 'verify',
  summary: "check a repository: its signature and every file's sha256 and size against the index",
  usage: `usage: falco-probes verify [--repository DIR|URL] [--public-key FILE] [options]

Checks, as a careful client would: the signature (index.json.sig) over
index.json and SHA256SUMS with the public key given; that SHA256SUMS agrees
with the index; and that every listed file exists with the size and sha256 the
index says. Every problem is printed with the file (path or URL) it concerns;
the exit status is 1 when there is any; a malformed index is 2. Probe files
(*.o, *.ko) in a directory that the index does not list are warnings.

options:
  --repository DIR|URL  the repository (default: repository/ under --root)
  --public-key FILE     ed25519 public key (PREFIX.pub): the signature must verify with it
  --timeout SECONDS     HTTP: give up on a request after this long without data (default 30)
  --json                print the report as JSON
`,
  options: {
    repository: { type: 'string' },
    'public-key': { type: 'string' },
    timeout: { type: 'string' },
    json: { type: 'boolean' },
  },
  allowPositionals: false,
  async run({ values }, ctx) {
    const location = typeof values['repository'] === 'string' ? values['repository'] : join(ctx.root, DEFAULT_REPOSITORY_DIR);
    const timeoutMs = parseTimeoutSeconds(values['timeout']);
    const source = openRepository(location, process.cwd(), { ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
    const publicKey =
      typeof values['public-key'] === 'string' ? await loadPublicKey(resolve(process.cwd(), values['public-key'])) : undefined;
    const report = await verifyRepository(source, publicKey ? { publicKey } : {});
    if (values['json'] === true) ctx.stdout.write(`${JSON.stringify({ repository: source.location, ...report }, null, 2)}\n`);
    for (const w of report.warnings) ctx.logger.warn(w);
    for (const p of report.problems) ctx.logger.error(p);
    const summary = `${source.location}: ${report.filesChecked} file(s), ${report.bytesChecked} bytes checked; signature ${report.signature}`;
    if (report.problems.length) {
      ctx.logger.error(`${summary}; ${report.problems.length} problem(s)`);
      return NOT_OK;
    }
    ctx.logger.info(`${summary}; OK`);
    return OK;
  },
};
