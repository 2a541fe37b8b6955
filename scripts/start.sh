#!/usr/bin/env bash
# The main job (README): build every out-of-date probe of the checked-in
# lockfiles with the host builder into the local repository (repository/).
# On a fresh Debian machine, as root, it first installs the toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then bash scripts/setup-debian.sh --runtime; fi
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
# Compile once (bin/falco-probes.js runs the TypeScript sources when dist/ is missing or older than src/).
[ -f dist/BUILT ] || npm run build --silent
# `npm start -- //probes/debian12:6.1.0-57-amd64 -j 1` narrows the run; with no pattern, every target.
if [ "$#" -eq 0 ]; then set -- //probes/...; fi
# A driver whose source cannot be downloaded here (GitHub's archives on a machine without
# access to it) costs its own targets, each said in one line, not the whole run; serve it
# with FALCO_PROBES_DRIVER_MIRROR='PREFIX=URL;...' (or --driver-mirror) to build them too.
# Debian 13's kernels were built by gcc 14, and so must their modules be: in the trixie compiler
# image (kernels/drivers.yaml compilerImages), on the private Docker daemon, whose base image is
# debootstrapped from the archive apt names. Without them those modules are reported as not
# buildable here (--skip-unbuildable), as are the arm64 kernels on an x86_64 machine.
if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null; then
  if bash scripts/docker-daemon.sh acquire $$; then
    trap 'bash scripts/docker-daemon.sh release $$ >/dev/null 2>&1 || true' EXIT
    DOCKER_HOST="unix://$(bash scripts/docker-daemon.sh socket)"
    export DOCKER_HOST
    bash scripts/base-image.sh trixie || echo "start: no debian:trixie base image; Debian 13's modules are not built" >&2
  else
    echo "start: the Docker daemon did not start; Debian 13's modules are not built" >&2
  fi
fi
node bin/falco-probes.js build --skip-unreachable-drivers --skip-unbuildable "$@"
