import { FalcoProbesError, type ErrorLocation } from './errors.js';

// Strict character sets for everything that comes from a mirror and may
// later reach a file path, a BUILD file, a Makefile or a shell (docs/ARCHITECTURE.md,
// invariant 4). Each rule is an allow-list; anything else is refused.

export const PACKAGE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$/;
/** Package versions: Debian (`1:6.1.176-1~deb12u1`) and RPM (`4.14.232`, `176.381.amzn2`). */
export const VERSION_RE = /^[A-Za-z0-9][A-Za-z0-9.+~:_-]{0,127}$/;
/** `uname -r`. */
export const RELEASE_RE = /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$/;
/** `uname -v`: printable text without shell or quoting metacharacters. */
export const UNAME_VERSION_RE = /^[A-Za-z0-9#][A-Za-z0-9 #._:+~(),/-]{0,255}$/;
/** Falco's kernelversion (the number after `#`, or Ubuntu's `24~20.04.3`). */
export const KERNEL_VERSION_RE = /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$/;
/**
 * Please and Make target names (docs/ARCHITECTURE.md, "Please and Make"). The first
 * character is a letter or digit: a leading `-` would read as an option in
 * the recipes' command lines, a leading `~` as a home directory to the shell.
 */
export const TARGET_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,254}$/;
/** Identifiers we define ourselves: OS ids, repository names, driver names, target ids. */
export const IDENT_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const SHA256_RE = /^[0-9a-f]{64}$/;
/** One segment of a repository-relative path (`%` for Debian's escaped epochs). */
export const PATH_SEGMENT_RE = /^[A-Za-z0-9_+~%-][A-Za-z0-9._+~%-]{0,254}$/;
/**
 * A whole relative path: segments by PATH_SEGMENT_RE joined with single
 * `/`. A segment cannot start with `.`, so `.` and `..` never match, nor
 * does an empty segment (a leading, trailing or doubled `/`).
 */
const RELATIVE_PATH_RE = /^[A-Za-z0-9_+~%-][A-Za-z0-9._+~%-]{0,254}(?:\/[A-Za-z0-9_+~%-][A-Za-z0-9._+~%-]{0,254})*$/;
/** os-release values: printable, no quotes, backslashes, `$` or backticks. */
export const OS_RELEASE_VALUE_RE = /^[A-Za-z0-9 ._:+~(),/@=-]{0,200}$/;
export const OS_RELEASE_KEY_RE = /^[A-Z][A-Z0-9_]{0,63}$/;

function refuse(what: string, value: string, rule: string, location?: ErrorLocation): never {
  throw new FalcoProbesError('input', `refusing ${what} ${JSON.stringify(value)}: ${rule}`, {
    location: location ?? {},
  });
}

export function checkPackageName(value: string, location?: ErrorLocation): string {
  if (!PACKAGE_NAME_RE.test(value)) refuse('package name', value, 'allowed are letters, digits and . _ + -', location);
  return value;
}

export function checkVersion(value: string, location?: ErrorLocation): string {
  if (!VERSION_RE.test(value)) refuse('version', value, 'allowed are letters, digits and . + ~ : _ -', location);
  return value;
}

export function checkRelease(value: string, location?: ErrorLocation): string {
  if (!RELEASE_RE.test(value) || value.includes('..'))
    refuse('kernel release', value, 'allowed are letters, digits and . _ + ~ - (no "..")', location);
  return value;
}

export function checkUnameVersion(value: string, location?: ErrorLocation): string {
  if (!UNAME_VERSION_RE.test(value)) refuse('uname -v', value, 'allowed are letters, digits, spaces and # . _ : + ~ ( ) , / -', location);
  return value;
}

export function checkKernelVersion(value: string, location?: ErrorLocation): string {
  if (!KERNEL_VERSION_RE.test(value) || value.includes('..'))
    refuse('kernel version', value, 'allowed are letters, digits and . _ + ~ -', location);
  return value;
}

export function checkSha256(value: string, location?: ErrorLocation): string {
  if (!SHA256_RE.test(value)) refuse('sha256', value, 'expected 64 lower-case hex digits', location);
  return value;
}

export function checkIdent(value: string, what: string, location?: ErrorLocation): string {
  if (!IDENT_RE.test(value))
    refuse(what, value, 'allowed are lower-case letters, digits and . _ - (starting with a letter or digit)', location);
  return value;
}

/**
 * A path relative to a repository root, as found in `Filename:` or
 * `<location href>`: no leading `/`, no `.` or `..` segments, no empty
 * segments, only safe characters.
 */
export function checkRelativePath(value: string, location?: ErrorLocation): string {
  // One regular expression for the whole path (planning checks one per published file: bench/noop.ts).
  if (value.length > 1024 || !RELATIVE_PATH_RE.test(value))
    refuse('repository path', value, 'expected a relative path of letters, digits and . _ + ~ % - segments, without "." or ".."', location);
  return value;
}

/**
 * One file name (no `/`), by the rules of one segment of a repository path:
 * what a probe file name must be before it is joined into any directory.
 */
export function checkFileName(value: string, location?: ErrorLocation): string {
  if (!PATH_SEGMENT_RE.test(value))
    refuse('file name', value, 'expected one path segment of letters, digits and . _ + ~ % - (no "/", not starting with ".")', location);
  return value;
}

/** A Please/Make target name: docs/ARCHITECTURE.md's rules, plus no `..` and not `all`. */
export function isValidTargetName(value: string): boolean {
  return TARGET_NAME_RE.test(value) && value !== 'all' && !value.includes('..');
}

export function checkTargetName(value: string, location?: ErrorLocation): string {
  if (!isValidTargetName(value))
    refuse('target name', value, 'allowed are letters, digits and . + ~ - _, starting with a letter or digit (not "all")', location);
  return value;
}

export function checkOsReleaseEntry(key: string, value: string, location?: ErrorLocation): void {
  if (!OS_RELEASE_KEY_RE.test(key)) refuse('os-release key', key, 'expected upper-case letters, digits and _', location);
  if (!OS_RELEASE_VALUE_RE.test(value)) refuse(`os-release value of ${key}`, value, 'no quotes, backslashes, $ or backticks', location);
}
