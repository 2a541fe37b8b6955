import { FalcoProbesError } from '../util/errors.js';

// A streaming parser for deb822 paragraphs ("stanzas") as found in a Packages
// index. It is fed text in chunks and keeps only the current partial line and
// the few fields the resolver reads, so a 50 MB index is never one string.
// Text is expected as latin1-decoded bytes: field names and the values read
// here are ASCII, and a byte outside it then fails the strict name checks.

/** The fields of a stanza the apt resolver reads; all others are checked for form and dropped. */
export interface RawStanza {
  package?: string;
  version?: string;
  depends?: string;
  preDepends?: string;
  filename?: string;
  size?: string;
  sha256?: string;
  /** 1-based line of the stanza's first line in the decompressed index. */
  line: number;
}

type FieldName = Exclude<keyof RawStanza, 'line'>;

// Checked by first character, then by prefix: cheaper than slicing every key.
const WANTED: { prefix: string; field: FieldName }[] = [
  { prefix: 'Package:', field: 'package' },
  { prefix: 'Version:', field: 'version' },
  { prefix: 'Depends:', field: 'depends' },
  { prefix: 'Pre-Depends:', field: 'preDepends' },
  { prefix: 'Filename:', field: 'filename' },
  { prefix: 'Size:', field: 'size' },
  { prefix: 'SHA256:', field: 'sha256' },
];
const BY_FIRST_CHAR = new Map<number, { prefix: string; field: FieldName }[]>();
for (const w of WANTED) {
  const c = w.prefix.charCodeAt(0);
  BY_FIRST_CHAR.set(c, [...(BY_FIRST_CHAR.get(c) ?? []), w]);
}

const SPACE = 32;
const TAB = 9;
const CR = 13;

export class StanzaParser {
  private carry = '';
  private lineNo = 0;
  private current: RawStanza | undefined;
  /** Field whose continuation lines are appended (only fields we keep). */
  private continuing: FieldName | undefined;
  private stanzas = 0;

  constructor(
    private readonly onStanza: (s: RawStanza) => void,
    /** URL (or file) of the index, for error messages. */
    private readonly where: string,
  ) {}

  get count(): number {
    return this.stanzas;
  }

  push(chunk: string): void {
    let pos = 0;
    if (this.carry.length) {
      // Finish the partial line with the head of this chunk, without copying the whole chunk.
      const nl = chunk.indexOf('\n');
      if (nl < 0) {
        this.carry += chunk;
        this.checkCarry();
        return;
      }
      const line = this.carry + chunk.slice(0, nl);
      this.carry = '';
      this.line(line, 0, line.length);
      pos = nl + 1;
    }
    for (;;) {
      const nl = chunk.indexOf('\n', pos);
      if (nl < 0) break;
      this.line(chunk, pos, nl);
      pos = nl + 1;
    }
    if (pos < chunk.length) {
      this.carry = chunk.slice(pos);
      this.checkCarry();
    }
  }

  // A line longer than any real field (Description lines are short) is hostile or broken.
  private checkCarry(): void {
    if (this.carry.length > 1024 * 1024) this.fail(this.lineNo + 1, 'a line longer than 1 MiB');
  }

  end(): void {
    if (this.carry.length) {
      const text = this.carry;
      this.carry = '';
      this.line(text, 0, text.length);
    }
    this.finishStanza();
  }

  private line(text: string, start: number, endExclusive: number): void {
    this.lineNo++;
    let end = endExclusive;
    if (end > start && text.charCodeAt(end - 1) === CR) end--;
    if (end === start) {
      this.finishStanza();
      return;
    }
    const first = text.charCodeAt(start);
    if (first === SPACE || first === TAB) {
      let k = start + 1;
      while (k < end && (text.charCodeAt(k) === SPACE || text.charCodeAt(k) === TAB)) k++;
      if (k === end) {
        // A line of only blanks separates paragraphs as an empty line does.
        this.finishStanza();
        return;
      }
      if (!this.current) this.fail(this.lineNo, 'a continuation line (starting with a blank) outside a field');
      if (this.continuing) {
        const s = this.current!;
        s[this.continuing] = `${s[this.continuing] ?? ''} ${text.slice(k, end)}`;
      }
      return;
    }
    if (!this.current) this.current = { line: this.lineNo };
    this.continuing = undefined;
    const candidates = BY_FIRST_CHAR.get(first);
    if (candidates) {
      for (const w of candidates) {
        if (text.startsWith(w.prefix, start)) {
          const s = this.current;
          if (s[w.field] !== undefined) this.fail(this.lineNo, `field "${w.prefix.slice(0, -1)}" appears twice in one stanza`);
          let from = start + w.prefix.length;
          let to = end;
          while (from < to && (text.charCodeAt(from) === SPACE || text.charCodeAt(from) === TAB)) from++;
          while (to > from && (text.charCodeAt(to - 1) === SPACE || text.charCodeAt(to - 1) === TAB)) to--;
          s[w.field] = text.slice(from, to);
          this.continuing = w.field;
          return;
        }
      }
    }
    const colon = text.indexOf(':', start);
    if (colon < 0 || colon >= end || colon === start) this.fail(this.lineNo, 'expected "Field: value"');
    const space = text.indexOf(' ', start);
    if (space >= 0 && space < colon) this.fail(this.lineNo, 'a field name with blanks');
  }

  private finishStanza(): void {
    const s = this.current;
    this.current = undefined;
    this.continuing = undefined;
    if (!s) return;
    if (s.package === undefined || s.package === '') this.fail(s.line, 'a stanza without a "Package" field');
    this.stanzas++;
    this.onStanza(s);
  }

  private fail(line: number, what: string): never {
    throw new FalcoProbesError('input', `malformed Packages index at line ${line}: ${what}`, { location: { url: this.where } });
  }
}
