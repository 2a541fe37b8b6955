import { createHash } from 'node:crypto';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { FalcoProbesError } from './errors.js';
import { sha256File } from './hash.js';

// The identity of a driver source kept as a directory: a deterministic hash
// of its tree, so a local checkout has a key as stable as a pinned tarball's.
//
// Format (version 1), one JSON line per entry, entries sorted by their
// relative path (code-unit order, `/` separators), all fed to sha256 after a
// header line `falco-probes-tree-v1`:
//   ["file", "<path>", "<644|755>", "<sha256 of the contents>"]
//   ["link", "<path>", "<link target>"]
// Only the executable bit of a file's mode counts (as in git): owners,
// times and other permission bits vary between checkouts and do not change
// what a build produces. Directories count through their entries; an empty
// directory adds nothing. Nothing else is skipped except IGNORED below.

export const TREE_HASH_VERSION = 'falco-probes-tree-v1';

/**
 * Names skipped wherever they appear, and why: version control metadata and
 * what kbuild writes into the source directory when someone builds in place
 * (`make -C <KERNELDIR> M=$PWD`). None of them is an input to a build.
 */
export const IGNORED: readonly { pattern: RegExp; what: string }[] = [
  { pattern: /^\.git$/, what: '.git (version control metadata; a directory or a worktree file)' },
  { pattern: /\.o$/, what: '*.o (objects, including the probe itself and *.mod.o)' },
  { pattern: /\.ko$/, what: '*.ko (kernel modules)' },
  { pattern: /\.ll$/, what: '*.ll (LLVM IR the example probe writes on its way to BPF)' },
  { pattern: /^\..*\.cmd$/, what: '.*.cmd (kbuild command records)' },
  { pattern: /^\..*\.d$/, what: '.*.d (dependency files)' },
  { pattern: /\.mod$/, what: '*.mod (kbuild module lists)' },
  { pattern: /\.mod\.c$/, what: '*.mod.c (kbuild module stubs)' },
  { pattern: /^modules\.order$/, what: 'modules.order' },
  { pattern: /^Module\.symvers$/, what: 'Module.symvers' },
  { pattern: /^\.tmp_versions$/, what: '.tmp_versions (old kbuild scratch directory)' },
  { pattern: /^\.cache\.mk$/, what: '.cache.mk (kbuild cache)' },
];

export function isIgnored(name: string): boolean {
  return IGNORED.some((i) => i.pattern.test(name));
}

type Entry = { path: string; record: unknown[] };

/** sha256 of a directory tree (see the format above). Throws a clear error when the directory is missing. */
export async function treeHash(dir: string, describe = dir): Promise<string> {
  const st = await lstat(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (!st) throw new FalcoProbesError('config', `source directory ${describe} does not exist`);
  if (!st.isDirectory()) throw new FalcoProbesError('config', `source ${describe} is not a directory`);
  const entries: Entry[] = [];
  await walk(dir, '', entries, describe);
  entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const hash = createHash('sha256');
  hash.update(`${TREE_HASH_VERSION}\n`);
  for (const e of entries) hash.update(`${JSON.stringify(e.record)}\n`);
  return hash.digest('hex');
}

async function walk(root: string, rel: string, out: Entry[], describe: string): Promise<void> {
  const abs = rel ? join(root, rel) : root;
  const names = await readdir(abs);
  for (const name of names) {
    if (isIgnored(name)) continue;
    if (name.includes('\n') || name.includes('\\'))
      throw new FalcoProbesError(
        'config',
        `source ${describe} holds a file name with a newline or backslash: ${JSON.stringify(posix.join(rel, name))}`,
      );
    const relPath = rel ? `${rel}/${name}` : name;
    const full = join(root, relPath);
    const st = await lstat(full);
    if (st.isDirectory()) await walk(root, relPath, out, describe);
    else if (st.isFile()) {
      const exec = (st.mode & 0o111) !== 0 ? '755' : '644';
      out.push({ path: relPath, record: ['file', relPath, exec, (await sha256File(full)).sha256] });
    } else if (st.isSymbolicLink()) {
      const target = await readlink(full);
      // A link that leaves the tree would let bytes the hash never saw into a build.
      const resolved = posix.normalize(posix.join(posix.dirname(relPath), target));
      if (posix.isAbsolute(target) || resolved === '..' || resolved.startsWith('../'))
        throw new FalcoProbesError('config', `source ${describe}: symbolic link ${relPath} -> ${target} points outside the source tree`, {
          hint: 'replace it with a copy, or with a link that stays inside the directory',
        });
      out.push({ path: relPath, record: ['link', relPath, target] });
    } else {
      throw new FalcoProbesError('config', `source ${describe}: ${relPath} is not a file, directory or symbolic link`);
    }
  }
}
