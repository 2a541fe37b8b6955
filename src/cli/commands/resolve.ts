import { basename } from 'node:path';
import { FalcoProbesError } from '../../util/errors.js';
import { readFileOrUndefined, writeFileAtomic } from '../../util/fs.js';
import { findSourceDefinitionFiles, loadSourceDefinition, loadSourceDefinitionById } from '../../config/source-definition.js';
import { resolveSource } from '../../resolve/index.js';
import { lockfilePathFor, parseLockfileText, serializeLockfile } from '../../lockfile/lockfile.js';
import { diffLockfiles, formatLockfileDiff } from '../../lockfile/diff.js';
import { parseMirrorOverrides, parsePositiveInt, type Command } from '../context.js';

export const command: Command = {
  name: 'resolve',
  summary: 'crawl the mirrors of source definitions and write kernels/<os>.lock.yaml',
  usage: `usage: falco-probes resolve [OS...] [options]

Reads kernels/<OS>.yaml (every source definition when no OS is named), fetches the
repository metadata over HTTP, and writes kernels/<OS>.lock.yaml atomically. The
lockfile is only rewritten when its bytes change.

options:
  --check               do not write; exit 1 and show what changed when a lockfile is stale
  --mirror NAME=URL     use URL for repository NAME instead of its mirrors (repeatable;
                        later ones are fallbacks). URL is always the repository's base URL
                        (for yum, the folder holding repodata/), never a mirror.list, even
                        when the definition lists mirror.list URLs; yum's $basearch in it
                        is replaced by each architecture (quote it from the shell)
  --allow-removals      accept a resolve that drops kernels the lockfile has
                        (without it such a resolve fails and lists them)
  --timeout SECONDS     give up on a request after this long without data (default 30),
                        then retry it with backoff (3 attempts in all)
`,
  options: {
    check: { type: 'boolean' },
    mirror: { type: 'string', multiple: true },
    'allow-removals': { type: 'boolean' },
    timeout: { type: 'string' },
  },
  async run({ values, positionals }, ctx) {
    const mirrorOverrides = parseMirrorOverrides(values['mirror']);
    const http = values['timeout'] === undefined ? {} : { idleTimeoutMs: parsePositiveInt(values['timeout'], '--timeout', 30) * 1000 };
    const check = values['check'] === true;
    const files = positionals.length
      ? await Promise.all(positionals.map(async (id) => (await loadSourceDefinitionById(id, ctx.kernelsDir, ctx.root)).file))
      : await findSourceDefinitionFiles(ctx.kernelsDir);
    if (!files.length) throw new FalcoProbesError('usage', `no source definitions in ${ctx.kernelsDir}`);
    if (mirrorOverrides.size && files.length > 1)
      throw new FalcoProbesError('usage', '--mirror applies to one OS at a time; name the OS');
    let stale = 0;
    for (const file of files) {
      const source = await loadSourceDefinition(file, ctx.root);
      const os = source.definition.id;
      const lockPath = lockfilePathFor(ctx.kernelsDir, os);
      ctx.logger.info(`${os}: resolving ${source.definition.repositories.length} repositories`);
      const lock = await resolveSource(source, { mirrorOverrides, http, logger: ctx.logger });
      const text = serializeLockfile(lock);
      const oldBytes = await readFileOrUndefined(lockPath);
      const old = oldBytes ? parseLockfileText(oldBytes.toString('utf8'), lockPath) : undefined;
      if (oldBytes && oldBytes.toString('utf8') === text) {
        ctx.logger.info(`${os}: ${lock.kernels.length} kernels, ${basename(lockPath)} up to date`);
        continue;
      }
      const diff = diffLockfiles(old, parseLockfileText(text, lockPath));
      if (check) {
        stale++;
        ctx.stdout.write(`${formatLockfileDiff(os, diff)}\n`);
        continue;
      }
      if (diff.removed.length && values['allow-removals'] !== true) {
        throw new FalcoProbesError('removal', `${os}: this resolve would drop ${diff.removed.length} kernel(s) that ${basename(lockPath)} has; the lockfile is unchanged`, {
          details: diff.removed.map((k) => `  - ${k.name} (${k.machine})`).join('\n'),
          hint: 'a mirror may have answered with a partial list; if the kernels really went away, run again with --allow-removals',
        });
      }
      await writeFileAtomic(lockPath, text);
      ctx.stdout.write(`${formatLockfileDiff(os, diff)}\n`);
      ctx.logger.info(`${os}: wrote ${lockPath} (${lock.kernels.length} kernels)`);
    }
    if (check && stale) {
      ctx.logger.error(`${stale} lockfile(s) are stale; run falco-probes resolve`);
      return 1;
    }
    return 0;
  },
};
