import { FalcoProbesError } from '../util/errors.js';
import { joinUrl } from '../util/http.js';
import {
  checkKernelVersion,
  checkPackageName,
  checkRelease,
  checkSha256,
  checkTargetName,
  checkUnameVersion,
  checkVersion,
} from '../util/names.js';
import type { Arch, KernelDescriptor, PackageRef, YumKernelSelection } from '../config/types.js';
import type { LoadedSourceDefinition } from '../config/source-definition.js';
import { fillTemplate } from './template.js';
import { checkRpmArch, checkRpmEpoch, rpmEvr, rpmKernelRelease } from './rpm-version.js';
import { packagePath, withYumBase } from './yum-locations.js';
import { readRepomd } from './yum-repomd.js';
import { readPrimary, type PrimaryListing, type RpmPackageRecord } from './yum-primary.js';
import type { ResolveOptions, Resolver } from './types.js';

// The yum resolver: for each repository and architecture of a source
// definition, find the base URL (mirrors in order, mirror.list where the
// definition says so), read repomd.xml and the primary metadata, and turn each
// `yum.devel` package into a kernel descriptor. uname -r of an RPM kernel is
// `<version>-<release>.<arch>`; uname -v and Falco's kernelversion come from the
// definition's templates, since yum metadata does not hold them (docs/OS.md).

interface RepositoryListing extends PrimaryListing {
  base: string;
}

/** A validated package from the primary metadata. */
interface RpmPackage {
  name: string;
  arch: string;
  epoch: string;
  version: string;
  release: string;
  ref: PackageRef;
}

export const resolveYumSource: Resolver = async (source, options) => {
  const def = source.definition;
  const selection = def.yum;
  if (!selection) throw new FalcoProbesError('config', 'a yum source definition needs a "yum" section', { location: { file: source.file } });
  const wanted = new Set([...selection.devel, ...(selection.kernel ?? [])]);
  const kernels = new Map<string, KernelDescriptor>();

  for (const repo of def.repositories) {
    // Two architectures may share one base URL (a repository without $basearch): read it once.
    const listings = new Map<string, Promise<RepositoryListing>>();
    for (const arch of def.architectures) {
      const listing = await withYumBase(source, repo.name, arch, options, (base) => {
        let pending = listings.get(base);
        if (!pending) {
          pending = readRepository(base, wanted, options);
          listings.set(base, pending);
        }
        return pending;
      });
      const found = kernelsFromListing(source, selection, repo.name, arch, listing);
      let added = 0;
      for (const kernel of found) {
        // The same build can be in more than one repository (core/2.0 and core/latest): the first in definition order wins.
        if (kernels.has(kernel.name)) {
          options.logger?.debug(`${repo.name} ${arch}: ${kernel.name} already found in an earlier repository`);
          continue;
        }
        kernels.set(kernel.name, kernel);
        added++;
      }
      options.logger?.info(`${def.id}: ${repo.name} ${arch}: ${found.length} kernels (${added} new) among ${listing.packageCount} packages from ${listing.base}`);
    }
  }
  return [...kernels.values()];
};

async function readRepository(base: string, wanted: ReadonlySet<string>, options: ResolveOptions): Promise<RepositoryListing> {
  const repomd = await readRepomd(base, options.http);
  options.logger?.debug(`${repomd.url}: primary metadata ${repomd.primary.href}`);
  const listing = await readPrimary(joinUrl(base, repomd.primary.href), repomd.primary, wanted, options.http);
  return { ...listing, base };
}

