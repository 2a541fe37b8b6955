#!/bin/sh
# falco-probes for Please rules (//:falco-probes). Please runs a rule's tool
# from plz-out/; the project (bin/, src/, node_modules/, kernels/, the
# package cache and .falco-probes/) is the directory that holds plz-out.
set -eu
self=$(cd "$(dirname "$0")" && pwd)
case "$self" in
  */plz-out/*) root=${self%%/plz-out/*} ;;
  *) root=$(cd "$self/.." && pwd) ;;
esac
# Please sets HOME to the rule's scratch directory; keep the package cache
# in the project (.cache/ is ignored by git) so every rule shares it.
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$root/.cache}"
exec node "$root/bin/falco-probes.js" --root "$root" "$@"
