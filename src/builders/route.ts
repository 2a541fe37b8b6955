import type { Builder, BuildRequest, BuildResult } from './types.js';
import type { BuilderPin } from '../graph/types.js';

// One builder for a run whose targets name different builders: a module of a
// kernel that another Debian release's gcc built is keyed for that
// release's compiler image (graph/compiler-choice.ts), everything else for
// the run's own builder. Compiler-image builders are made on first use, one
// per release, so a run without such targets never talks to Docker.

export type CompilerImageBuilder = (release: string) => Promise<Builder>;

export function routeCompilerImages(base: Builder, makeFor: CompilerImageBuilder): Builder {
  const made = new Map<string, Promise<Builder>>();
  const forRelease = (release: string): Promise<Builder> => {
    let b = made.get(release);
    if (!b) {
      b = makeFor(release);
      b.catch(() => made.delete(release));
      made.set(release, b);
    }
    return b;
  };
  return {
    pin: (): Promise<BuilderPin> => base.pin(),
    build: async (request: BuildRequest): Promise<BuildResult> => {
      const pin = request.target.builder;
      if (pin.kind === 'docker' && pin.release !== undefined) return (await forRelease(pin.release)).build(request);
      return base.build(request);
    },
  };
}

/** The Docker builder of a compiler image, with the daemon of DOCKER_HOST (loaded on first use). */
export function dockerCompilerImages(
  options: { logger?: import('../util/log.js').Logger; pinMemoDir?: string } = {},
): CompilerImageBuilder {
  return async (release) => {
    const { createDockerBuilder } = await import('./docker.js');
    return createDockerBuilder({
      release,
      ...(options.logger ? { logger: options.logger } : {}),
      ...(options.pinMemoDir !== undefined ? { pinMemoDir: options.pinMemoDir } : {}),
    });
  };
}
