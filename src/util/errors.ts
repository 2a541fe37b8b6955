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

  constructor(
    kind: ErrorKind,
    message: string,
    opts: { location?: ErrorLocation; hint?: string; details?: string; cause?: unknown } = {},
  ) {
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
  if (err instanceof FalcoProbesError) {
    switch (err.kind) {
      case 'usage':
      case 'config':
        return 2;
      default:
        return 1;
    }
  }
  return 70; // an unexpected exception: a bug in this tool
}

export function isFalcoProbesError(err: unknown): err is FalcoProbesError {
  return err instanceof FalcoProbesError;
}

export function errorMessage(err: unknown): string {
  if (err instanceof FalcoProbesError) return err.format();
  if (err instanceof Error) return err.message;
  return String(err);
}
