// Typed failures. Every module throws (or returns) these; the CLI turns them
// into one message and an exit code in a single place (src/cli/main.ts).

export type ErrorKind =
  | 'usage' // bad command line
  | 'config' // a source definition, pin file or lockfile that fails its schema or rules
  | 'input' // untrusted data (a mirror's metadata, an archive) that breaks a rule
  | 'network' // HTTP failures after retries
  | 'checksum' // sha256/size mismatch
  | 'stale' // --check found something out of date
  | 'removal' // a resolve would drop kernels
  | 'build' // a compile failed
  | 'reproducibility' // a rebuild gave other bytes than the published probe
  | 'docker'
  | 'lock' // another process holds a lock
  | 'io' // the machine's file system refused a write: no space left, quota exceeded
  | 'internal';

export interface ErrorLocation {
  file?: string;
  line?: number;
  column?: number;
  url?: string;
}

export class FalcoProbesError extends Error {
  readonly kind: ErrorKind;
  readonly location: ErrorLocation;
  readonly hint: string | undefined;
  readonly details: string | undefined;

  constructor(kind: ErrorKind, message: string, opts: { location?: ErrorLocation; hint?: string; details?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'FalcoProbesError';
    this.kind = kind;
    this.location = opts.location ?? {};
    this.hint = opts.hint;
    this.details = opts.details;
  }

  /** `file:line:col: message` (or `url: message`), as compilers print it. */
  format(): string {
    const { file, line, column, url } = this.location;
    let where = '';
    if (file !== undefined) {
      where = file;
      if (line !== undefined) where += `:${line}`;
      if (line !== undefined && column !== undefined) where += `:${column}`;
      where += ': ';
    } else if (url !== undefined) {
      where = `${url}: `;
    }
    let text = `${where}${this.message}`;
    if (this.details) text += `\n${this.details}`;
    if (this.hint) text += `\nhint: ${this.hint}`;
    return text;
  }
}

/** Exit codes: 1 for "the answer is no / something failed", 2 for bad input or usage. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof FalcoProbesError) return isBadInput(err.kind) ? 2 : 1;
  if (isNoSpace(err)) return 1; // the machine, not this tool
  return 70; // an unexpected exception: a bug in this tool
}

/** Whether errors of `kind` are bad input (a command line, a definition, a pin file, a lockfile), which exits 2 rather than 1. */
export function isBadInput(kind: ErrorKind): boolean {
  return kind === 'usage' || kind === 'config';
}

const FULL = new Set(['ENOSPC', 'EDQUOT']);

/** Whether `err` is a file system's "no space left" (or "quota exceeded"). */
export function isNoSpace(err: unknown): boolean {
  return FULL.has((err as NodeJS.ErrnoException | null)?.code ?? '');
}

/**
 * A write to `file` failed: when the file system is full, an `io` error that
 * names the file (Node's ENOSPC from write() names none); anything else as it
 * was. For `catch (err) { throw fileSystemError(err, file); }`.
 */
export function fileSystemError(err: unknown, file: string): unknown {
  if (!isNoSpace(err) || err instanceof FalcoProbesError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  return new FalcoProbesError('io', `${code === 'EDQUOT' ? 'disk quota exceeded' : 'no space left on the device'} writing ${file}`, {
    location: { file },
    cause: err,
    hint: 'free space on that file system (the package cache, $FALCO_PROBES_CACHE, holds downloaded packages, unpacked trees and kernel roots; it can be removed at will), then run again',
  });
}

/** The kind a failure is reported under: a FalcoProbesError's own, `io` for a full file system, else `internal`. */
export function errorKindOf(err: unknown): ErrorKind {
  if (err instanceof FalcoProbesError) return err.kind;
  return isNoSpace(err) ? 'io' : 'internal';
}

export function errorMessage(err: unknown): string {
  if (err instanceof FalcoProbesError) return err.format();
  if (isNoSpace(err)) {
    const path = (err as NodeJS.ErrnoException).path;
    return `${path ? `${path}: ` : ''}${(err as Error).message}\nhint: free space on that file system (the package cache, $FALCO_PROBES_CACHE, can be removed at will), then run again`;
  }
  if (err instanceof Error) return err.message;
  return String(err);
}
