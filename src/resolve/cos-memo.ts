import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/fs.js';
import { checkRelease, checkSha256, checkUnameVersion } from '../util/names.js';
import type { Logger } from '../util/log.js';
import type { CosHeadersInfo } from './cos-headers.js';

// What a COS headers tarball said, remembered by its content (the MD5 and
// size the bucket listing gives, both checked on the download that filled
// the entry): a nightly resolve then downloads only the builds it has not
// seen, not every tarball of every milestone again. An entry is never stale
// (same content, same answer); one that cannot be read or fails the checks
// is ignored and written again.

const FORMAT = 1;

export class CosHeadersMemo {
  constructor(
    private readonly dir: string,
    private readonly logger?: Logger,
  ) {}

  private path(md5: string, size: number): string {
    return join(this.dir, 'cos-headers', `${md5}-${size}.json`);
  }

  async get(md5: string | undefined, size: number): Promise<CosHeadersInfo | undefined> {
    if (md5 === undefined || !/^[0-9a-f]{32}$/.test(md5)) return undefined;
    let text: string;
    try {
      text = await readFile(this.path(md5, size), 'utf8');
    } catch {
      return undefined;
    }
    try {
      const v = JSON.parse(text) as Record<string, unknown>;
      if (v['format'] !== FORMAT || v['md5'] !== md5 || v['size'] !== size) return undefined;
      const info: CosHeadersInfo = {
        release: checkRelease(String(v['release'])),
        version: checkUnameVersion(String(v['version'])),
        sha256: checkSha256(String(v['sha256'])),
        md5,
        size,
        ...(typeof v['machine'] === 'string' ? { machine: v['machine'] } : {}),
      };
      return info;
    } catch {
      this.logger?.debug(`ignoring unreadable resolve memo ${this.path(md5, size)}`);
      return undefined;
    }
  }

  async set(info: CosHeadersInfo): Promise<void> {
    try {
      await writeFileAtomic(this.path(info.md5, info.size), `${JSON.stringify({ format: FORMAT, ...info })}\n`);
    } catch (err) {
      // A memo that cannot be written costs a download next time, nothing more.
      this.logger?.debug(`cannot write resolve memo: ${(err as Error).message}`);
    }
  }
}
