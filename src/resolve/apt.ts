import { access } from 'node:fs/promises';
import { dirname, isAbsolute, resolve as resolvePath } from 'node:path';
import { FalcoProbesError } from '../util/errors.js';
import { tryMirrors } from '../util/http.js';
import { checkKernelVersion, checkPackageName, checkRelease, checkTargetName, checkUnameVersion, checkVersion } from '../util/names.js';
import type { LoadedSourceDefinition } from '../config/source-definition.js';
import type { AptKernelSelection, Arch, KernelDescriptor, PackageRef, RepositoryDefinition } from '../config/types.js';
import { fetchAptRelease } from './apt-release.js';
import { fetchPackagesIndex, type AptPackage } from './apt-packages.js';
import { formatAlternative, parseDepends, type DependencyAlternative } from './apt-depends.js';
import { compareDebVersions, satisfiesRelation, upstreamVersion } from './deb-version.js';
import { fillTemplate } from './template.js';
import { definitionLocation } from './definition-location.js';
import { aptFallbackMirrors } from '../fetch/apt-sources.js';
import { mirrorsFor, type ResolveOptions, type Resolver } from './types.js';

// The apt resolver: per repository (mirrors in order), the signed Release and
// the Packages index of each component and architecture; then, per
// architecture, one kernel for each headers package, completed by the
// dependencies the definition says to follow, looked up across every
// repository of the definition (Debian's linux-kbuild-* may live in another
// suite than the headers).
//
// Roles in the lockfile: `headers` for the package a headers pattern matched;
// `followRoles[i]` (default `common`) for a package found through `follow[i]`;
// `image` for a package named by an `image` template.
//
// A repository serves the architectures its Release file lists (Ubuntu's
// amd64 archive and its arm64 ports archive are separate repositories of one
// definition); every architecture of the definition must be served by at
// least one. A headers rule may also require the package's pool folder
// (`filename`), as Ubuntu's flavours are told apart by their source package
// (`pool/main/l/linux-aws/`). A rule that matches no package in a whole
// resolve is a definition error naming the rule.

const DEBIAN_ARCH: Record<Arch, string> = { x86_64: 'amd64', aarch64: 'arm64' };

/** A package of one repository's index for one architecture. */
interface Candidate extends AptPackage {
  repository: string;
  /** Position of the repository in the definition: the tie-break that keeps the output deterministic. */
  repositoryOrder: number;
}

/** Every kept package of every repository for one architecture, by name, in repository order. */
type Pool = Map<string, Candidate[]>;

interface HeadersRule {
  /** Position in `apt.headers`, for error messages. */
  index: number;
  flavour: string;
  targetId: string;
  re: RegExp;
  filenameRe?: RegExp;
  /** The patterns as the definition writes them, for messages. */
  pattern: string;
  filename?: string;
  unameVersion: string;
  kernelVersion: string;
}

interface Rules {
  headers: HeadersRule[];
  follow: { re: RegExp; role: string }[];
  /** Each entry: alternatives of templates. */
  image: string[][];
  imageRes: RegExp[];
  versionPattern?: RegExp;
  legacyRelease?: string;
}

/** What each headers rule matched in a whole resolve (all architectures). */
interface RuleUse {
  matched: number;
  /** Packages whose name matched but whose pool path did not (for the error message). */
  wrongFolder: string[];
}

