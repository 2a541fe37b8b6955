import { readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';

// What a run of falco-probes may leave behind, found for real: temporaries
// by name anywhere under a folder, and processes by /proc.

/**
 * Every temporary name the tool makes (grep src/ for mkdtemp, `.tmp`,
 * `.part`, process.pid), by form, with its maker. A finished run leaves none
 * of them, in any folder; besides these, every entry of a
 * `.falco-probes/work/` folder counts (work directories
 * `<key>-[<purpose>-]<pid>`, which hold kbuild's own `.tmp_*` files).
 * (`falco-probes-apt-*` in the system's temporary folder belongs to
 * `--fetch-via apt`, which these tests do not use.)
 */
export const TEMPORARY: ReadonlyArray<readonly [RegExp, string]> = [
  [/^\..+\.extract-\d+-[A-Za-z0-9]{6}$/, 'an archive being unpacked (fetch/extract.ts, mkdtemp)'],
  [/^\..+\.old-\d+-[0-9a-f]{8}$/, 'a replaced tree on its way out (fetch/extract.ts)'],
  [
    /\.\d+\.[0-9a-f]{8}\.tmp$/,
    'a file or tree being written: util/fs.ts writeFileAtomic (manifests, index.json, SHA256SUMS, the graph memo, built objects), unpacked trees and kernel roots (run/kernel-root.ts), driver trees (run/driver-source.ts, without the leading dot), probe copies (repository/local.ts), lock bodies (repository/lock.ts)',
  ],
  [/\.part$/, 'a download (fetch/cache.ts `.<sha256>.<pid>.<hex>.part`, run/driver-source.ts `<name>.<pid>.<hex>.part`)'],
  [/^\.falco-probes-tmp$/, "the repository's copy folder (repository/local.ts)"],
  [/^\.publish-staging-/, 'a publish in progress (repository/publish.ts)'],
  [
    /^\.falco-probes\.lock(?:\.break)?$/,
    "the repository's lock and its breaker's guard (repository/lock.ts): a finished run releases them",
  ],
];

export function temporaryForm(name: string): string | undefined {
  return TEMPORARY.find(([form]) => form.test(name))?.[1];
}

/** Every temporary under `dir` (a temporary folder is listed once, not entered), and every entry of a `.falco-probes/work` folder; sorted. */
export async function temporariesUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (at: string): Promise<void> => {
    const entries = await readdir(at, { withFileTypes: true }).catch(() => []);
    const isWork = at.endsWith('/.falco-probes/work');
    for (const e of entries) {
      const path = join(at, e.name);
      if (isWork || temporaryForm(e.name)) found.push(path);
      else if (e.isDirectory()) await walk(path);
    }
  };
  await walk(dir);
  return found.sort();
}

export interface Proc {
  pid: number;
  ppid: number;
  pgid: number;
  comm: string;
}

/** Every process, from /proc/<pid>/stat. */
export async function processes(): Promise<Proc[]> {
  const out: Proc[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => undefined);
    if (!stat) continue;
    // `pid (comm) state ppid pgrp ...`: comm may hold spaces and parentheses.
    const close = stat.lastIndexOf(')');
    const fields = stat.slice(close + 2).split(' ');
    out.push({ pid: Number(name), comm: stat.slice(stat.indexOf('(') + 1, close), ppid: Number(fields[1]), pgid: Number(fields[2]) });
  }
  return out;
}

/** The descendants of `root` (children, their children, ...). */
export function descendants(all: readonly Proc[], root: number): Proc[] {
  const found: Proc[] = [];
  const queue = [root];
  while (queue.length) {
    const parent = queue.shift()!;
    for (const p of all) {
      if (p.ppid !== parent) continue;
      found.push(p);
      queue.push(p.pid);
    }
  }
  return found;
}

/** Processes (other than this one) whose command line names `dir` or whose working directory is under it; zombies have neither. */
export async function processesUnder(dir: string): Promise<{ pid: number; what: string }[]> {
  const out: { pid: number; what: string }[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const cmdline = (await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '')).replace(/\0/g, ' ').trim();
    const cwd = await readlink(`/proc/${name}/cwd`).catch(() => '');
    if (cmdline.includes(dir) || cwd === dir || cwd.startsWith(`${dir}/`))
      out.push({ pid: Number(name), what: `${name} (cwd ${cwd}): ${cmdline.slice(0, 200)}` });
  }
  return out;
}

/** Poll until no process under `dir` is left (a killed process takes a moment to go); what is still there after `ms`. */
export async function survivorsAfter(dir: string, ms: number): Promise<string[]> {
  const until = Date.now() + ms;
  for (;;) {
    const left = await processesUnder(dir);
    if (left.length === 0 || Date.now() > until) return left.map((p) => p.what);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Kill every process under `dir` (cleanup after a failed assertion: nothing of a test's runs may outlive it). */
export async function killEverythingUnder(dir: string): Promise<void> {
  for (const p of await processesUnder(dir)) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

export function signalGroup(pgid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pgid, sig);
  } catch {
    // ESRCH: the group is gone.
  }
}
