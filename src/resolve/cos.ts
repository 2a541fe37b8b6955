import pLimit from 'p-limit';
import { setTimeout as sleep } from 'node:timers/promises';
import { FalcoProbesError } from '../util/errors.js';
import { DEFAULT_HTTP, joinUrl, tryMirrors } from '../util/http.js';
import { checkKernelVersion, checkRelease, checkTargetName, checkUnameVersion, checkVersion } from '../util/names.js';
import { compareNatural } from '../util/natural-sort.js';
import type { Arch, CosKernelSelection, KernelDescriptor } from '../config/types.js';
import type { LoadedSourceDefinition } from '../config/source-definition.js';
import { listBucketObjects, type BucketObject } from './cos-listing.js';
import { readCosHeaders, type CosHeadersInfo } from './cos-headers.js';
import { CosHeadersMemo } from './cos-memo.js';
import { definitionLocation } from './definition-location.js';
import { mirrorsFor, resolveCacheDir, type ResolveOptions, type Resolver } from './types.js';

// Google's Container-Optimized OS has no package repository: a kernel is
// whatever a COS build (image `cos-117-18613-339-26`, build id
// `18613.339.26`) ships, and its headers are `<build id>/kernel-headers.tgz`
// in Google's `cos-tools` bucket.
//
// 1. Build ids come from the bucket itself (its GCS JSON API listing, one
//    prefix per milestone: `18613.` for milestone 117): a build is listed
//    exactly when its headers can be downloaded. The listing gives each
//    tarball's size and MD5.
// 2. Each tarball is downloaded once (see cos-memo.ts) and read for its
//    release, `uname -v` and machine (cos-headers.ts).
// 3. Falco's loader names a COS probe `falco_cos_<uname -r>_<kernelversion>.o`
//    and nothing else about the build, so builds that agree on those two
//    share one probe: one descriptor per (release, kernelversion), named
//    after the earliest build id that has it (`cos-117-18613-339-26`), whose
//    headers it is built from. Later builds with the same kernel do not
//    change the descriptor (so they rebuild nothing); they are logged. Builds
//    whose `uname -v` differs under one release are different kernels Falco
//    cannot tell apart: they still share the one probe, with a warning.

const DEFAULT_MAX_HEADERS_BYTES = 1024 ** 3;
const DOWNLOADS_AT_ONCE = 4;
const HEADERS_OBJECT_RE = /^([0-9]{1,9}\.[0-9]{1,9}\.[0-9]{1,9})\/kernel-headers\.tgz$/;
/** What a build not started after another one failed rejects with. */
const SKIPPED = new Error('not started: another build failed');
const MACHINES: Record<string, Arch> = { x86_64: 'x86_64', aarch64: 'aarch64', arm64: 'aarch64' };

interface CosBuild {
  buildId: string;
  milestone: number;
  object: BucketObject;
}

interface ReadBuild extends CosBuild {
  info: CosHeadersInfo;
  machine: Arch;
  kernelVersion: string;
}

export const resolveCosSource: Resolver = async (source, options) => {
  const def = source.definition;
  const cos = def.cos;
  if (!cos)
    throw new FalcoProbesError('config', 'a cos source definition needs a "cos" section', {
      location: definitionLocation(source, ['type']),
    });
  for (const key of ['listing', 'headers'] as const) {
    if (!def.repositories.some((r) => r.name === cos[key]))
      throw new FalcoProbesError('config', `cos.${key} names repository "${cos[key]}", which the definition does not define`, {
        location: definitionLocation(source, ['cos', key]),
        hint: `repositories: ${def.repositories.map((r) => r.name).join(', ')}`,
      });
  }
  let buildIdRe: RegExp | undefined;
  try {
    buildIdRe = cos.buildIdPattern === undefined ? undefined : new RegExp(cos.buildIdPattern, 'u');
  } catch (err) {
    throw new FalcoProbesError('config', `invalid regular expression: ${(err as Error).message}`, {
      location: definitionLocation(source, ['cos', 'buildIdPattern']),
    });
  }

  const builds = await listBuilds(source, cos, buildIdRe, options);
  const memo = new CosHeadersMemo(options.cacheDir ?? resolveCacheDir(), options.logger);
  const limit = pLimit(DOWNLOADS_AT_ONCE);
  // One failure fails the resolve: builds not yet started are skipped, and the resolve
  // returns only once the downloads under way have ended (none is left writing the memo).
  let failed = false;
  const tasks = builds.map((b) =>
    limit(async () => {
      if (failed) throw SKIPPED;
      try {
        return await readBuild(source, cos, b, memo, options);
      } catch (err) {
        failed = true;
        throw err;
      }
    }),
  );
  const settled = await Promise.allSettled(tasks);
  const failure = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected' && r.reason !== SKIPPED);
  if (failure) throw failure.reason;
  const read = settled.map((r) => (r as PromiseFulfilledResult<ReadBuild>).value);
  const kernels = groupIntoKernels(source, read, options);
  options.logger?.info(`${def.id}: ${kernels.length} kernels from ${builds.length} COS builds`);
  return kernels;
};

