#!/usr/bin/env bash
# Start or stop a private dockerd for the tests (filled in by the Docker builder work).
set -euo pipefail
case "${1:-}" in
  start|stop) exit 0 ;;
  socket) echo /run/falco-probes-docker/docker.sock ;;
  *) echo "usage: $0 start|stop|socket" >&2; exit 2 ;;
esac