/** The kernels of one architecture in one repository's listing. */
function kernelsFromListing(
  source: LoadedSourceDefinition,
  selection: YumKernelSelection,
  repository: string,
  arch: Arch,
  listing: RepositoryListing,
): KernelDescriptor[] {
  const packages = listing.packages.map((record) => validatePackage(record, repository, listing, selection));
  const devel = new Set(selection.devel);
  const images = selection.kernel ?? [];
  const byRelease = new Map<string, KernelDescriptor>();
  for (const pkg of packages) {
    if (!devel.has(pkg.name) || pkg.arch !== arch) continue;
    const release = rpmKernelRelease(pkg.version, pkg.release, pkg.arch);
    const where = { url: listing.url, what: `package ${pkg.name}-${pkg.ref.version}.${pkg.arch}` };
    guarded(where, () => {
      checkRelease(release);
      checkTargetName(release);
    });
    const packageRefs: PackageRef[] = [{ ...pkg.ref, role: 'devel' }];
    for (const imageName of images) {
      const image = packages.find(
        (p) => p.name === imageName && p.arch === pkg.arch && p.epoch === pkg.epoch && p.version === pkg.version && p.release === pkg.release,
      );
      if (image) {
        packageRefs.push({ ...image.ref, role: 'image' });
        break;
      }
    }
    const kernel = describeKernel(source, selection, release, pkg, arch, packageRefs, where);
    const seen = byRelease.get(release);
    if (seen) {
      // The same build listed twice is harmless when it is the same file; two different files for one kernel are not.
      if (seen.packages[0]!.sha256 === pkg.ref.sha256) continue;
      throw new FalcoProbesError('input', `${pkg.name} ${pkg.ref.version} (${arch}) is listed twice with different files`, {
        location: { url: listing.url },
        details: `  ${seen.packages[0]!.path}\n  ${pkg.ref.path}`,
      });
    }
    byRelease.set(release, kernel);
  }
  return [...byRelease.values()];
}

function describeKernel(
  source: LoadedSourceDefinition,
  selection: YumKernelSelection,
  release: string,
  pkg: RpmPackage,
  machine: Arch,
  packages: PackageRef[],
  where: Where,
): KernelDescriptor {
  const vars = { release, version: pkg.version, rpmRelease: pkg.release, arch: pkg.arch, flavour: selection.flavour };
  const fill = (template: string, what: string) => {
    try {
      return fillTemplate(template, vars);
    } catch (err) {
      if (err instanceof FalcoProbesError)
        throw new FalcoProbesError('config', `yum.${what}: ${err.message}`, { location: { file: source.file }, ...(err.hint ? { hint: err.hint } : {}) });
      throw err;
    }
  };
  const version = fill(selection.unameVersion, 'unameVersion');
  const kernelVersion = fill(selection.kernelVersion, 'kernelVersion');
  guarded(where, () => {
    checkUnameVersion(version);
    checkKernelVersion(kernelVersion);
  });
  return {
    name: release,
    release,
    version,
    machine,
    kernelVersion,
    targetId: selection.targetId ?? source.definition.targetId,
    ...(selection.flavour !== undefined ? { flavour: selection.flavour } : {}),
    packages,
  };
}

/** Check every value of a kept package before any of it is used; errors name the URL, the package and its line. */
function validatePackage(record: RpmPackageRecord, repository: string, listing: RepositoryListing, selection: YumKernelSelection): RpmPackage {
  const where = { url: listing.url, what: `package ${record.name} (line ${record.line})` };
  return guarded(where, () => {
    const name = checkPackageName(record.name);
    const arch = checkRpmArch(record.arch);
    const epoch = checkRpmEpoch(record.epoch === '' ? '0' : record.epoch);
    const version = checkVersion(record.version);
    const release = checkVersion(record.release);
    const evr = checkVersion(rpmEvr(epoch, version, release));
    if (record.checksumType !== 'sha256')
      throw new FalcoProbesError('input', `its checksum type is ${JSON.stringify(record.checksumType)}; only sha256 is accepted`);
    const sha256 = checkSha256(record.checksum.trim().toLowerCase());
    if (!/^[0-9]{1,15}$/.test(record.size)) throw new FalcoProbesError('input', `its <size package> ${JSON.stringify(record.size)} is not a whole number`);
    if (record.xmlBase !== undefined)
      throw new FalcoProbesError('input', `its location has an xml:base (${JSON.stringify(record.xmlBase)}): packages outside the repository are not supported`);
    const path = packagePath(record.href, listing.base, selection.packageRoot);
    return { name, arch, epoch, version, release, ref: { name, version: evr, repository, path, sha256, size: Number(record.size) } };
  });
}

interface Where {
  url: string;
  what: string;
}

/** Run checks, turning their failures into one message that names the URL and the package. */
function guarded<T>(where: Where, check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (err instanceof FalcoProbesError && err.kind === 'input')
      throw new FalcoProbesError('input', `${where.what}: ${err.message}`, { location: { url: where.url }, ...(err.hint ? { hint: err.hint } : {}) });
    throw err;
  }
}
