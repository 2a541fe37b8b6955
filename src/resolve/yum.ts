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
import { definitionLocation } from './definition-location.js';
import type { ResolveOptions, Resolver } from './types.js';

// The yum resolver: for each repository and architecture of a source
// definition, find the base URL (mirrors in order, mirror.list where the
// definition says so), read repomd.xml and the primary metadata, and turn each
// `yum.devel` package into a kernel descriptor. uname -r of an RPM kernel is
// `<version>-<release>.<arch>`; uname -v and Falco's kernelversion come from the
// definition's templates, since yum metadata does not hold them (docs/OS.md).
//
// A kernel is found in the first repository (in definition order) that lists
// its devel package; its image may come from any repository of the
// definition (RHEL's clones keep kernel-devel in AppStream and kernel-core in
// BaseOS). A `yum.devel` entry may be a flavour of its own (Oracle's
// kernel-uek-devel) with its own target id, templates and image names. An
// entry that matches no package in a whole resolve is a definition error.

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
  /** Position of its repository in the definition. */
  repositoryOrder: number;
  url: string;
}

/** A `yum.devel` entry with the selection's defaults filled in. */
interface DevelRule {
  index: number;
  name: string;
  flavour?: string;
  targetId: string;
  unameVersion: string;
  kernelVersion: string;
  images: string[];
}

export const resolveYumSource: Resolver = async (source, options) => {
  const def = source.definition;
  const selection = def.yum;
  if (!selection)
    throw new FalcoProbesError('config', 'a yum source definition needs a "yum" section', { location: { file: source.file } });
  const rules = develRules(selection, def.targetId);
  const wanted = new Set(rules.flatMap((r) => [r.name, ...r.images]));
  const byArch = new Map<Arch, RpmPackage[]>(def.architectures.map((a) => [a, []]));

  for (const [order, repo] of def.repositories.entries()) {
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
      const packages = listing.packages.map((record) => validatePackage(record, repo.name, order, listing, selection));
      byArch.get(arch)!.push(...packages.filter((p) => p.arch === arch));
      const devel = packages.filter((p) => p.arch === arch && rules.some((r) => r.name === p.name)).length;
      options.logger?.info(
        `${def.id}: ${repo.name} ${arch}: ${devel} devel packages among ${listing.packageCount} packages from ${listing.base}`,
      );
    }
  }

  const kernels: KernelDescriptor[] = [];
  for (const arch of def.architectures) kernels.push(...kernelsOfArch(source, rules, arch, byArch.get(arch)!, options));
  checkEveryRuleMatched(source, rules, byArch);
  return kernels;
};

function develRules(selection: YumKernelSelection, defaultTargetId: string): DevelRule[] {
  return selection.devel.map((entry, index) => {
    const e = typeof entry === 'string' ? { name: entry } : entry;
    const flavour = e.flavour ?? selection.flavour;
    return {
      index,
      name: e.name,
      ...(flavour !== undefined ? { flavour } : {}),
      targetId: e.targetId ?? selection.targetId ?? defaultTargetId,
      unameVersion: e.unameVersion ?? selection.unameVersion,
      kernelVersion: e.kernelVersion ?? selection.kernelVersion,
      images: e.kernel ?? selection.kernel ?? [],
    };
  });
}

async function readRepository(base: string, wanted: ReadonlySet<string>, options: ResolveOptions): Promise<RepositoryListing> {
  const repomd = await readRepomd(base, options.http);
  options.logger?.debug(`${repomd.url}: primary metadata ${repomd.primary.href}`);
  const listing = await readPrimary(joinUrl(base, repomd.primary.href), repomd.primary, wanted, options.http);
  return { ...listing, base };
}

