// All output goes through one logger. On a terminal it can keep one live
// status line; in CI or when piped it prints plain lines only.

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
  debug(message: string): void;
  /** Replace the live status line (TTY only; ignored otherwise). */
  status(line: string): void;
  /** Clear the live status line before the process exits. */
  done(): void;
  readonly interactive: boolean;
}

export interface LoggerOptions {
  stream?: NodeJS.WriteStream | NodeJS.WritableStream;
  verbose?: boolean;
  quiet?: boolean;
  /** Force the CI form even on a terminal. */
  plain?: boolean;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const stream = (opts.stream ?? process.stderr) as NodeJS.WriteStream;
  const interactive = !opts.plain && !process.env['CI'] && stream.isTTY === true;
  let statusShown = false;
  const clear = () => {
    if (statusShown) {
      stream.write('\r\x1b[2K');
      statusShown = false;
    }
  };
  const line = (text: string) => {
    clear();
    stream.write(`${text}\n`);
  };
  return {
    interactive,
    info: (m) => {
      if (!opts.quiet) line(m);
    },
    warn: (m) => line(`warning: ${m}`),
    error: (m) => line(`error: ${m}`),
    debug: (m) => {
      if (opts.verbose) line(`debug: ${m}`);
    },
    status: (m) => {
      if (!interactive || opts.quiet) return;
      const width = stream.columns ?? 100;
      stream.write(`\r\x1b[2K${m.length > width - 1 ? m.slice(0, width - 1) : m}`);
      statusShown = true;
    },
    done: clear,
  };
}

/** A logger that records lines, for tests and for capturing a target's log. */
export function createMemoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    interactive: false,
    info: (m) => lines.push(m),
    warn: (m) => lines.push(`warning: ${m}`),
    error: (m) => lines.push(`error: ${m}`),
    debug: (m) => lines.push(`debug: ${m}`),
    status: () => {},
    done: () => {},
  };
}
