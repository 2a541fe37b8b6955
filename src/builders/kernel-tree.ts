import { lstat, mkdir, readFile, readdir, readlink, realpath, symlink, writeFile } from 'node:fs/promises';
import { join, posix, relative } from 'node:path';
import { FalcoProbesError } from '../util/errors.js';
import { checkRelease } from '../util/names.js';

// The kernel's packages are extracted into a private `kernelRoot` laid out
// like `/`, but their trees still point at `/`: Debian's
// linux-headers-<release>/Makefile is one line, `include
// /usr/src/linux-headers-<abi>-common/Makefile`, and `/lib/modules/*/build`
// links are absolute. kbuild must never see the host's own /usr/src, and the
// extracted tree must stay untouched (many targets share it). So the build
// runs against a *view* in the target's work directory: a directory per tree
// whose entries are symbolic links into kernelRoot (resolved as if kernelRoot
// were `/`), with the Makefile copied and its absolute includes rewritten to
// point at the view of the included tree.
//
// Two fixed names inside the work directory hold the views. Neither is a
// string prefix of the other, because clang applies -ffile-prefix-map by
// plain string prefix.

export const OBJTREE_VIEW = 'kernel-obj';
export const SRCTREE_VIEW = 'kernel-src';

/** A `-ffile-prefix-map` pair: a path of this build and the stable path it is recorded as. */
export interface PrefixMap {
  from: string;
  to: string;
}

export interface KernelTreeView {
  /** The directory for `make -C` (the objtree view). */
  kernelDir: string;
  /** The real headers directory inside kernelRoot. */
  headersDir: string;
  /** How the headers directory was found. */
  layout: 'debian' | 'rpm' | 'modules-build';
  /** The view of the included source tree (Debian's -common), when the Makefile includes one. */
  srcTreeDir?: string;
  /** The stable names the view paths stand for (`/usr/src/linux-headers-<release>`, ...), for -ffile-prefix-map. */
  prefixMaps: PrefixMap[];
}

const MAX_SYMLINKS = 40;

/**
 * Resolve `path` (absolute, as seen inside the kernel's file system) against
 * `root`, following symbolic links as if `root` were `/`: an absolute link
 * target restarts at `root`, `..` never climbs above it. Returns the real
 * path inside root, or undefined when some component does not exist.
 */
export async function resolveInRoot(root: string, path: string): Promise<string | undefined> {
  const pending = path.split('/').filter((c) => c !== '' && c !== '.');
  const done: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift() as string;
    if (part === '..') {
      done.pop();
      continue;
    }
    const here = join(root, ...done, part);
    let st;
    try {
      st = await lstat(here);
    } catch {
      return undefined;
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS)
        throw new FalcoProbesError('input', `too many levels of symbolic links resolving ${path}`, { location: { file: here } });
      const target = await readlink(here);
      const parts = target.split('/').filter((c) => c !== '' && c !== '.');
      if (target.startsWith('/')) done.length = 0;
      pending.unshift(...parts);
    } else {
      done.push(part);
    }
  }
  return join(root, ...done);
}

async function listOrEmpty(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch {
    return [];
  }
}