export const resolveAptSource: Resolver = async (source, options) => {
  const def = source.definition;
  if (!def.apt)
    throw new FalcoProbesError('config', 'an apt source definition needs an "apt" section', { location: { file: source.file } });
  const rules = compileRules(def.apt, def.targetId, source);
  const keep = (name: string) =>
    rules.headers.some((h) => h.re.test(name)) || rules.follow.some((f) => f.re.test(name)) || rules.imageRes.some((r) => r.test(name));

  const pools = new Map<Arch, Pool>(def.architectures.map((a) => [a, new Map()]));
  const servedBy = new Map<Arch, string[]>(def.architectures.map((a) => [a, []]));
  for (const [order, repo] of def.repositories.entries()) {
    const indexes = await readRepository(source, repo, keep, options);
    for (const { arch, packages } of indexes) {
      servedBy.get(arch)!.push(repo.name);
      const pool = pools.get(arch)!;
      for (const p of packages) {
        const list = pool.get(p.name) ?? [];
        list.push({ ...p, repository: repo.name, repositoryOrder: order });
        pool.set(p.name, list);
      }
    }
  }
  for (const [arch, repos] of servedBy) {
    if (repos.length === 0)
      throw new FalcoProbesError(
        'config',
        `no repository of ${def.id} serves ${arch} (${DEBIAN_ARCH[arch]}): no Release file lists it in its Architectures`,
        {
          location: definitionLocation(source, ['architectures']),
          hint: `add a repository for ${DEBIAN_ARCH[arch]} (Ubuntu keeps arm64 on its ports archive) or remove ${arch} from architectures`,
        },
      );
  }

  const kernels: KernelDescriptor[] = [];
  const problems: string[] = [];
  const uses: RuleUse[] = rules.headers.map(() => ({ matched: 0, wrongFolder: [] }));
  for (const arch of def.architectures) {
    const built = kernelsOfArch(arch, pools.get(arch)!, rules, uses, source, options);
    kernels.push(...built.kernels);
    problems.push(...built.problems);
  }
  checkEveryRuleMatched(rules, uses, source);
  if (problems.length)
    throw new FalcoProbesError(
      'input',
      `${problems.length} kernel(s) of ${def.id} lack dependencies that the source definition says to follow`,
      {
        location: { file: source.file },
        details: problems.join('\n'),
        hint: 'a repository may be missing from the definition, or a mirror may serve an incomplete index; the lockfile is unchanged',
      },
    );
  options.logger?.info(`${def.id}: ${kernels.length} kernels from ${def.repositories.length} apt repositories`);
  return kernels;
};

function compileRules(apt: AptKernelSelection, defaultTargetId: string, source: LoadedSourceDefinition): Rules {
  const re = (pattern: string, path: (string | number)[]) => {
    try {
      return new RegExp(pattern, 'u');
    } catch (err) {
      throw new FalcoProbesError('config', `invalid regular expression: ${(err as Error).message}`, {
        location: definitionLocation(source, path),
      });
    }
  };
  if (apt.followRoles && apt.followRoles.length !== apt.follow.length)
    throw new FalcoProbesError(
      'config',
      `apt.followRoles has ${apt.followRoles.length} entries but apt.follow has ${apt.follow.length}; give one role per follow pattern`,
      {
        location: definitionLocation(source, ['apt', 'followRoles']),
      },
    );
  const image = (apt.image ?? []).map((entry) =>
    entry
      .split('|')
      .map((t) => t.trim())
      .filter((t) => t !== ''),
  );
  return {
    headers: apt.headers.map((h, index) => ({
      index,
      flavour: h.flavour,
      targetId: h.targetId ?? defaultTargetId,
      re: re(h.pattern, ['apt', 'headers', index, 'pattern']),
      pattern: h.pattern,
      ...(h.filename !== undefined ? { filenameRe: re(h.filename, ['apt', 'headers', index, 'filename']), filename: h.filename } : {}),
      unameVersion: h.unameVersion ?? apt.unameVersion,
      kernelVersion: h.kernelVersion ?? apt.kernelVersion,
    })),
    follow: apt.follow.map((pattern, i) => ({ re: re(pattern, ['apt', 'follow', i]), role: apt.followRoles?.[i] ?? 'common' })),
    image,
    imageRes: image.flat().map(templateToRegExp),
    ...(apt.versionPattern ? { versionPattern: re(apt.versionPattern, ['apt', 'versionPattern']) } : {}),
    ...(apt.legacyRelease !== undefined ? { legacyRelease: apt.legacyRelease } : {}),
  };
}

/** A headers rule that matched no package of any repository and architecture is a definition error. */
function checkEveryRuleMatched(rules: Rules, uses: RuleUse[], source: LoadedSourceDefinition): void {
  for (const rule of rules.headers) {
    const use = uses[rule.index]!;
    if (use.matched > 0) continue;
    const path = ['apt', 'headers', rule.index, use.wrongFolder.length ? 'filename' : 'pattern'];
    const what = use.wrongFolder.length
      ? `the filename pattern ${rule.filename} of flavour "${rule.flavour}" matched none of the ${use.wrongFolder.length} package(s) its name pattern matched`
      : `the headers pattern ${rule.pattern} of flavour "${rule.flavour}" matched no package in any repository`;
    throw new FalcoProbesError('config', what, {
      location: definitionLocation(source, path),
      ...(use.wrongFolder.length
        ? {
            details: use.wrongFolder
              .slice(0, 5)
              .map((f) => `  ${f}`)
              .join('\n'),
          }
        : {}),
      hint: 'a pattern that matches nothing is a typo or a flavour the distribution no longer ships; fix or remove it (the lockfile is unchanged)',
    });
  }
}

