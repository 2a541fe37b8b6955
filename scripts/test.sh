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
# Formatting and lint rules (biome.jsonc): `npm run format` fixes what it can.
npm run lint --silent
# The compiled tool (dist/) that bin/falco-probes.js prefers while it is fresh.
npm run build --silent

# The private dockerd is shared with whatever else uses it meanwhile (another
# suite, a test file run alone): this run counts as one user, and the last user
# out stops it (scripts/docker-daemon.sh acquire/release).
cleanup() { bash scripts/docker-daemon.sh release $$ >/dev/null 2>&1 || true; }
if [ "$(id -u)" = 0 ]; then
  # Everything the tests need is installed above: a test that would skip for a
  # missing tool or daemon fails instead (test/helpers/require.ts; README, Tests).
  export FALCO_PROBES_REQUIRE_ALL=1
  if [ "${FALCO_PROBES_SKIP_DOCKER:-}" != 1 ]; then
    trap cleanup EXIT
    bash scripts/docker-daemon.sh acquire $$
    export DOCKER_HOST="unix://$(bash scripts/docker-daemon.sh socket)"
  fi
fi

# Two test files at a time (this machine has two cores). Test files share the
# daemon, its images and the test caches only through test/helpers, which
# lock and reference-count them.
node --import tsx --test --test-concurrency=2 --test-timeout=900000 test/*.test.ts
