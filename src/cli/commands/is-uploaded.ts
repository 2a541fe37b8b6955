import { join } from 'node:path';
import { FalcoProbesError } from '../../util/errors.js';
import { loadBuildGraph } from '../../graph/load.js';
import { openRepository, parseTimeoutSeconds } from '../../repository/remote.js';
import { INDEX_FILE } from '../../repository/types.js';
import { uploadState } from '../../repository/uploaded.js';
import { DEFAULT_REPOSITORY_DIR } from '../../run/paths.js';
import { selectTargets } from '../../run/select.js';
import type { Command } from '../context.js';
import { NOT_OK, OK, okIf } from '../outcome.js';

export const command: Command = {
  name: 'is-uploaded',
  summary: "exit 0 when a kernel's probe is published for its current key, 1 when not, 2 on error",
  usage: `usage: falco-probes is-uploaded OS KERNEL [--driver D] [--arch A] [--repository URL|DIR] [--json]

Computes the target's probe file and key from kernels/OS.lock.yaml and
kernels/drivers.yaml (no kernel package is downloaded) and looks them up in
the repository's index.json (nothing else is downloaded either).

The key is the truth: a probe published under the same file name but for
another key was built from other inputs (a changed lockfile entry, driver or
builder), so the answer is "not uploaded".

exit status: 0 published with this key; 1 not published (or another key; a
directory without index.json); 2 error (usage, unknown OS or kernel, network,
malformed index, an HTTP repository without index.json).

options:
  --driver D            the driver, when several apply to the kernel
  --arch A              the architecture, when the lockfile has the kernel for several
  --repository URL|DIR  where to look (default: repository/ under --root)
  --timeout SECONDS     HTTP: give up after this long without data (default 30)
  --json                print the answer as JSON: state (published, other-key or absent),
                        target, output, key, url, and sha256 or publishedKey (same exit status)
`,
  options: {
    driver: { type: 'string' },
    arch: { type: 'string' },
    repository: { type: 'string' },
    timeout: { type: 'string' },
    json: { type: 'boolean' },
  },
  allowPositionals: true,
  // This command's contract is its exit status: every failure is 2, never 1.
  answersByExitStatus: true,
  async run({ values, positionals }, ctx) {
    if (positionals.length !== 2)
      throw new FalcoProbesError('usage', 'is-uploaded takes OS and KERNEL', { hint: 'see: falco-probes is-uploaded --help' });
    const [os, kernel] = positionals as [string, string];
    const timeoutMs = parseTimeoutSeconds(values['timeout']);
    const location = typeof values['repository'] === 'string' ? values['repository'] : join(ctx.root, DEFAULT_REPOSITORY_DIR);
    const source = openRepository(location, process.cwd(), { ...(timeoutMs !== undefined ? { timeoutMs } : {}) });

    const graph = await loadBuildGraph(ctx.root);
    const labels = [
      ...(typeof values['driver'] === 'string' ? [`driver=${values['driver']}`] : []),
      ...(typeof values['arch'] === 'string' ? [`arch=${values['arch']}`] : []),
    ];
    if (/[/:]/.test(os) || /[/:]/.test(kernel))
      throw new FalcoProbesError('usage', `not an OS and a kernel name: ${JSON.stringify(os)} ${JSON.stringify(kernel)}`);
    const targets = selectTargets(graph.targets, { patterns: [`//probes/${os}:${kernel}`], labels, knownOs: graph.oses });
    if (targets.length === 0)
      throw new FalcoProbesError('usage', `no target for ${os} ${kernel}${labels.length ? ` with ${labels.join(', ')}` : ''}`, {
        hint: 'a driver may not support this kernel (see kernels/drivers.yaml), or is not pinned yet',
      });
    if (targets.length > 1)
      throw new FalcoProbesError('usage', `${os} ${kernel} has ${targets.length} targets; name one with --driver or --arch`, {
        details: targets.map((t) => `  ${t.label} (driver ${t.driver.name}, ${t.arch})`).join('\n'),
      });
    const target = targets[0]!;

    const loaded = await source.readIndex();
    if (!loaded && source.kind === 'http')
      throw new FalcoProbesError('network', 'not found: not a probe repository', {
        location: { url: source.where(INDEX_FILE) },
        hint: 'the URL should be the folder that holds index.json (the DRIVERS_REPO base)',
      });
    const state = loaded ? uploadState(loaded.index, target) : ({ state: 'absent' } as const);
    if (values['json'] === true) {
      const report = {
        state: state.state,
        target: target.label,
        output: target.output,
        key: target.key,
        url: source.where(target.output),
        ...(state.state === 'published' ? { sha256: state.entry.sha256 } : {}),
        ...(state.state === 'other-key' ? { publishedKey: state.entry.key } : {}),
      };
      ctx.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      return okIf(state.state === 'published');
    }
    switch (state.state) {
      case 'published':
        ctx.stdout.write(`published ${source.where(target.output)} (key ${target.key}, sha256 ${state.entry.sha256})\n`);
        return OK;
      case 'other-key':
        ctx.stdout.write(
          `not published: ${target.label}: ${target.output} is published for key ${state.entry.key}, the target's key is ${target.key} (its inputs changed)\n`,
        );
        return NOT_OK;
      case 'absent':
        ctx.stdout.write(`not published: ${target.label}: ${target.output} (key ${target.key}) is not in ${source.where(INDEX_FILE)}\n`);
        return NOT_OK;
    }
  },
};
