// The cost of checking cached trees and kernel roots against their manifests
// (docs/PERFORMANCE.md, "Cache checks"). Usage:
//   node --import tsx bench/cache-check.ts DEB... (a kernel's header packages, in order)
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSharedKernelRoots } from '../src/run/kernel-root.js';
import { checkTree, manifestOf, readManifest } from '../src/run/tree-manifest.js';
import { extractPackage } from '../src/fetch/extract.js';

const debs = process.argv.slice(2);
if (!debs.length) throw new Error('usage: cache-check.ts DEB...');
const dir = await mkdtemp(join(tmpdir(), 'fp-bench-cache-'));
const ms = (t0: number) => `${(performance.now() - t0).toFixed(0)} ms`;
try {
  const archives = debs.map((file) => ({
    file,
    format: 'deb' as const,
    sha256: createHash('sha256').update(readFileSync(file)).digest('hex'),
  }));
  let t0 = performance.now();
  for (const [i, a] of archives.entries()) await extractPackage(a.file, 'deb', join(dir, 'plain', String(i)));
  console.log(`extract only (no manifest): ${ms(t0)}`);
  t0 = performance.now();
  for (const i of archives.keys()) manifestOf(join(dir, 'plain', String(i)));
  console.log(`manifests of those trees (sha256 of every file): ${ms(t0)}`);
  const shared = createSharedKernelRoots(join(dir, 'trees'), join(dir, 'kernel-roots'));
  t0 = performance.now();
  const root = await shared(archives);
  console.log(`unpack with manifests + compose the root: ${ms(t0)}`);
  const manifest = (await readManifest(join(dir, 'kernel-roots-manifests', `${root.slice(root.lastIndexOf('/') + 1)}.json`)))!;
  console.log(
    `root: ${manifest.files} files, ${(manifest.bytes / 1024 ** 2).toFixed(1)} MiB, ${manifest.entries.length - manifest.files} links`,
  );
  t0 = performance.now();
  const again = await createSharedKernelRoots(join(dir, 'trees'), join(dir, 'kernel-roots'))(archives);
  console.log(`first use in a new process (manifest read + stat-level check): ${ms(t0)} (${again === root ? 'same root' : 'remade!'})`);
  t0 = performance.now();
  const problem = checkTree(root, manifest, true);
  console.log(`full check (sha256 of every file): ${ms(t0)}${problem ? ` PROBLEM ${problem}` : ''}`);
} finally {
  await rm(dir, { recursive: true, force: true });
}
