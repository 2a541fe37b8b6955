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
# The node that runs the tool: FALCO_PROBES_NODE, else the first node on PATH
# (.plzconfig passes the caller's PATH and FALCO_PROBES_NODE to the rules).
node=${FALCO_PROBES_NODE:-}
if [ -z "$node" ]; then
  node=$(command -v node 2>/dev/null || true)
fi
if [ -z "$node" ] || [ ! -x "$node" ]; then
  echo "falco-probes.sh: no node found (PATH=$PATH); put node 20+ on PATH or set FALCO_PROBES_NODE=/path/to/node" >&2
  exit 127
fi
exec "$node" "$root/bin/falco-probes.js" --root "$root" "$@"
