import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { FalcoProbesError } from '../util/errors.js';

// A kernel module must be compiled by the compiler its kernel was compiled
// with: another gcc can lay structures out differently or miss plugins the
// kernel's configuration assumes, and kbuild only warns. The kernel's
// headers record that compiler in `.config` as CONFIG_CC_VERSION_TEXT, the
// first line of its `--version` ("gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0";
// Debian 12's 6.12 kernels say "x86_64-linux-gnu-gcc-12 (...)", the same gcc
// under its triplet name).
//
// A compiler's identity here is that line without its first word (the
// program name): "(Debian 12.2.0-14+deb12u1) 12.2.0". Two programs with the
// same identity are the same compiler release of the same vendor.

const execFileAsync = promisify(execFile);

/** Program names that may be run: no paths, no shell characters. */
const PROGRAM_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/;

/** Whether a compiler's program name (`gcc-12`) is a plain name that may go onto a command line. */
export function isPlainProgram(name: string): boolean {
  return PROGRAM_RE.test(name);
}
/** What a version line may hold before it is written to a log, a key or an error. */
const VERSION_TEXT_RE = /^[A-Za-z0-9 ._+~(),:/-]{1,200}$/;

export interface CompilerText {
  /** The whole first line: `gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0`. */
  text: string;
  /** Its first word: `gcc-12`. */
  program: string;
  /** The rest: `(Debian 12.2.0-14+deb12u1) 12.2.0`. */
  identity: string;
}

export function parseCompilerText(line: string, where: string): CompilerText {
  const text = line.trim().replace(/\s+/g, ' ');
  if (!VERSION_TEXT_RE.test(text))
    throw new FalcoProbesError('build', `unexpected compiler version text ${JSON.stringify(text)}`, { location: { file: where } });
  const space = text.indexOf(' ');
  if (space < 0)
    throw new FalcoProbesError('build', `compiler version text ${JSON.stringify(text)} names no version`, { location: { file: where } });
  return { text, program: text.slice(0, space), identity: text.slice(space + 1) };
}

/** Whether two compiler version lines name the same compiler (program names aside). */
export function sameCompiler(a: string, b: string): boolean {
  return parseCompilerText(a, 'a').identity === parseCompilerText(b, 'b').identity;
}

/** CONFIG_CC_VERSION_TEXT of the kernel whose headers are in `headersDir` (`.config`, else include/config/auto.conf). */
export async function readKernelCompiler(headersDir: string): Promise<CompilerText> {
  for (const name of ['.config', 'include/config/auto.conf']) {
    const file = join(headersDir, name);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch {
      continue;
    }
    const m = /^CONFIG_CC_VERSION_TEXT="([^"\n]*)"$/m.exec(text);
    if (!m) continue;
    return parseCompilerText(m[1]!, file);
  }
  throw new FalcoProbesError(
    'build',
    `the kernel headers in ${headersDir} do not say which compiler built the kernel (no CONFIG_CC_VERSION_TEXT in .config or include/config/auto.conf)`,
    {
      location: { file: headersDir },
      hint: 'kernels older than 5.8 do not record it; such kernels need a builder pin that names their compiler',
    },
  );
}

/** The first line of `<program> --version`, or undefined when it cannot be run. */
export async function compilerVersionLine(program: string, path: string): Promise<string | undefined> {
  if (!PROGRAM_RE.test(program) && !/^\/[A-Za-z0-9._+/-]+$/.test(program)) return undefined;
  try {
    const { stdout } = await execFileAsync(program, ['--version'], { timeout: 15_000, env: { PATH: path, LC_ALL: 'C' } });
    const line = stdout.split('\n').find((l) => l.trim() !== '');
    return line === undefined ? undefined : line.trim().replace(/\s+/g, ' ');
  } catch {
    return undefined;
  }
}

/**
 * The program to pass as CC for a kernel built by `kernel`: the program the
 * kernel names, when it runs here and says exactly the same line; else
 * `fallback` (the builder's own gcc) when it is the same compiler. Anything
 * else is refused with the compiler the kernel needs.
 */
export async function kernelCompilerProgram(
  kernel: CompilerText,
  fallback: { program: string; line: string | undefined },
  path: string,
  what: string,
): Promise<string> {
  if (PROGRAM_RE.test(kernel.program)) {
    const line = await compilerVersionLine(kernel.program, path);
    if (line === kernel.text) return kernel.program;
  }
  if (fallback.line !== undefined && parseCompilerText(fallback.line, fallback.program).identity === kernel.identity)
    return fallback.program;
  throw noCompilerError(kernel, fallback.line, what);
}

export function noCompilerError(kernel: CompilerText, have: string | undefined, what: string): FalcoProbesError {
  return new FalcoProbesError(
    'build',
    `${what} was built with \`${kernel.text}\`, and no builder here has that compiler (${have ? `this one has \`${have}\`` : 'this one has no gcc'})`,
    {
      hint: `a kernel module must be built with its kernel's compiler: build this target on a machine or in an image whose gcc says \`${kernel.identity}\``,
    },
  );
}
