import { PACKAGE_NAME_RE } from '../util/names.js';

// A byte-level filter in front of saxes for primary.xml. A distribution's
// primary metadata is tens to hundreds of megabytes of <package> records, of
// which a resolver wants a few hundred; saxes, a JavaScript parser, reads about
// 60 MB/s, several times slower than the decompression in front of it. This
// filter finds the record boundaries with native byte searches and passes on
// to saxes the document's frame (prolog, root element, text between records)
// and every record it cannot rule out: those whose name is wanted, or is not a
// plain package name (saxes then decodes it and the name check refuses it).
// Records with another plain name are skipped whole: they are counted, and
// their name has passed the strict name rule, but their inside is not parsed.
//
// Skipping is only sound where every `<package` and `</package>` in the bytes
// is markup. In XML, `<` cannot appear raw in text or attribute values, so that
// holds unless comments, CDATA sections or processing instructions occur after
// the prolog (createrepo writes none). At the first `<!` or `<?` after the
// first record, or at anything unexpected (a record starting inside a record,
// an end tag written `</package >`, a `</package>` outside a record, a record
// without `<name>` or larger than 4 MiB), the filter stops skipping and hands
// every remaining byte to saxes, which then parses and checks everything from
// that point on.

/** Found once per tag: `<package`, `</package>` and, harmlessly, `<packager>` and plain text. */
const WORD = Buffer.from('package');
const CLOSE_TAG = Buffer.from('</package>');
const NAME_OPEN = Buffer.from('<name>');
const NAME_CLOSE = Buffer.from('</name>');
const MARKUP_DECLARATION = Buffer.from('<!');
const PROCESSING_INSTRUCTION = Buffer.from('<?');
const LT = 0x3c;
const SLASH = 0x2f;
const GT = 0x3e;
const NEWLINE = 0x0a;
const EMPTY = Buffer.alloc(0);
/** `<package` or `</package>` reach this far past the start of `package`. */
const LOOKAHEAD = WORD.length + 1;
/** A record this large is not one createrepo wrote; hand it to saxes rather than keep searching it. */
const MAX_RECORD_BYTES = 4 * 1024 * 1024;
/** Bytes gathered before a search, so that tiny chunks cost no more than large ones. */
const MIN_BATCH_BYTES = 64 * 1024;

type Tag =
  | { kind: 'open' | 'close' | 'odd'; at: number }
  /** `package` too close to the end of the buffer to tell: decide when more bytes arrive. */
  | { kind: 'undecided'; at: number };

/** Whitespace, `>` or `/` after `<package`: that element's start tag. */
function endsStartTagName(byte: number | undefined): boolean {
  return byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d || byte === GT || byte === SLASH;
}

/**
 * The next `<package` start tag or `</package` end tag that begins after
 * `after`, searching from `from`. An end tag not closed right away by `>` is
 * `odd`. Returns undefined when there is none.
 */
function nextTag(buf: Buffer, from: number, after: number): Tag | undefined {
  for (let i = buf.indexOf(WORD, from); i !== -1; i = buf.indexOf(WORD, i + 1)) {
    const next = buf[i + WORD.length];
    if (buf[i - 1] === LT && i - 1 > after) {
      if (i + WORD.length >= buf.length) return { kind: 'undecided', at: i - 1 };
      if (endsStartTagName(next)) return { kind: 'open', at: i - 1 };
    } else if (buf[i - 1] === SLASH && buf[i - 2] === LT && i - 2 > after) {
      if (i + WORD.length >= buf.length) return { kind: 'undecided', at: i - 2 };
      if (next === GT) return { kind: 'close', at: i - 2 };
      if (endsStartTagName(next)) return { kind: 'odd', at: i - 2 };
    }
  }
  return undefined;
}

export class PackageRecordFilter {
  /** Records skipped without parsing. */
  skipped = 0;
  /** Bytes not yet decided on: the tail of the frame, or an unfinished record (from its `<package`). */
  private pending: Buffer = EMPTY;
  /** Line number at the first byte of `pending`. */
  private line = 1;
  /** For an unfinished record in `pending`: where to resume searching it, so that a long record is searched once. */
  private resume = 0;
  private inRecords = false;
  private passthrough = false;
  private inbox: Buffer[] = [];
  private inboxBytes = 0;

  /**
   * @param wanted  whether a record with this (plain) name must be parsed
   * @param parse   receives, in document order, the bytes saxes must see and the line they start on
   */
  constructor(
    private readonly wanted: (name: string) => boolean,
    private readonly parse: (bytes: Buffer, line: number) => void,
  ) {}

  write(chunk: Buffer): void {
    if (this.passthrough) {
      this.parse(chunk, this.line);
      this.line += countNewlines(chunk, 0, chunk.length);
      return;
    }
    // Small chunks are gathered first: joining each to an unfinished record would copy that record again and again.
    this.inbox.push(chunk);
    this.inboxBytes += chunk.length;
    if (this.inboxBytes >= MIN_BATCH_BYTES) this.drainInbox();
  }

