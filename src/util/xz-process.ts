import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { Duplex, type Readable, type Writable } from 'node:stream';
import { createDecompressor } from './decompress.js';

// xz through the system's `xz -dc` when there is one, lzma-native otherwise.
//
// lzma-native bundles liblzma 5.2.3; on this project's machines it decodes
// Debian's main Packages.xz (50 MB) in about 1.7 s of CPU where `xz -dc`
// (liblzma 5.4) takes 0.6 s, and its coding runs in one thread-pool job per
// input chunk, so decoding and parsing take turns. A child process decodes
// at xz's own speed on another core while this one hashes and parses
// (bench/resolve-apt.ts --xz; docs/PERFORMANCE.md). The data is the same
// untrusted input either way: the caller still bounds the output, checks the
// download's sha256 and the decompressed size, and a non-zero exit is a
// corrupt-data error. FALCO_PROBES_XZ=native uses lzma-native always.

let systemXz: string | null | undefined;

/** The `xz` on PATH (an executable regular file), or null. Looked up once per process. */
export function findSystemXz(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env !== process.env) return lookup(env);
  return systemXz === undefined ? (systemXz = lookup(env)) : systemXz;
}

function lookup(env: NodeJS.ProcessEnv): string | null {
  if (env['FALCO_PROBES_XZ'] === 'native') return null;
  for (const dir of (env['PATH'] ?? '').split(delimiter)) {
    if (!dir.startsWith('/')) continue; // a relative PATH entry is not trusted to name a program
    const file = join(dir, 'xz');
    const st = statSync(file, { throwIfNoEntry: false });
    if (st?.isFile() && (st.mode & 0o111) !== 0) return file;
  }
  return null;
}

const PIECE = 64 * 1024;

/** An xz decompressing stream: `xz -dc` in a child process when there is one, else lzma-native's. */
export function createXzDecompressor(): Duplex {
  const xz = findSystemXz();
  return xz ? new XzProcess(xz) : createDecompressor('xz');
}

/**
 * A Duplex over `xz -dc`: what is written goes to its stdin (a write
 * completes when the pipe took it, so a slow decoder slows the writer), its
 * stdout is what is read (paused while nobody reads). It ends when xz exits
 * 0 after its output; any other exit is an error naming xz's message.
 * Destroying it kills the process.
 */
class XzProcess extends Duplex {
  private readonly child: ChildProcessByStdio<Writable, Readable, Readable>;
  private stderr = '';
  private exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private outputEnded = false;
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(xz: string) {
    super();
    this.child = spawn(xz, ['-dc', '-q'], { stdio: ['pipe', 'pipe', 'pipe'], env: { LC_ALL: 'C', PATH: process.env['PATH'] ?? '' } });
    this.child.on('error', (err) => this.destroy(err));
    this.child.stdin.on('error', () => {
      // xz closed its input early (corrupt data): its exit status says why.
    });
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (d: string) => {
      if (this.stderr.length < 4096) this.stderr += d;
    });
    // xz writes 8 KiB at a time: gathered into pieces of 64 KiB, as the gzip path reads (fewer, larger chunks for the parser).
    this.child.stdout.on('data', (chunk: Buffer) => {
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
      if (this.pendingBytes >= PIECE && !this.pushPending()) this.child.stdout.pause();
    });
    this.child.stdout.on('end', () => {
      this.pushPending();
      this.outputEnded = true;
      this.finishIfDone();
    });
    this.child.on('exit', (code, signal) => {
      this.exited = { code, signal };
      this.finishIfDone();
    });
  }

  /** Push what xz wrote so far as one piece; false when the reader wants no more for now. */
  private pushPending(): boolean {
    if (this.pendingBytes === 0) return true;
    const piece = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    return this.push(piece);
  }

  private finishIfDone(): void {
    if (!this.exited || !this.outputEnded || this.destroyed) return;
    const { code, signal } = this.exited;
    if (code === 0) this.push(null);
    else
      this.destroy(
        new Error(
          `xz: ${this.stderr.trim().replace(/^.*?xz: \(stdin\): /, '') || (signal ? `killed by ${signal}` : `exit status ${code}`)}`,
        ),
      );
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.child.stdin.destroyed) {
      callback();
      return;
    }
    this.child.stdin.write(chunk, () => callback());
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.child.stdin.destroyed) {
      callback();
      return;
    }
    this.child.stdin.end(() => callback());
  }

  override _read(): void {
    this.child.stdout.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.exited === undefined) this.child.kill('SIGKILL');
    this.child.stdin.destroy();
    this.child.stdout.destroy();
    callback(error);
  }
}
