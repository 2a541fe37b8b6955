import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { defaultCacheDir } from '../fetch/cache.js';
import { writeFileAtomic } from '../util/fs.js';
import type { Logger } from '../util/log.js';

// What the Docker builder's toolchain probe (`clang --version`, `llc
// --version` in a container) printed, remembered by the image's
// content-addressed id. Every `build --builder docker` that a Make recipe or
// a Please rule runs is a new process; without this each one would start a
// container (1-2 s) to learn what an image with the same id always answers.
// The memo keeps the raw output, not the pin: the pin is derived from it by
// the same code as a fresh probe's output, so it cannot drift from what a
// container would give. An entry that cannot be read, fails the checks, or
// was made for another image or another probe command is ignored (and
// written again after the container has run).

const FORMAT = 1;
const IMAGE_ID = /^sha256:([0-9a-f]{64})$/;

/** `<package cache's parent>/docker-pins`: `$XDG_CACHE_HOME/falco-probes/docker-pins` unless FALCO_PROBES_CACHE moves the cache. */
export function dockerPinMemoDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(dirname(defaultCacheDir(env)), 'docker-pins');
}

export class DockerPinMemo {
  constructor(
    private readonly dir: string,
    private readonly logger?: Logger,
  ) {}

  /** The memo's file for an image id; undefined for ids that are not a sha256 digest (never a path then). */
  path(imageId: string): string | undefined {
    const hex = IMAGE_ID.exec(imageId)?.[1];
    return hex === undefined ? undefined : join(this.dir, `sha256-${hex}.json`);
  }

  /** The probe's remembered output for this image and command, if a well-formed entry holds it. */
  async get(imageId: string, command: readonly string[]): Promise<string | undefined> {
    const path = this.path(imageId);
    if (path === undefined) return undefined;
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch {
      return undefined;
    }
    try {
      const v = JSON.parse(text) as Record<string, unknown>;
      const ok =
        v['format'] === FORMAT &&
        v['image'] === imageId &&
        JSON.stringify(v['command']) === JSON.stringify(command) &&
        typeof v['output'] === 'string' &&
        v['output'] !== '';
      if (ok) return v['output'] as string;
    } catch {
      // Not JSON: ignored like any other bad entry.
    }
    this.logger?.debug(`ignoring the unusable Docker pin memo ${path}`);
    return undefined;
  }

  async set(imageId: string, command: readonly string[], output: string): Promise<void> {
    const path = this.path(imageId);
    if (path === undefined) return;
    try {
      await writeFileAtomic(path, `${JSON.stringify({ format: FORMAT, image: imageId, command, output })}\n`);
    } catch (err) {
      // A memo that cannot be written costs a container next time, nothing more.
      this.logger?.debug(`cannot write the Docker pin memo ${path}: ${(err as Error).message}`);
    }
  }
}
