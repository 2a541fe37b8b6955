#!/usr/bin/env bash
# Make the local `debian:<release>` base image of a Docker builder when the
# daemon lacks it (default bookworm; trixie for the image that builds Debian
# 13's modules with gcc 14). No registry is reachable, so the image is
# debootstrapped from the Debian archive this machine's apt already uses and
# imported. Skips when the image exists. Root only (debootstrap).
#
#   base-image.sh [RELEASE]
#   DOCKER_HOST   the daemon (default: the private one of scripts/docker-daemon.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE="${1:-bookworm}"
case "$SUITE" in
  *[!a-z]* | '') echo "base-image: the release must be a Debian codename (bookworm, trixie), not '$SUITE'" >&2; exit 2 ;;
esac
IMAGE="debian:$SUITE"
export DOCKER_HOST="${DOCKER_HOST:-unix://$(bash scripts/docker-daemon.sh socket)}"

log() { echo "base-image: $*" >&2; }

if ! command -v docker >/dev/null; then
  log "the docker client is missing; apt-get install -y docker.io"
  exit 1
fi
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE exists: $(docker image inspect -f '{{.Id}}' "$IMAGE")"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  log "debootstrap needs root"
  exit 1
fi
command -v debootstrap >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}

# The archive URL comes from this machine's apt sources at run time (never
# written down here): the first source that serves the suite itself.
archive_url() {
  local f
  # deb822 (.sources): stanzas separated by blank lines with URIs: and Suites: fields.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '
      function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "") { split(uris, u, " "); print u[1]; found = 1; exit } types = ""; suites = ""; uris = "" }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^Types:/  { sub(/^Types:[ \t]*/, ""); types = $0 }
      /^URIs:/   { sub(/^URIs:[ \t]*/, ""); uris = $0 }
      /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
      END { if (!found) flush() }
    ' "$f"
  done
  # One-line format: deb [options] URL suite components...
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '
      $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == suite) { print $i; exit } }
    ' "$f"
  done
}

# A release apt does not list itself (trixie on a bookworm machine) comes from the same archive:
# the first deb source whose URI's path is /debian.
debian_archive_url() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/[^\/]+\/debian\/?$/) { print $i; exit } }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($i ~ /^https?:\/\/[^\/]+\/debian\/?$/) { print $i; exit } }' "$f"
  done
}

url="$( (archive_url; debian_archive_url) | head -n 1)"
if [ -z "$url" ]; then
  log "no apt source for '$SUITE' in /etc/apt/sources.list or /etc/apt/sources.list.d/; add one (the Debian archive) and retry"
  exit 1
fi

dir="$(mktemp -d /var/tmp/falco-probes-rootfs.XXXXXX)"
trap 'rm -rf "$dir"' EXIT
log "debootstrap --variant=minbase $SUITE from the archive apt names (about 40 s)"
if ! debootstrap --variant=minbase "$SUITE" "$dir" "$url" >"$dir.log" 2>&1; then
  log "debootstrap failed; last lines:"
  tail -n 20 "$dir.log" >&2
  rm -f "$dir.log"
  exit 1
fi
rm -f "$dir.log"
# Leave no apt caches in the image: they only make it bigger.
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
tar --numeric-owner -C "$dir" -c . | docker import --message "debootstrap --variant=minbase $SUITE" - "$IMAGE" >/dev/null
log "$IMAGE imported: $(docker image inspect -f '{{.Id}}' "$IMAGE")"
