import { FalcoProbesError } from '../../util/errors.js';
import { loadSourceDefinitionById } from '../../config/source-definition.js';
import { resolveSource } from '../../resolve/index.js';
import { lockfilePathFor, readLockfile, compareKernels } from '../../lockfile/lockfile.js';
import { parseMirrorOverrides, parsePositiveInt, type Command } from '../context.js';
import { OK } from '../outcome.js';

export const command: Command = {
  name: 'list-kernels',
  summary: 'print one kernel name per line, from the lockfile or (--remote) the mirrors',
  usage: `usage: falco-probes list-kernels OS [--remote] [--mirror NAME=URL] [--long | --json]

Prints the kernels of OS, one name per line, in version order.

options:
  --remote              resolve from the mirrors instead of reading kernels/OS.lock.yaml (writes nothing)
  --mirror NAME=URL     with --remote: use URL for package archive NAME (repeatable)
  --long                also print machine, uname -v and Falco's kernelversion
  --json                print a JSON array instead: name, release, machine, version (uname -v),
                        kernelVersion and targetId of each kernel
  --timeout SECONDS     with --remote: give up on a request after this long without data (default 30)
`,
  options: {
    remote: { type: 'boolean' },
    mirror: { type: 'string', multiple: true },
    long: { type: 'boolean' },
    json: { type: 'boolean' },
    timeout: { type: 'string' },
  },
  async run({ values, positionals }, ctx) {
    if (positionals.length !== 1)
      throw new FalcoProbesError('usage', 'list-kernels takes exactly one OS; see falco-probes list-kernels --help');
    const os = positionals[0]!;
    const source = await loadSourceDefinitionById(os, ctx.kernelsDir, ctx.root);
    const kernels =
      values['remote'] === true
        ? (
            await resolveSource(source, {
              mirrorOverrides: parseMirrorOverrides(values['mirror']),
              http: values['timeout'] === undefined ? {} : { idleTimeoutMs: parsePositiveInt(values['timeout'], '--timeout', 30) * 1000 },
              logger: ctx.logger,
            })
          ).kernels
        : (await readLockfile(lockfilePathFor(ctx.kernelsDir, os))).kernels;
    const sorted = [...kernels].sort(compareKernels);
    if (values['json'] === true) {
      const rows = sorted.map((k) => ({
        name: k.name,
        release: k.release,
        machine: k.machine,
        version: k.version,
        kernelVersion: k.kernelVersion,
        targetId: k.targetId,
      }));
      ctx.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
      return OK;
    }
    const lines = sorted.map((k) => (values['long'] === true ? `${k.name}\t${k.machine}\t${k.kernelVersion}\t${k.version}` : k.name));
    ctx.stdout.write(lines.length ? `${lines.join('\n')}\n` : '');
    return OK;
  },
};