  /** The rest of the document (an unfinished record or the closing tag) goes to saxes, which judges it. */
  end(): void {
    this.drainInbox();
    if (this.pending.length) this.parse(this.pending, this.line);
    this.pending = EMPTY;
  }

  private drainInbox(): void {
    if (this.inboxBytes === 0) return;
    const chunk = this.inbox.length === 1 ? this.inbox[0]! : Buffer.concat(this.inbox, this.inboxBytes);
    this.inbox = [];
    this.inboxBytes = 0;
    if (this.passthrough) this.write(chunk);
    else this.process(chunk);
  }

  private process(chunk: Buffer): void {
    if (this.pending.length === 0) {
      this.scan(chunk, 0);
      return;
    }
    // The undecided tail is joined only with the chunk's head, up to just past
    // its first `</package>` (which ends the unfinished record in the common
    // case); the rest of the chunk is then searched where it lies instead of
    // being copied behind the tail.
    const close = chunk.indexOf(CLOSE_TAG);
    const cut = close === -1 ? chunk.length : Math.min(chunk.length, close + CLOSE_TAG.length + LOOKAHEAD + 1);
    this.scan(Buffer.concat([this.pending, chunk.subarray(0, cut)]), this.pending.length);
    if (cut === chunk.length) return;
    const rest = chunk.subarray(cut);
    if (this.passthrough) {
      this.write(rest);
      return;
    }
    const left = this.pending.length;
    if (left <= cut) {
      // What is still undecided lies in the chunk's head: go on from there in place.
      this.pending = EMPTY;
      this.scan(chunk.subarray(cut - left), left);
    } else {
      this.scan(Buffer.concat([this.pending, rest]), this.pending.length);
    }
  }

  /** Search `buf` (an undecided tail and what follows it); `checked` bytes at its start were searched for declarations already, but for the last. */
  private scan(buf: Buffer, checked: number): void {
    // Anything saxes must interpret itself (comments, CDATA, PIs) ends skipping for good.
    if (this.inRecords && hasDeclaration(buf, Math.max(0, checked - 1))) {
      this.stopSkipping(buf, 0, this.line);
      return;
    }
    let resume = this.resume;
    let pos = 0;
    let line = this.line;
    const advance = (to: number, toSaxes: boolean) => {
      if (to > pos && toSaxes) this.parse(buf.subarray(pos, to), line);
      line += countNewlines(buf, pos, to);
      pos = to;
    };
    for (;;) {
      const open = nextTag(buf, pos, pos - 1);
      if (!open) {
        // No record starts here; keep a tail that may hold the beginning of `<package`.
        advance(Math.max(pos, buf.length - LOOKAHEAD - 1), true);
        break;
      }
      if (open.kind === 'undecided') {
        advance(open.at, true);
        break;
      }
      advance(open.at, true);
      if (open.kind !== 'open') {
        this.stopSkipping(buf, pos, line);
        return;
      }
      const start = open.at;
      if (!this.inRecords) {
        this.inRecords = true;
        if (hasDeclaration(buf, start)) {
          this.stopSkipping(buf, pos, line);
          return;
        }
      }
      const close = nextTag(buf, start + Math.max(1, resume), start);
      resume = 0;
      if (!close || close.kind === 'undecided') {
        if (buf.length - start > MAX_RECORD_BYTES) {
          this.stopSkipping(buf, pos, line);
          return;
        }
        // The record continues in the next chunk; resume where a tag could still begin.
        resume = close ? close.at - start : Math.max(1, buf.length - start - LOOKAHEAD - 1);
        break;
      }
      if (close.kind !== 'close') {
        this.stopSkipping(buf, pos, line);
        return;
      }
      const end = close.at + WORD.length + 3;
      const nameStart = buf.indexOf(NAME_OPEN, start);
      const nameEnd = nameStart === -1 || nameStart > end ? -1 : buf.indexOf(NAME_CLOSE, nameStart);
      if (nameEnd === -1 || nameEnd > end) {
        this.stopSkipping(buf, pos, line);
        return;
      }
      const name = buf.toString('latin1', nameStart + NAME_OPEN.length, nameEnd);
      const skip = PACKAGE_NAME_RE.test(name) && !this.wanted(name);
      if (skip) this.skipped++;
      advance(end, !skip);
    }
    // Copy the tail so that the chunk it came from can be freed.
    this.pending = pos < buf.length ? Buffer.from(buf.subarray(pos)) : EMPTY;
    this.line = line;
    this.resume = resume;
  }

  private stopSkipping(buf: Buffer, from: number, line: number): void {
    this.passthrough = true;
    this.pending = EMPTY;
    const rest = buf.subarray(from);
    this.parse(rest, line);
    this.line = line + countNewlines(rest, 0, rest.length);
  }
}

function hasDeclaration(buf: Buffer, from: number): boolean {
  return buf.indexOf(MARKUP_DECLARATION, from) !== -1 || buf.indexOf(PROCESSING_INSTRUCTION, from) !== -1;
}

export function countNewlines(buf: Buffer, from: number, to: number): number {
  let n = 0;
  for (let i = buf.indexOf(NEWLINE, from); i !== -1 && i < to; i = buf.indexOf(NEWLINE, i + 1)) n++;
  return n;
}
