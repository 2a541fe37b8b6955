import { existsSync } from 'node:fs';
import Docker from 'dockerode';
import { FalcoProbesError } from '../util/errors.js';

// Connecting to a Docker daemon, and turning the ways that fails into
// messages that say what to do.

/** The private daemon of scripts/docker-daemon.sh: used when DOCKER_HOST is unset and no system daemon exists. */
export const PRIVATE_DOCKER_SOCKET = '/run/falco-probes-docker/docker.sock';
const SYSTEM_DOCKER_SOCKET = '/var/run/docker.sock';
const PING_TIMEOUT_MS = 10_000;

const START_HINT =
  'start one (as root): bash scripts/docker-daemon.sh start && export DOCKER_HOST=unix://$(bash scripts/docker-daemon.sh socket); or build on this machine with --builder host';

/** Where the daemon is: DOCKER_HOST, else the system socket, else the private one. */
export function dockerEndpoint(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env['DOCKER_HOST'];
  if (fromEnv) return fromEnv;
  if (!existsSync(SYSTEM_DOCKER_SOCKET) && existsSync(PRIVATE_DOCKER_SOCKET)) return `unix://${PRIVATE_DOCKER_SOCKET}`;
  return `unix://${SYSTEM_DOCKER_SOCKET}`;
}

function clientFor(endpoint: string): Docker {
  if (endpoint.startsWith('unix://')) return new Docker({ socketPath: endpoint.slice('unix://'.length) });
  let url: URL;
  try {
    url = new URL(endpoint.replace(/^tcp:/, 'http:'));
  } catch {
    throw new FalcoProbesError('usage', `DOCKER_HOST is not a unix:// or tcp:// address: ${JSON.stringify(endpoint)}`);
  }
  return new Docker({ host: url.hostname, port: url.port || 2375, protocol: url.protocol === 'https:' ? 'https' : 'http' });
}

/** A client for the daemon, checked to answer; a daemon that is missing or refuses is a clear `docker` error. */
export async function connectDocker(env: NodeJS.ProcessEnv = process.env): Promise<Docker> {
  const endpoint = dockerEndpoint(env);
  const docker = clientFor(endpoint);
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), PING_TIMEOUT_MS);
  try {
    // @types/dockerode lacks ping's options; dockerode passes abortSignal to the request.
    await (docker.ping as (opts: { abortSignal: AbortSignal }) => Promise<unknown>)({ abortSignal: abort.signal });
  } catch (err) {
    throw explainDockerError(err, endpoint, abort.signal.aborted);
  } finally {
    clearTimeout(timer);
  }
  return docker;
}

/** Map a failed call to the daemon to a message that says what to do. */
export function explainDockerError(err: unknown, endpoint: string, timedOut = false): FalcoProbesError {
  if (err instanceof FalcoProbesError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const status = (err as { statusCode?: number } | undefined)?.statusCode;
  const location = { url: endpoint };
  if (timedOut)
    return new FalcoProbesError('docker', `the Docker daemon did not answer within ${PING_TIMEOUT_MS / 1000} s`, {
      location,
      hint: START_HINT,
      cause: err,
    });
  if (code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EHOSTUNREACH')
    return new FalcoProbesError('docker', `no Docker daemon answers (${code})`, { location, hint: START_HINT, cause: err });
  if (code === 'EACCES' || code === 'EPERM' || status === 401 || status === 403)
    return new FalcoProbesError('docker', `the Docker daemon refuses this user (${code ?? `HTTP ${status}`})`, {
      location,
      hint: "run as root or as a member of the socket's group (see: ls -l on the socket), point DOCKER_HOST at a daemon you may use, or use --builder host",
      cause: err,
    });
  return new FalcoProbesError('docker', `the Docker daemon failed: ${(err as Error)?.message ?? String(err)}`, { location, cause: err });
}
