#!/usr/bin/env bash
# Debian packages the tests and the host builder need. Idempotent; root only.
set -euo pipefail
PKGS=(clang llvm make gcc libelf-dev lz4 xz-utils zstd gpgv debian-archive-keyring python3 cpio binutils bpftool qemu-system-x86 busybox-static rpm curl openssl coreutils docker.io debootstrap time tar gzip gpg gpg-agent gpgconf)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-debian: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