/** `linux-image-{release}` -> /^linux-image-.+$/: which names an image template could produce, to keep them while streaming. */
function templateToRegExp(template: string): RegExp {
  const parts = template.split(/\{[A-Za-z][A-Za-z0-9_]*\}/);
  return new RegExp(`^${parts.map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.+')}$`);
}

async function readRepository(
  source: LoadedSourceDefinition,
  repo: RepositoryDefinition,
  keep: (name: string) => boolean,
  options: ResolveOptions,
): Promise<{ arch: Arch; packages: AptPackage[] }[]> {
  const def = source.definition;
  const keyring =
    repo.keyring === undefined ? undefined : isAbsolute(repo.keyring) ? repo.keyring : resolvePath(dirname(source.file), repo.keyring);
  if (keyring) {
    try {
      await access(keyring);
    } catch {
      throw new FalcoProbesError('config', `repository "${repo.name}": keyring ${keyring} does not exist`, {
        location: { file: source.file },
        hint: 'install the keyring (for Debian: the debian-archive-keyring package) or fix the path (relative paths are relative to the definition)',
      });
    }
  }
  const suite = repo.suite!;
  const components = repo.components ?? ['main'];
  const mirrors = mirrorsFor(source, repo.name, options);
  const read = async (base: string) => {
    const release = await fetchAptRelease({
      base,
      suite,
      ...(keyring ? { keyring } : {}),
      ...(repo.checkValidUntil === false ? { checkValidUntil: false } : {}),
      repository: repo.name,
      http: options.http ?? {},
      ...(options.logger ? { logger: options.logger } : {}),
    });
    const out: { arch: Arch; packages: AptPackage[] }[] = [];
    for (const arch of def.architectures) {
      if (release.architectures && !release.architectures.includes(DEBIAN_ARCH[arch])) {
        options.logger?.debug(
          `${repo.name}: ${release.url} lists no ${DEBIAN_ARCH[arch]} (Architectures: ${release.architectures.join(' ')}); not read for ${arch}`,
        );
        continue;
      }
      const packages: AptPackage[] = [];
      for (const component of components) {
        const index = await fetchPackagesIndex({
          base,
          suite,
          component,
          arch: DEBIAN_ARCH[arch],
          release,
          keep,
          http: options.http ?? {},
          ...(options.logger ? { logger: options.logger } : {}),
        });
        options.logger?.info(`${repo.name}: ${index.url}: ${index.stanzas} packages read`);
        packages.push(...index.packages);
      }
      out.push({ arch, packages });
    }
    return out;
  };
  try {
    return await tryMirrors(mirrors, read);
  } catch (err) {
    // The definition's mirrors did not answer: apt's own mirrors of the same
    // archive are tried next, checked exactly alike (the Release signature
    // against the definition's keyring, every index by its hash).
    if (options.mirrorOverrides?.has(repo.name) || !(err instanceof FalcoProbesError) || err.kind !== 'network') throw err;
    const fallbacks = await aptFallbackMirrors(mirrors, options.aptSources ?? {});
    if (fallbacks.length === 0) throw err;
    options.logger?.debug(err.format());
    for (const f of fallbacks)
      options.logger?.warn(
        `${repo.name}: no mirror of ${source.relativePath} answered; trying ${f.url}, apt's mirror of ${f.path} (${f.file})`,
      );
    try {
      return await tryMirrors(
        fallbacks.map((f) => f.url),
        read,
      );
    } catch (fallbackErr) {
      if (!(fallbackErr instanceof FalcoProbesError) || fallbackErr.kind !== 'network') throw fallbackErr;
      throw new FalcoProbesError(
        'network',
        `repository "${repo.name}": neither the mirrors of ${source.relativePath} nor apt's mirrors of the same archive answered`,
        {
          location: { file: source.file },
          details: [err.format(), fallbackErr.format()].map((t) => t.replace(/^/gm, '  ')).join('\n'),
          hint: `check the network, or pass --mirror ${repo.name}=URL`,
        },
      );
    }
  }
}