/** Every build id of every milestone with a headers tarball, in build order. */
async function listBuilds(
  source: LoadedSourceDefinition,
  cos: CosKernelSelection,
  buildIdRe: RegExp | undefined,
  options: ResolveOptions,
): Promise<CosBuild[]> {
  const builds: CosBuild[] = [];
  for (const [i, m] of cos.milestones.entries()) {
    const prefix = `${m.build}.`;
    const listing = await tryMirrors(mirrorsFor(source, cos.listing, options), (base) => listBucketObjects(base, prefix, options.http));
    let found = 0;
    for (const object of listing.objects) {
      const buildId = HEADERS_OBJECT_RE.exec(object.name)?.[1];
      if (buildId === undefined || !buildId.startsWith(prefix)) continue;
      if (buildIdRe && !buildIdRe.test(buildId)) {
        options.logger?.debug(`${buildId}: left out by cos.buildIdPattern`);
        continue;
      }
      checkVersion(buildId);
      builds.push({ buildId, milestone: m.milestone, object });
      found++;
    }
    options.logger?.info(
      `${source.definition.id}: milestone ${m.milestone}: ${found} build(s) with kernel headers among ${listing.objects.length} objects (${listing.pages} pages) under ${prefix}`,
    );
    if (found === 0)
      throw new FalcoProbesError(
        'config',
        `milestone ${m.milestone}: the listing has no <build id>/kernel-headers.tgz under prefix "${prefix}"`,
        {
          location: definitionLocation(source, ['cos', 'milestones', i]),
          hint: 'a milestone whose build number is wrong (or which Google has removed) matches nothing; fix or remove it (the lockfile is unchanged)',
        },
      );
  }
  return builds.sort((a, b) => compareNatural(a.buildId, b.buildId));
}

/** One build's headers: from the memo when this content was read before, else downloaded (network failures retried). */
async function readBuild(
  source: LoadedSourceDefinition,
  cos: CosKernelSelection,
  build: CosBuild,
  memo: CosHeadersMemo,
  options: ResolveOptions,
): Promise<ReadBuild> {
  const path = `${build.buildId}/kernel-headers.tgz`;
  let info = await memo.get(build.object.md5, build.object.size);
  if (info) options.logger?.debug(`${path}: known content (md5 ${info.md5}); not downloaded again`);
  else {
    const attempts = Math.max(1, options.http?.attempts ?? DEFAULT_HTTP.attempts);
    const maxBytes = cos.maxHeadersBytes ?? DEFAULT_MAX_HEADERS_BYTES;
    info = await tryMirrors(mirrorsFor(source, cos.headers, options), async (base) => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await readCosHeaders(joinUrl(base, path), build.object, options.http ?? {}, maxBytes);
        } catch (err) {
          // A body cut off part way is worth another try; bad data is not.
          if (!(err instanceof FalcoProbesError) || err.kind !== 'network' || attempt >= attempts) throw err;
          await sleep((options.http?.backoffMs ?? DEFAULT_HTTP.backoffMs) * 2 ** (attempt - 1));
        }
      }
    });
    options.logger?.debug(`${path}: ${info.release}, ${info.version}`);
    await memo.set(info);
  }
  const url = `${cos.headers}:${path}`;
  const where = { url };
  const fail = (err: unknown): never => {
    if (err instanceof FalcoProbesError && err.kind === 'input')
      throw new FalcoProbesError('input', `build ${build.buildId}: ${err.message}`, { location: where });
    throw err;
  };
  try {
    checkRelease(info.release, where);
    checkTargetName(info.release, where);
    checkUnameVersion(info.version, where);
  } catch (err) {
    fail(err);
  }
  const machine = info.machine === undefined ? source.definition.architectures[0]! : MACHINES[info.machine];
  if (machine === undefined)
    fail(new FalcoProbesError('input', `UTS_MACHINE "${info.machine}" is not an architecture falco-probes knows (x86_64, aarch64)`));
  // Falco's loader: the digits after `#` at the start of uname -v.
  const kernelVersion = /^#([0-9]+)/.exec(info.version)?.[1];
  if (kernelVersion === undefined)
    fail(new FalcoProbesError('input', `uname -v ${JSON.stringify(info.version)} does not start with #<number>`));
  checkKernelVersion(kernelVersion!, where);
  return { ...build, info, machine: machine!, kernelVersion: kernelVersion! };
}

/** One descriptor per probe file Falco's loader can ask for: per (machine, release, kernelversion). */
function groupIntoKernels(source: LoadedSourceDefinition, builds: ReadBuild[], options: ResolveOptions): KernelDescriptor[] {
  const def = source.definition;
  const cos = def.cos!;
  const groups = new Map<string, ReadBuild[]>();
  for (const b of builds) {
    const key = `${b.machine}\u0000${b.info.release}\u0000${b.kernelVersion}`;
    const list = groups.get(key) ?? [];
    list.push(b);
    groups.set(key, list);
  }
  const kernels: KernelDescriptor[] = [];
  for (const group of groups.values()) {
    // Builds are in build order: the first is the earliest with this kernel.
    const first = group[0]!;
    const others = group.slice(1);
    const name = `cos-${first.milestone}-${first.buildId.split('.').join('-')}`;
    checkTargetName(name);
    if (others.length)
      options.logger?.info(
        `${def.id}: ${first.info.release} (${first.machine}): ${others.length} later build(s) share the kernel of ${name}: ${others.map((b) => b.buildId).join(', ')}`,
      );
    const differing = others.filter((b) => b.info.version !== first.info.version);
    if (differing.length)
      options.logger?.warn(
        `${def.id}: ${first.info.release}: builds ${differing.map((b) => b.buildId).join(', ')} report another uname -v than ${first.buildId} ` +
          `(${JSON.stringify(differing[0]!.info.version)} vs ${JSON.stringify(first.info.version)}); Falco's loader names their probes alike, so they share the one built from ${first.buildId}`,
      );
    kernels.push({
      name,
      release: first.info.release,
      version: first.info.version,
      machine: first.machine,
      kernelVersion: first.kernelVersion,
      targetId: def.targetId,
      packages: [
        {
          name: 'kernel-headers',
          version: first.buildId,
          role: 'headers',
          repository: cos.headers,
          path: `${first.buildId}/kernel-headers.tgz`,
          sha256: first.info.sha256,
          size: first.info.size,
        },
      ],
    });
  }
  return kernels;
}
