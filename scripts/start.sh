#!/usr/bin/env bash
# The main job (README): build every out-of-date probe of the checked-in
# lockfiles with the host builder into the local repository (repository/).
# On a fresh Debian machine, as root, it first installs the toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then bash scripts/setup-debian.sh; fi
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
exec node bin/falco-probes.js build //probes/... "$@"