async function isDirectory(path: string | undefined): Promise<boolean> {
  if (path === undefined) return false;
  try {
    return (await lstat(path)).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Find the kernel headers directory (KERNELDIR) for `release` inside
 * kernelRoot: Debian's usr/src/linux-headers-<release>, RPM's
 * usr/src/kernels/<release>, else whatever lib/modules/<release>/build names.
 */
export async function findKernelDir(kernelRoot: string, release: string): Promise<{ dir: string; layout: KernelTreeView['layout'] }> {
  checkRelease(release);
  const root = await realpath(kernelRoot);
  const candidates: [string, KernelTreeView['layout']][] = [
    [`/usr/src/linux-headers-${release}`, 'debian'],
    [`/usr/src/kernels/${release}`, 'rpm'],
    [`/lib/modules/${release}/build`, 'modules-build'],
    [`/usr/lib/modules/${release}/build`, 'modules-build'],
  ];
  for (const [path, layout] of candidates) {
    const dir = await resolveInRoot(root, path);
    if (dir !== undefined && (await isDirectory(dir))) return { dir, layout };
  }
  const found = [
    ...(await listOrEmpty(join(root, 'usr/src'))).map((e) => `usr/src/${e}`),
    ...(await listOrEmpty(join(root, 'usr/src/kernels'))).map((e) => `usr/src/kernels/${e}`),
    ...(await listOrEmpty(join(root, 'lib/modules'))).map((e) => `lib/modules/${e}`),
  ];
  throw new FalcoProbesError(
    'build',
    `no kernel headers for ${release}: looked for ${candidates.map(([p]) => p.slice(1)).join(', ')}; ` +
      (found.length > 0 ? `the kernel's packages hold ${found.join(', ')}` : 'the kernel root holds none of usr/src, lib/modules'),
    {
      location: { file: kernelRoot },
      hint: "check the kernel's packages in its lockfile: the headers package (linux-headers-*, kernel-devel) must be among them",
    },
  );
}

// Characters that make, kbuild's M= check and clang's -ffile-prefix-map take
// literally. Paths with others (spaces, `:`, `=`, `$`, `#`, quotes) are refused
// before anything runs.
const MAKE_SAFE_PATH_RE = /^\/[A-Za-z0-9._+~@,/-]*$/;

export function checkMakeSafePath(path: string, what: string): string {
  if (!MAKE_SAFE_PATH_RE.test(path))
    throw new FalcoProbesError('usage', `the ${what} path ${JSON.stringify(path)} cannot be passed to make`, {
      location: { file: path },
      hint: 'use a directory whose absolute path has only letters, digits and . _ + ~ @ , - /',
    });
  return path;
}

/**
 * Absolute references to another kernel tree in a kernel Makefile: Debian 12's
 * `include /usr/src/linux-headers-<abi>-common/Makefile`, and older Debian
 * releases' `$(MAKE) -C /usr/src/linux-headers-<abi>-common O=$(CURDIR)`.
 */
const TREE_REFERENCE_RE = /(^|[\s=:'"])(\/usr\/src\/[A-Za-z0-9._+~-]+)(?=[/\s'"]|$)/g;

interface ViewContext {
  root: string;
  workDir: string;
  prefixMaps: PrefixMap[];
  /** Views made so far, by the real tree they show: the headers tree, then at most one tree it refers to. */
  views: Map<string, string>;
  srcTree?: { real: string; view: string };
}

/**
 * Fill `viewDir` with one symbolic link per entry of `realDir`, each pointing
 * at the entry resolved inside the root; the Makefile is copied with its
 * absolute includes rewritten.
 */
async function fillView(ctx: ViewContext, realDir: string, viewDir: string, depth: number): Promise<void> {
  await mkdir(viewDir, { recursive: true });
  const virtualDir = `/${relative(ctx.root, realDir)}`;
  for (const name of await listOrEmpty(realDir)) {
    const entryVirtual = posix.join(virtualDir, name);
    const resolved = await resolveInRoot(ctx.root, entryVirtual);
    if (name === 'Makefile') {
      if (resolved === undefined)
        throw new FalcoProbesError('build', `${entryVirtual} is a dangling link`, { location: { file: join(realDir, name) } });
      await writeFile(join(viewDir, name), await rewriteMakefile(ctx, resolved, depth));
      continue;
    }
    if (resolved === undefined) {
      if (name === 'scripts' || name === 'include' || name === 'arch') {
        const target = await readlink(join(realDir, name)).catch(() => '?');
        throw new FalcoProbesError('build', `${entryVirtual} -> ${target} points at nothing in the kernel's packages`, {
          location: { file: join(realDir, name) },
          hint: "the kbuild package (linux-kbuild-* on Debian) must be among the kernel's packages in its lockfile",
        });
      }
      continue; // a link nothing in a module build uses (lib/modules/*/source and the like)
    }
    await symlink(resolved, join(viewDir, name));
  }
}

async function rewriteMakefile(ctx: ViewContext, makefile: string, depth: number): Promise<string> {
  const lines = (await readFile(makefile, 'utf8')).split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    const refs = [...line.matchAll(TREE_REFERENCE_RE)];
    if (refs.length === 0) continue;
    let rewritten = '';
    let last = 0;
    for (const m of refs) {
      const [, lead, tree] = m as unknown as [string, string, string];
      const at = (m.index ?? 0) + lead.length;
      const where = { file: makefile, line: i + 1, column: at + 1 };
      const realDir = await resolveInRoot(ctx.root, tree);
      if (realDir === undefined || !(await isDirectory(realDir)))
        throw new FalcoProbesError('build', `the kernel Makefile refers to ${tree}, which none of the kernel's packages provides`, {
          location: where,
          hint: "Debian's linux-headers-<release> needs its linux-headers-<abi>-common package: add it to the kernel's packages",
        });
      let view = ctx.views.get(realDir);
      if (view === undefined) {
        if (depth > 0 || ctx.srcTree !== undefined)
          throw new FalcoProbesError(
            'build',
            `the kernel Makefile refers to a third kernel tree (${tree}); only the headers and one source tree are supported`,
            {
              location: where,
            },
          );
        view = join(ctx.workDir, SRCTREE_VIEW);
        ctx.views.set(realDir, view);
        ctx.srcTree = { real: realDir, view };
        ctx.prefixMaps.push({ from: view, to: `/${relative(ctx.root, realDir)}` });
        await fillView(ctx, realDir, view, depth + 1);
      }
      rewritten += line.slice(last, at) + view;
      last = at + tree.length;
    }
    lines[i] = rewritten + line.slice(last);
  }
  return lines.join('\n');
}

/**
 * Prepare, inside `workDir` (empty, private), a view of the kernel headers
 * that kbuild can use on this host without touching kernelRoot.
 */
export async function prepareKernelView(opts: { kernelRoot: string; release: string; workDir: string }): Promise<KernelTreeView> {
  const root = await realpath(opts.kernelRoot);
  const workDir = await realpath(opts.workDir);
  checkMakeSafePath(root, 'kernel root');
  checkMakeSafePath(workDir, 'work directory');
  const { dir: headersDir, layout } = await findKernelDir(root, opts.release);
  const kernelDir = join(workDir, OBJTREE_VIEW);
  const ctx: ViewContext = {
    root,
    workDir,
    prefixMaps: [{ from: kernelDir, to: `/${relative(root, headersDir)}` }],
    views: new Map([[headersDir, kernelDir]]),
  };
  await fillView(ctx, headersDir, kernelDir, 0);
  // Anything reached through a link goes straight into kernelRoot: record it
  // without the root's own location. Only when neither directory is a string
  // prefix of the other, since clang 14 matches prefixes as plain strings and
  // takes the first (shortest) match.
  const overlaps = (a: string, b: string) => a.startsWith(b) || b.startsWith(a);
  if (!overlaps(root, workDir)) ctx.prefixMaps.push({ from: root, to: '' });
  const view: KernelTreeView = { kernelDir, headersDir, layout, prefixMaps: ctx.prefixMaps };
  if (ctx.srcTree) view.srcTreeDir = ctx.srcTree.view;
  return view;
}
