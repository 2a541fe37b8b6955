import { shadowedSummary } from '../../graph/loader-name-clash.js';
import { PUBLISHED_RECORD, readPublishedRecord } from '../../repository/published-record.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { generate, type PublishedProbes } from '../../generate/generate.js';
import { DEFAULT_REPOSITORY_DIR } from '../../run/paths.js';
import type { Command } from '../context.js';
import { NOT_OK, OK } from '../outcome.js';

export const command: Command = {
  name: 'generate',
  summary: 'write probes/<os>/BUILD, generated/Makefile and generated/targets.json from the lockfiles and kernels/drivers.yaml',
  usage: `usage: falco-probes generate [--check] [--repository DIR|URL] [--json]

Reads kernels/*.lock.yaml and kernels/drivers.yaml and writes, byte-identical
from run to run and only where the bytes change:
  probes/<os>/BUILD           one Please target per (kernel, driver, kind)
  generated/Makefile          the same targets for GNU make (decides by key stamps)
  generated/targets.json      every target with its content key
  generated/*.schema.json     the schemas of the YAML inputs
An artifact that kernels/published.json (the checked-in record that
\`publish --record\` keeps) lists for a target's key is pinned with
hashes = ["<sha256>"]: the generated files depend on checked-in files only,
never on a repository/ that a build left in the working tree, so --check
gives the same answer on a fresh clone, after \`npm start\`, and in CI.
Make's key stamps (.falco-probes/keys/, local state) follow the local
repository. Nothing is written when any input is invalid.

options:
  --check                 write nothing; exit 1 and name the files that would change
  --repository DIR|URL    the repository whose artifacts get key stamps for Make
                          (default: repository/ under the project root)
  --json                  print the report as JSON: check, targets per OS, every file
                          with its change (written, removed, unchanged; with --check,
                          what would change), and outOfDate (same exit status)
`,
  options: { check: { type: 'boolean' }, repository: { type: 'string' }, json: { type: 'boolean' } },
  allowPositionals: false,
  async run({ values }, ctx) {
    const check = values['check'] === true;
    const given = typeof values['repository'] === 'string' ? values['repository'] : undefined;
    const location = given ?? join(ctx.root, DEFAULT_REPOSITORY_DIR);
    // No local repository yet is normal (nothing built); a named one must exist.
    // Loaded only when there is a repository to read (it brings HTTP with it).
    const index =
      given !== undefined || existsSync(location)
        ? (await (await import('../../repository/remote.js')).openRepository(location, process.cwd()).readIndex())?.index
        : undefined;
    const built: PublishedProbes = new Map((index?.probes ?? []).map((p) => [p.key, { file: p.file, sha256: p.sha256 }]));
    const published = await readPublishedRecord(join(ctx.root, PUBLISHED_RECORD));
    const result = await generate(ctx.root, { check, published, built, logger: ctx.logger });

    const perOs = new Map<string, number>(result.graph.oses.map((os) => [os, 0]));
    for (const t of result.graph.targets) perOs.set(t.os, (perOs.get(t.os) ?? 0) + 1);
    const lines = [...perOs].sort(([a], [b]) => (a < b ? -1 : 1)).map(([os, n]) => `${os}: ${n} target(s)`);
    if (perOs.size === 0) lines.push('no lockfiles under kernels/ (run falco-probes resolve)');
    // Known without parsing the lockfiles when the graph came from its memo (so is every line here).
    const shadowed = result.graph.shadowed;
    lines.push(...shadowedSummary(shadowed));
    const changed = result.files.filter((f) => f.change !== 'unchanged');
    const unchanged = result.files.length - changed.length;
    if (check) {
      for (const f of changed) lines.push(`${f.change === 'removed' ? 'would remove' : 'would write'} ${f.path}`);
      lines.push(`${changed.length} file(s) out of date, ${unchanged} up to date`);
    } else {
      for (const f of changed) lines.push(`${f.change === 'removed' ? 'removed' : 'wrote'} ${f.path}`);
      const s = result.stamps!;
      lines.push(`${changed.length} file(s) written, ${unchanged} unchanged`);
      if (s.created || s.removed)
        lines.push(`make key stamps: ${s.created} created for probes the repository holds, ${s.removed} of old keys removed`);
    }
    if (values['json'] === true) {
      const report = {
        check,
        targets: Object.fromEntries([...perOs].sort(([a], [b]) => (a < b ? -1 : 1))),
        files: result.files.map((f) => ({ path: f.path, change: f.change })),
        outOfDate: changed.length,
        shadowed: shadowed.map((x) => ({
          os: x.os,
          kernel: x.kernel.name,
          machine: x.kernel.machine,
          by: { os: x.by.os, kernel: x.by.kernel.name },
        })),
        ...(result.stamps ? { makeKeyStamps: { created: result.stamps.created, removed: result.stamps.removed } } : {}),
      };
      ctx.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    } else ctx.stdout.write(`${lines.join('\n')}\n`);
    if (check && changed.length) {
      ctx.logger.error(`generated files are out of date; run falco-probes generate`);
      return NOT_OK;
    }
    return OK;
  },
};