/** The kernels of one architecture, from the devel packages of every repository (first repository first). */
function kernelsOfArch(
  source: LoadedSourceDefinition,
  rules: DevelRule[],
  arch: Arch,
  packages: RpmPackage[],
  options: ResolveOptions,
): KernelDescriptor[] {
  const byRelease = new Map<string, { kernel: KernelDescriptor; pkg: RpmPackage }>();
  const ordered = [...packages].sort((a, b) => a.repositoryOrder - b.repositoryOrder);
  for (const pkg of ordered) {
    const rule = rules.find((r) => r.name === pkg.name);
    if (!rule) continue;
    const release = rpmKernelRelease(pkg.version, pkg.release, pkg.arch);
    const where = { url: pkg.url, what: `package ${pkg.name}-${pkg.ref.version}.${pkg.arch}` };
    guarded(where, () => {
      checkRelease(release);
      checkTargetName(release);
    });
    const seen = byRelease.get(release);
    if (seen) {
      if (seen.pkg.repositoryOrder !== pkg.repositoryOrder) {
        // The same build can be in more than one repository (core/2.0 and core/latest): the first in definition order wins.
        options.logger?.debug(`${pkg.ref.repository} ${arch}: ${release} already found in ${seen.pkg.ref.repository}`);
        continue;
      }
      // The same build listed twice is harmless when it is the same file; two different files for one kernel are not.
      if (seen.pkg.ref.sha256 === pkg.ref.sha256) continue;
      throw new FalcoProbesError('input', `${pkg.name} ${pkg.ref.version} (${arch}) is listed twice with different files`, {
        location: { url: pkg.url },
        details: `  ${seen.pkg.ref.path}\n  ${pkg.ref.path}`,
      });
    }
    const packageRefs: PackageRef[] = [{ ...pkg.ref, role: 'devel' }];
    const image = imageOf(pkg, rule, ordered);
    if (image) packageRefs.push({ ...image.ref, role: 'image' });
    byRelease.set(release, { kernel: describeKernel(source, rule, release, pkg, arch, packageRefs, where), pkg });
  }
  return [...byRelease.values()].map((k) => k.kernel);
}

/** The first image package name of the rule present with the devel package's epoch, version, release and arch (earliest repository first). */
function imageOf(devel: RpmPackage, rule: DevelRule, packages: RpmPackage[]): RpmPackage | undefined {
  for (const name of rule.images) {
    const image = packages.find(
      (p) =>
        p.name === name && p.arch === devel.arch && p.epoch === devel.epoch && p.version === devel.version && p.release === devel.release,
    );
    if (image) return image;
  }
  return undefined;
}

/** A `yum.devel` entry that names no package of the definition's architectures in any repository is a definition error. */
function checkEveryRuleMatched(source: LoadedSourceDefinition, rules: DevelRule[], byArch: Map<Arch, RpmPackage[]>): void {
  for (const rule of rules) {
    if ([...byArch.values()].some((list) => list.some((p) => p.name === rule.name))) continue;
    const entry = source.definition.yum!.devel[rule.index];
    throw new FalcoProbesError(
      'config',
      `yum.devel names package "${rule.name}", which no repository lists for ${source.definition.architectures.join(' or ')}`,
      {
        location: definitionLocation(
          source,
          typeof entry === 'string' ? ['yum', 'devel', rule.index] : ['yum', 'devel', rule.index, 'name'],
        ),
        hint: 'a name that matches nothing is a typo or a package the distribution no longer ships; fix or remove it (the lockfile is unchanged)',
      },
    );
  }
}

function describeKernel(
  source: LoadedSourceDefinition,
  rule: DevelRule,
  release: string,
  pkg: RpmPackage,
  machine: Arch,
  packages: PackageRef[],
  where: Where,
): KernelDescriptor {
  const vars = { release, version: pkg.version, rpmRelease: pkg.release, arch: pkg.arch, flavour: rule.flavour };
  const fill = (template: string, what: string) => {
    try {
      return fillTemplate(template, vars);
    } catch (err) {
      if (err instanceof FalcoProbesError)
        throw new FalcoProbesError('config', `yum.${what}: ${err.message}`, {
          location: { file: source.file },
          ...(err.hint ? { hint: err.hint } : {}),
        });
      throw err;
    }
  };
  const version = fill(rule.unameVersion, 'unameVersion');
  const kernelVersion = fill(rule.kernelVersion, 'kernelVersion');
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
    targetId: rule.targetId,
    ...(rule.flavour !== undefined ? { flavour: rule.flavour } : {}),
    packages,
  };
}

/** Check every value of a kept package before any of it is used; errors name the URL, the package and its line. */
function validatePackage(
  record: RpmPackageRecord,
  repository: string,
  repositoryOrder: number,
  listing: RepositoryListing,
  selection: YumKernelSelection,
): RpmPackage {
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
    if (!/^[0-9]{1,15}$/.test(record.size))
      throw new FalcoProbesError('input', `its <size package> ${JSON.stringify(record.size)} is not a whole number`);
    if (record.xmlBase !== undefined)
      throw new FalcoProbesError(
        'input',
        `its location has an xml:base (${JSON.stringify(record.xmlBase)}): packages outside the repository are not supported`,
      );
    const path = packagePath(record.href, listing.base, selection.packageRoot);
    return {
      name,
      arch,
      epoch,
      version,
      release,
      repositoryOrder,
      url: listing.url,
      ref: { name, version: evr, repository, path, sha256, size: Number(record.size) },
    };
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
      throw new FalcoProbesError('input', `${where.what}: ${err.message}`, {
        location: { url: where.url },
        ...(err.hint ? { hint: err.hint } : {}),
      });
    throw err;
  }
}
