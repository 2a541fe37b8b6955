import { dirname, join } from 'node:path';
import { dockerCompilerImages, routeCompilerImages } from '../builders/route.js';
import { loadSourceDefinitionById, type LoadedSourceDefinition } from '../config/source-definition.js';
import type { Logger } from '../util/log.js';
import { createFetcher } from '../fetch/download.js';
import { defaultCacheDir } from '../fetch/cache.js';
import { extractPackage } from '../fetch/extract.js';
import { sweepCacheTemporaries } from '../fetch/sweep.js';
import type { Fetcher, FetchVia } from '../fetch/types.js';
import { createHostBuilder } from '../builders/host.js';
import type { Builder } from '../builders/types.js';
import type { Target } from '../graph/types.js';
import type { TargetPipeline } from './build-target.js';
import { createDriverSources, type UrlRewrite } from '../fetch/driver-source.js';
import { createSharedKernelRoots } from './kernel-root.js';
import { createMirrorTable } from './mirrors.js';

// The real stages wired together for a run: the fetcher (cache, mirrors,
// apt, its own download limit), the extractor, the driver sources (tarballs,
// packages, local folders: driver-source.ts) and the builder. The CLI commands call this; tests of the runner's own logic may
// pass a pipeline of their own.

export interface PipelineOptions {
  projectRoot: string;
  kernelsDir: string;
  /** The targets that will be built (their OSes' source definitions give the mirrors). */
  targets: readonly Target[];
  mirrorOverrides: ReadonlyMap<string, string[]>;
  via: FetchVia;
  /** Package cache (default: $XDG_CACHE_HOME/falco-probes/packages, or $FALCO_PROBES_CACHE). */
  cacheDir?: string;
  downloads?: number;
  logger: Logger;
  signal?: AbortSignal;
  /** Default: the host builder. */
  builder?: Builder;
  /** `--driver-mirror PREFIX=REPLACEMENT`: where driver tarballs are fetched from (the pins still decide). */
  driverMirrors?: readonly UrlRewrite[];
}

export interface RunPipeline extends TargetPipeline {
  fetcher: Fetcher;
}

export async function createPipeline(o: PipelineOptions): Promise<RunPipeline> {
  const sources = new Map<string, LoadedSourceDefinition>();
  for (const os of new Set(o.targets.map((t) => t.os))) sources.set(os, await loadSourceDefinitionById(os, o.kernelsDir, o.projectRoot));
  // `--mirror NAME=URL` also names the archive of a driver shipped in a package (`--mirror debian=URL`):
  // such a name is not a repository of any source definition, so the kernel packages' table does not see it.
  const repositories = new Set([...sources.values()].flatMap((s) => s.definition.repositories.map((r) => r.name)));
  const archives = new Set(o.targets.flatMap((t) => ('deb' in t.driver.source ? [t.driver.source.deb.archive] : [])));
  const kernelOverrides = new Map([...o.mirrorOverrides].filter(([name]) => repositories.has(name) || !archives.has(name)));
  const mirrors = createMirrorTable(o.targets, sources, kernelOverrides, o.logger);
  const cacheDir = o.cacheDir ?? defaultCacheDir();
  const fetcher = createFetcher({
    cacheDir,
    via: o.via,
    logger: o.logger,
    mirrorsFor: (pkg) => mirrors.mirrorsFor(pkg),
    ...(o.downloads !== undefined ? { downloads: o.downloads } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
  });
  const driverDir = createDriverSources({
    projectRoot: o.projectRoot,
    // Driver tarballs and unpacked trees live in the package cache's folder, beside its sha256/ store.
    cacheDir: fetcher.cacheDir,
    extract: async (file, dest, opts) => {
      await extractPackage(file, 'tgz', dest, { strip: opts.strip, ...(opts.signal ? { signal: opts.signal } : {}) });
    },
    archiveMirrors: o.mirrorOverrides,
    logger: o.logger,
    ...(o.driverMirrors ? { urlRewrites: o.driverMirrors } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
  });
  // Temporaries that killed runs left in the cache (any process's, once it is gone).
  const swept = await sweepCacheTemporaries(fetcher.cacheDir);
  if (swept.length)
    o.logger.info(
      `removed ${swept.length} temporar${swept.length === 1 ? 'y' : 'ies'} of processes that are gone from ${fetcher.cacheDir}`,
    );
  const roots = createSharedKernelRoots(join(fetcher.cacheDir, 'trees'), join(fetcher.cacheDir, 'kernel-roots'), { logger: o.logger });
  return {
    fetcher,
    fetch: (pkg, opts) => fetcher.fetch(pkg, opts),
    // Unpacked once per package (trees/), composed once per kernel (kernel-roots/).
    extract: roots,
    checkKernelRoot: (root) => roots.checkFully(root),
    driverDir,
    // Modules keyed for a compiler image (another Debian release's gcc) go to that image's Docker builder.
    builder: routeCompilerImages(
      o.builder ?? createHostBuilder(),
      dockerCompilerImages({ logger: o.logger, pinMemoDir: join(dirname(fetcher.cacheDir), 'docker-pins') }),
    ),
  };
}
