import { connectDocker } from '../../builders/docker-client.js';
import { builderImageDefinition, ensureImage } from '../../builders/docker-image.js';
import { createLogger } from '../../util/log.js';
import type { Command } from '../context.js';

export const command: Command = {
  name: 'builder-image',
  summary: 'build (or find) the Docker builder image and print its id, the builder pin of --builder docker',
  usage: `usage: falco-probes builder-image [--rebuild]

Finds the image that builder/Dockerfile defines in the Docker daemon
(DOCKER_HOST), or builds it through the daemon's image build API, and prints
its id: the builder pin that every key built with --builder docker names.
The image is tagged falco-probes/builder:<hash of the Dockerfile and the base
image>; an image with that tag is reused. Nothing is ever pulled: the base
image debian:bookworm is made on this machine by scripts/base-image.sh.

options:
  --rebuild     build again even when the tagged image exists (the id may change)
  --verbose     show the image build's output
`,
  options: { rebuild: { type: 'boolean' }, verbose: { type: 'boolean' } },
  allowPositionals: false,
  async run({ values }, ctx) {
    const logger = values['verbose'] === true ? createLogger({ verbose: true }) : ctx.logger;
    const docker = await connectDocker();
    const image = await ensureImage(docker, builderImageDefinition(), {
      logger,
      rebuild: values['rebuild'] === true,
    });
    ctx.logger.info(`${image.built ? 'built' : 'found'} ${image.tag}`);
    ctx.stdout.write(`${image.id}\n`);
    return 0;
  },
};
