// Text written straight into one growing buffer, as UTF-8. The generated
// files are tens of megabytes made of hundreds of thousands of small pieces:
// kept as strings until joined, the pieces live long enough for the garbage
// collector to copy them, and the joined text is copied once more when it is
// encoded. Written here, each piece is garbage at once and the bytes are
// encoded once, outside the JavaScript heap.

export class ByteWriter {
  #buf: Buffer;
  #length = 0;
  /** Small pieces gathered into one string first: each encoding is a call into C++, worth it for a few kilobytes. */
  #pending = '';

  constructor(capacity = 64 * 1024) {
    this.#buf = Buffer.allocUnsafe(capacity);
  }

  write(text: string): this {
    this.#pending += text;
    if (this.#pending.length >= 16 * 1024) this.#flush();
    return this;
  }

  #flush(): void {
    const text = this.#pending;
    this.#pending = '';
    // A UTF-16 code unit is at most three bytes of UTF-8.
    const most = text.length * 3;
    if (this.#length + most > this.#buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.#buf.length * 2, this.#length + most));
      this.#buf.copy(grown, 0, 0, this.#length);
      this.#buf = grown;
    }
    this.#length += this.#buf.write(text, this.#length, 'utf8');
  }

  get length(): number {
    this.#flush();
    return this.#length;
  }

  /** The bytes written so far (a view of the writer's buffer: write nothing more after taking it). */
  bytes(): Buffer {
    this.#flush();
    return this.#buf.subarray(0, this.#length);
  }
}