/** Among candidates: the same version as the kernel's headers if there is one, else the newest; ties go to the earlier repository. */
function pick(candidates: Candidate[], preferredVersion: string): Candidate | undefined {
  const same = candidates.filter((c) => c.version === preferredVersion);
  if (same.length) return same.reduce((a, b) => (b.repositoryOrder < a.repositoryOrder ? b : a));
  let best: Candidate | undefined;
  for (const c of candidates) {
    if (!best) best = c;
    else {
      const d = compareDebVersions(c.version, best.version);
      if (d > 0 || (d === 0 && c.repositoryOrder < best.repositoryOrder)) best = c;
    }
  }
  return best;
}

function newest(candidates: Candidate[]): Candidate {
  return candidates.reduce((a, b) => {
    const d = compareDebVersions(b.version, a.version);
    return d > 0 || (d === 0 && b.repositoryOrder < a.repositoryOrder) ? b : a;
  });
}

function refFor(c: Candidate, role: string): PackageRef {
  return { name: c.name, version: c.version, role, repository: c.repository, path: c.filename, sha256: c.sha256, size: c.size };
}

/** The first rule whose name pattern matches `name` and whose filename pattern (if any) matches the package's file. */
function ruleFor(name: string, filename: string, rules: Rules, uses: RuleUse[], arch: Arch): HeadersRule | undefined {
  let named = false;
  for (const rule of rules.headers) {
    if (!rule.re.test(name)) continue;
    named = true;
    if (rule.filenameRe && !rule.filenameRe.test(filename)) continue;
    uses[rule.index]!.matched++;
    return rule;
  }
  if (named) for (const rule of rules.headers) if (rule.re.test(name)) uses[rule.index]!.wrongFolder.push(`${filename} (${arch})`);
  return undefined;
}

function kernelsOfArch(
  arch: Arch,
  pool: Pool,
  rules: Rules,
  uses: RuleUse[],
  source: LoadedSourceDefinition,
  options: ResolveOptions,
): { kernels: KernelDescriptor[]; problems: string[] } {
  const kernels: KernelDescriptor[] = [];
  const problems: string[] = [];
  const releases = new Map<string, string>();
  const names = [...pool.keys()].sort();
  for (const name of names) {
    if (!rules.headers.some((h) => h.re.test(name))) continue;
    const headers = newest(pool.get(name)!);
    const rule = ruleFor(name, headers.filename, rules, uses, arch);
    if (!rule) {
      options.logger?.debug(
        `${name} ${headers.version} (${arch}): ${headers.filename} is in no folder a headers rule of its name accepts; not a kernel`,
      );
      continue;
    }
    const where = { url: headers.indexUrl };
    const about = `package ${JSON.stringify(headers.name)} ${headers.version} (stanza at line ${headers.line})`;
    const release = rule.re.exec(name)?.groups?.['release'];
    if (release === undefined || release === '')
      throw new FalcoProbesError(
        'config',
        `headers pattern of flavour "${rule.flavour}" matched ${name} but its group (?<release>...) is empty`,
        {
          location: { file: source.file },
        },
      );
    withContext(about, where, () => {
      checkRelease(release, where);
      checkTargetName(release, where);
    });
    const other = releases.get(release);
    if (other !== undefined)
      throw new FalcoProbesError(
        'config',
        `headers packages ${other} and ${name} both give release ${release} (${arch}); make the headers patterns exclusive`,
        {
          location: { file: source.file },
        },
      );
    releases.set(release, name);

    const vars: Record<string, string> = {
      release,
      version: headers.version,
      upstream: upstreamVersion(headers.version),
      flavour: rule.flavour,
    };
    if (rules.versionPattern) {
      const m = rules.versionPattern.exec(headers.version);
      if (!m)
        throw new FalcoProbesError('input', `${about}: version does not match apt.versionPattern ${rules.versionPattern.source}`, {
          location: where,
        });
      for (const [k, v] of Object.entries(m.groups ?? {})) if (v !== undefined) vars[k] = v;
    }
    for (const [k, v] of Object.entries(rule.filenameRe?.exec(headers.filename)?.groups ?? {})) if (v !== undefined) vars[k] = v;

    const packages: PackageRef[] = [refFor(headers, 'headers')];
    const followed = followDependencies(headers, pool, rules);
    if (followed.missing.length) {
      problems.push(
        `  ${release} (${arch}, ${headers.name} ${headers.version} from ${headers.indexUrl}): missing ${followed.missing.join('; ')}`,
      );
      continue;
    }
    packages.push(...followed.found.map(({ pkg, role }) => refFor(pkg, role)));

    for (const alternatives of rules.image) {
      let found: Candidate | undefined;
      for (const template of alternatives) {
        const imageName = fillTemplate(template, vars);
        withContext(`image template ${JSON.stringify(template)} of ${about}`, where, () => checkPackageName(imageName, where));
        // An image of another version is another build of the kernel: only the headers' version will do.
        const sameVersion = (pool.get(imageName) ?? []).filter((c) => c.version === headers.version);
        found = sameVersion.length ? sameVersion.reduce((a, b) => (b.repositoryOrder < a.repositoryOrder ? b : a)) : undefined;
        if (found) break;
      }
      if (found) packages.push(refFor(found, 'image'));
      else
        options.logger?.debug(
          `${release} (${arch}): no image package ${alternatives.map((t) => fillTemplate(t, vars)).join(' | ')} at version ${headers.version}`,
        );
    }

    const version = fillTemplate(rule.unameVersion, vars);
    const kernelVersion = fillTemplate(rule.kernelVersion, vars);
    const legacyRelease = rules.legacyRelease === undefined ? release : fillTemplate(rules.legacyRelease, vars);
    withContext(about, where, () => {
      checkUnameVersion(version, where);
      checkKernelVersion(kernelVersion, where);
      checkRelease(legacyRelease, where);
    });
    kernels.push({
      name: release,
      release,
      version,
      machine: arch,
      kernelVersion,
      targetId: rule.targetId,
      flavour: rule.flavour,
      ...(legacyRelease !== release ? { legacyRelease } : {}),
      packages,
    });
  }
  return { kernels, problems };
}

