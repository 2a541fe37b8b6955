#!/usr/bin/env bash
# Debian packages this project needs. Idempotent; root only.
#   setup-debian.sh            everything the tests need (the test command runs this)
#   setup-debian.sh --runtime  only what `npm start` needs: the host builder, and Docker with debootstrap
#                              for the compiler image of Debian 13's modules (gcc 14)
set -euo pipefail
# The host builder: kbuild with clang/llc, gcc for kbuild's host programs, libelf for objtool-free
# headers, pahole (dwarves) for the BTF of modules against newer kernels (6.12); xz/zstd/tar/gzip/cpio for packages; gpgv and the archive keyring to check InRelease.
# docker.io and debootstrap: the trixie compiler image (debootstrapped: no registry is needed).
RUNTIME=(clang llvm make gcc libelf-dev dwarves lz4 xz-utils zstd gpgv debian-archive-keyring cpio binutils coreutils tar gzip docker.io debootstrap)
# The tests and the optional stages: verify-load (qemu,
# busybox, bpftool, libc6-dev for the static legacy eBPF loader), yum fixtures (rpm), signing fixtures (gpg, openssl), tools the tests call.
TESTS=(python3 bpftool qemu-system-x86 busybox-static libc6-dev rpm curl openssl time gpg gpg-agent gpgconf)
PKGS=("${RUNTIME[@]}")
if [ "${1:-}" != --runtime ]; then PKGS+=("${TESTS[@]}"); fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-debian: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
