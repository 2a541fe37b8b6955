// Pull-style reading of a byte stream for formats parsed by hand (cpio):
// exact reads for headers, bounded chunks for file data, and a clear error
// when the stream ends early.

export class TruncatedError extends Error {
  constructor(what: string, position: number) {
    super(`data ends in the middle of ${what} (at byte ${position}): truncated archive`);
    this.name = 'TruncatedError';
  }
}

const EMPTY = Buffer.alloc(0);

export class ByteReader {
  private readonly it: AsyncIterator<Uint8Array>;
  private buf: Buffer = EMPTY;
  private done = false;
  /** Bytes consumed so far. */
  position = 0;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.it = source[Symbol.asyncIterator]();
  }

  private async fill(): Promise<boolean> {
    while (!this.done) {
      const r = await this.it.next();
      if (r.done) {
        this.done = true;
        return false;
      }
      if (r.value.length === 0) continue;
      const chunk = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value.buffer, r.value.byteOffset, r.value.length);
      this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
      return true;
    }
    return false;
  }

  /** Exactly `n` bytes (n small: headers and names). */
  async read(n: number, what: string): Promise<Buffer> {
    while (this.buf.length < n) {
      if (!(await this.fill())) throw new TruncatedError(what, this.position + this.buf.length);
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    this.position += n;
    return out;
  }

  /** Exactly `n` bytes as a sequence of chunks (file data of any size). */
  async *chunks(n: number, what: string): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.buf.length === 0 && !(await this.fill())) throw new TruncatedError(what, this.position);
      const take = Math.min(left, this.buf.length);
      const out = this.buf.subarray(0, take);
      this.buf = this.buf.subarray(take);
      this.position += take;
      left -= take;
      yield out;
    }
  }

  async skip(n: number, what: string): Promise<void> {
    for await (const _ of this.chunks(n, what)) void _;
  }

  /** Read and drop whatever is left (trailing padding). */
  async drain(): Promise<void> {
    this.position += this.buf.length;
    this.buf = EMPTY;
    while (await this.fill()) {
      this.position += this.buf.length;
      this.buf = EMPTY;
    }
  }
}