/**
 * Follow the `Depends` of a headers package (and of what it pulls in) whose
 * names match a follow pattern. For `a | b`, the first alternative that matches
 * a pattern and is present with a satisfying version is used.
 */
function followDependencies(root: Candidate, pool: Pool, rules: Rules): { found: { pkg: Candidate; role: string }[]; missing: string[] } {
  const found: { pkg: Candidate; role: string }[] = [];
  const missing: string[] = [];
  const seen = new Set<string>([root.name]);
  const queue: Candidate[] = [root];
  while (queue.length) {
    const pkg = queue.shift()!;
    const where = { url: pkg.indexUrl };
    const about = `package ${JSON.stringify(pkg.name)} ${pkg.version} (stanza at line ${pkg.line})`;
    const parsed = parseDepends(pkg.depends);
    if ('error' in parsed)
      throw new FalcoProbesError('input', `${about}: malformed Depends entry ${JSON.stringify(parsed.error)}`, { location: where });
    for (const group of parsed.groups) {
      const relevant: { alt: DependencyAlternative; role: string }[] = [];
      for (const alt of group) {
        const rule = rules.follow.find((f) => f.re.test(alt.name));
        if (!rule) continue;
        withContext(`${about}, Depends`, where, () => {
          checkPackageName(alt.name, where);
          if (alt.version !== undefined) checkVersion(alt.version, where);
        });
        relevant.push({ alt, role: rule.role });
      }
      if (!relevant.length) continue;
      let chosen: { pkg: Candidate; role: string } | undefined;
      for (const { alt, role } of relevant) {
        const satisfying = (pool.get(alt.name) ?? []).filter(
          (c) => alt.relation === undefined || satisfiesRelation(c.version, alt.relation, alt.version!),
        );
        const c = pick(satisfying, root.version);
        if (c) {
          chosen = { pkg: c, role };
          break;
        }
      }
      if (!chosen) {
        const present = relevant.flatMap(({ alt }) => (pool.get(alt.name) ?? []).map((c) => `${c.name} ${c.version}`));
        missing.push(
          `${relevant.map(({ alt }) => formatAlternative(alt)).join(' | ')}${present.length ? ` (found only ${present.join(', ')})` : ' (in no repository)'}`,
        );
        continue;
      }
      if (seen.has(chosen.pkg.name)) continue;
      seen.add(chosen.pkg.name);
      found.push(chosen);
      queue.push(chosen.pkg);
    }
  }
  return { found, missing };
}

/** Run checks, prefixing their refusal with which package (and which URL) the value came from. */
function withContext(about: string, location: { url: string }, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    if (err instanceof FalcoProbesError && err.kind === 'input')
      throw new FalcoProbesError('input', `${about}: ${err.message}`, { location });
    throw err;
  }
}
