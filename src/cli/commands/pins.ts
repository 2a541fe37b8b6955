import { join } from 'node:path';
import { FalcoProbesError } from '../../util/errors.js';
import { writeFileIfChanged } from '../../util/fs.js';
import { pinsOf, renderJsonPins, renderPleasePins } from '../../repository/pins.js';
import { openRepository, parseTimeoutSeconds, requireIndex } from '../../repository/remote.js';
import { INDEX_FILE } from '../../repository/types.js';
import { DEFAULT_REPOSITORY_DIR } from '../../run/paths.js';
import type { Command } from '../context.js';
import { OK } from '../outcome.js';

export const command: Command = {
  name: 'pins',
  summary: 'print a Please remote_file (or a JSON entry) per published probe, with its URL and sha256',
  usage: `usage: falco-probes pins --format please|json (or --json) [--repository URL|DIR] [--base-url URL] [--out FILE]

For another project (consumer rules): one Please remote_file per published probe, with
the URL clients download it from and hashes = ["<sha256>"], so a download that
differs from what was published fails the consumer's build. --format json gives
the same list as plain JSON. Names follow Please's target name rules; a "+" in a
URL is written %2B.

  falco-probes pins --format please --repository https://probes.example.org > third_party/probes/BUILD

options:
  --format please|json  output form (required, or --json)
  --json                the same as --format json
  --repository URL|DIR  where to read index.json (default: repository/ under --root)
  --base-url URL        the URL clients download from (default: --repository when it is a URL;
                        required when reading a directory)
  --out FILE            write FILE (only when its bytes change) instead of standard output
  --timeout SECONDS     HTTP: give up on a request after this long without data (default 30)
`,
  options: {
    format: { type: 'string' },
    json: { type: 'boolean' },
    repository: { type: 'string' },
    'base-url': { type: 'string' },
    out: { type: 'string' },
    timeout: { type: 'string' },
  },
  allowPositionals: false,
  async run({ values }, ctx) {
    if (values['json'] === true && values['format'] !== undefined && values['format'] !== 'json')
      throw new FalcoProbesError('usage', `--json and --format ${String(values['format'])} disagree; give one`);
    const format = values['format'] ?? (values['json'] === true ? 'json' : undefined);
    if (format !== 'please' && format !== 'json')
      throw new FalcoProbesError(
        'usage',
        `pins needs --format please or --format json${format === undefined ? '' : `, got ${JSON.stringify(format)}`}`,
      );
    const location = typeof values['repository'] === 'string' ? values['repository'] : join(ctx.root, DEFAULT_REPOSITORY_DIR);
    const timeoutMs = parseTimeoutSeconds(values['timeout']);
    const source = openRepository(location, process.cwd(), { ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
    const baseUrl = typeof values['base-url'] === 'string' ? values['base-url'] : source.kind === 'http' ? source.location : undefined;
    if (baseUrl === undefined)
      throw new FalcoProbesError(
        'usage',
        'pins from a directory needs --base-url URL: the address clients download the published repository from',
      );
    const { index } = await requireIndex(source);
    const pins = pinsOf(index, baseUrl, source.where(INDEX_FILE));
    const text = format === 'please' ? renderPleasePins(pins, baseUrl) : renderJsonPins(pins, baseUrl);
    if (typeof values['out'] === 'string') {
      const wrote = await writeFileIfChanged(values['out'], text);
      ctx.logger.info(`${values['out']}: ${pins.length} probe(s)${wrote ? '' : ', unchanged'}`);
    } else {
      ctx.stdout.write(text);
    }
    return OK;
  },
};
