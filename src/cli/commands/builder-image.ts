import { createDockerBuilder } from '../../builders/docker.js';
import { connectDocker } from '../../builders/docker-client.js';
import { builderImageDefinition, ensureImage } from '../../builders/docker-image.js';
import { FalcoProbesError } from '../../util/errors.js';
import { createLogger } from '../../util/log.js';
import type { Command } from '../context.js';
import { OK } from '../outcome.js';

export const command: Command = {
  name: 'builder-image',
  summary: 'build (or find) a Docker builder image and print its toolchain (content identity, clang, gcc)',
  usage: `usage: falco-probes builder-image [--release R] [--rebuild] [--json]

Finds the image that builder/Dockerfile defines for a Debian release in the
Docker daemon (DOCKER_HOST), or builds it through the daemon's image build
API, then asks the image for its toolchain and prints it (the builder
toolchain of --builder docker; with --release, a compiler image entry): the content
identity (sha256 of its sorted package list: the same on every machine that
makes the image from the same archive state), its clang and its gcc.

  --release bookworm (default)  the default Docker builder (--builder docker)
  --release trixie              a compiler image: Debian 13's gcc 14, for the
                                modules of Debian 13's kernels. Paste what it
                                prints under compilerImages: in
                                kernels/drivers.yaml.

Nothing is ever pulled: the base image debian:<release> is made on this
machine by scripts/base-image.sh <release> (debootstrap from the archive apt
names). The image is tagged falco-probes/builder[-<release>]:<hash of the
Dockerfile and the base image>; an image with that tag is reused.

options:
  --release R   the Debian release the image is made from (default bookworm)
  --rebuild     build again even when the tagged image exists (the id changes, the identity does not)
  --json        print it as JSON
  --verbose     show the image build's output
`,
  options: { release: { type: 'string' }, rebuild: { type: 'boolean' }, json: { type: 'boolean' }, verbose: { type: 'boolean' } },
  allowPositionals: false,
  async run({ values }, ctx) {
    const logger = values['verbose'] === true ? createLogger({ verbose: true }) : ctx.logger;
    const release = typeof values['release'] === 'string' ? values['release'] : 'bookworm';
    if (!/^[a-z]{2,32}$/.test(release))
      throw new FalcoProbesError('usage', `--release expects a Debian codename (bookworm, trixie), got ${JSON.stringify(release)}`);
    const docker = await connectDocker();
    const image = await ensureImage(docker, builderImageDefinition(undefined, release), { logger, rebuild: values['rebuild'] === true });
    ctx.logger.info(`${image.built ? 'built' : 'found'} ${image.tag} (${image.id})`);
    const pin = await createDockerBuilder({ docker, image: image.id, logger, pinMemoDir: false }).pin();
    if (pin.kind !== 'docker') throw new FalcoProbesError('internal', 'the Docker builder gave a host pin');
    if (values['json'] === true) {
      ctx.stdout.write(`${JSON.stringify({ release, image: pin.image, imageId: image.id, clang: pin.clang, gcc: pin.gcc ?? null })}\n`);
    } else if (release === 'bookworm') {
      ctx.stdout.write(`image: ${pin.image}\nclang: ${pin.clang}\ngcc: ${JSON.stringify(pin.gcc ?? '')}\n`);
    } else {
      ctx.stdout.write(
        `  - release: ${release}\n    image: ${pin.image}\n    clang: ${pin.clang}\n    gcc: ${JSON.stringify(pin.gcc ?? '')}\n`,
      );
    }
    return OK;
  },
};
