#!/bin/sh
# The kbuild recipe inside a build container:
#   kbuild.sh SOURCE BUILD make ARGS...
# copies the driver's prepared source (a read-only mount) into the writable
# build directory, then runs the make command line it was given, which is
# the host builder's own (src/builders/kbuild.ts). Arguments are used as
# they are, never re-read as shell text.
set -eu
source_dir=$1
build_dir=$2
shift 2
# -R copies links as links, as the host builder's copy does.
cp -R "$source_dir"/. "$build_dir"/
exec "$@"
