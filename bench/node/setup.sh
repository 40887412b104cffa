#!/usr/bin/env bash
# Hive Gateway comparison: install pinned deps from package-lock.json (npm ci only) and compose
# supergraph.graphql from the shared OpenAPI files. Idempotent: a second run does nothing when
# node_modules matches the lockfile and the supergraph is newer than its inputs.
#   UPSTREAMS_DIR  folder holding almanac.openapi.yaml and autoposting.openapi.yaml
#                  (default: ../../../shared/upstreams, i.e. shared/ beside the repo clone)
set -euo pipefail
cd "$(dirname "$0")"
export UPSTREAMS_DIR="${UPSTREAMS_DIR:-$(cd ../../.. && pwd)/shared/upstreams}"

lock_sum=$(sha256sum package-lock.json package.json | sha256sum | cut -d' ' -f1)
if [[ ! -d node_modules || "$(cat node_modules/.setup-stamp 2>/dev/null)" != "$lock_sum" ]]; then
  echo "setup.sh: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > node_modules/.setup-stamp
fi

out=supergraph.graphql
inputs=(mesh.config.ts package-lock.json "$UPSTREAMS_DIR/almanac.openapi.yaml" "$UPSTREAMS_DIR/autoposting.openapi.yaml")
stale=0
[[ -s $out ]] || stale=1
for f in "${inputs[@]}"; do
  [[ -f $f ]] || { echo "setup.sh: missing $f" >&2; exit 1; }
  [[ $f -nt $out ]] && stale=1
done
if (( stale )); then
  echo "setup.sh: composing $out" >&2
  rm -f "supergraph.tmp.graphql"
  LOG_LEVEL=warn ./node_modules/.bin/mesh-compose -c mesh.config.ts -o "supergraph.tmp.graphql" >&2
  mv "supergraph.tmp.graphql" "$out"
fi
echo "setup.sh: ready ($(pwd)/$out)" >&2
