import { resolve } from 'node:path';
import { FalcoProbesError } from '../../util/errors.js';
import { generateKeyFiles } from '../../repository/signature.js';
import type { Command } from '../context.js';
import { OK } from '../outcome.js';

export const command: Command = {
  name: 'keygen',
  summary: 'make an ed25519 key pair to sign a published repository',
  usage: `usage: falco-probes keygen --out PREFIX

Writes PREFIX.key (the private key, PKCS#8 PEM, mode 0600) and PREFIX.pub (the
public key, SPKI PEM) and prints the key id (sha256 of the public key). Refuses
to replace existing files.

Keep PREFIX.key secret (a CI secret); give PREFIX.pub to every client:
  falco-probes publish --to DIR --key PREFIX.key
  falco-probes verify --repository URL --public-key PREFIX.pub

options:
  --out PREFIX      where to write the pair (required)
`,
  options: { out: { type: 'string' } },
  allowPositionals: false,
  async run({ values }, ctx) {
    const out = values['out'];
    if (typeof out !== 'string' || !out)
      throw new FalcoProbesError('usage', 'keygen needs --out PREFIX', { hint: 'see: falco-probes keygen --help' });
    const { privateFile, publicFile, keyId } = await generateKeyFiles(resolve(process.cwd(), out));
    ctx.logger.info(`wrote ${privateFile} (private, mode 0600) and ${publicFile}`);
    ctx.stdout.write(`${keyId}\n`);
    return OK;
  },
};
