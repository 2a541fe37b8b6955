#!/usr/bin/env bash
# The test command (README): installs what the tests need on a fresh Debian
# machine, starts the services they use, runs the whole suite, and stops the
# services again. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
  bash scripts/setup-debian.sh
else
  echo "test.sh: not root; assuming the Debian packages of scripts/setup-debian.sh are installed" >&2
fi

npm ci --no-audit --no-fund --loglevel=error
npx tsc --noEmit -p .
# The compiled tool (dist/) that bin/falco-probes.js prefers while it is fresh.
npm run build --silent

cleanup() { bash scripts/docker-daemon.sh stop >/dev/null 2>&1 || true; }
trap cleanup EXIT
if [ "$(id -u)" = 0 ] && [ "${FALCO_PROBES_SKIP_DOCKER:-}" != 1 ]; then
  bash scripts/docker-daemon.sh start
  export DOCKER_HOST="unix://$(bash scripts/docker-daemon.sh socket)"
fi

node --import tsx --test --test-concurrency=1 --test-timeout=900000 test/*.test.ts
