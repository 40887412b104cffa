#!/usr/bin/env bash
# Start GraphQL Hive Gateway on 127.0.0.1:PORT/graphql over supergraph.graphql (run setup.sh first).
#   usage: ALMANAC_URL=http://127.0.0.1:9101 AUTOPOSTING_URL=http://127.0.0.1:9102 \
#          ALMANAC_TOKEN=... AUTOPOSTING_KEY=... bench/node/run.sh PORT [WORKERS]
# WORKERS (default 1) is Hive Gateway's --fork: 1 = a single process serving requests itself;
# N > 1 = a primary that only supervises plus N node:cluster workers sharing the port
# (the CLI refuses N above min(CPU count, free memory in GiB)). Upstream URLs and credentials
# are read at start-up by gateway.config.ts (transportEntries), never baked into the supergraph.
# Stop: with WORKERS > 1 the first SIGTERM only closes the port; send a second one to end it.
set -euo pipefail
cd "$(dirname "$0")"
port="${1:?usage: run.sh PORT [WORKERS]}"
workers="${2:-1}"
for v in ALMANAC_URL AUTOPOSTING_URL ALMANAC_TOKEN AUTOPOSTING_KEY; do
  [[ -n "${!v:-}" ]] || { echo "run.sh: $v must be set" >&2; exit 2; }
done
[[ -s supergraph.graphql ]] || { echo "run.sh: no supergraph.graphql: run setup.sh first" >&2; exit 2; }
export NODE_ENV="${NODE_ENV:-production}" LOG_LEVEL="${LOG_LEVEL:-warn}"
exec ./node_modules/.bin/hive-gateway supergraph supergraph.graphql \
  -c gateway.config.ts -h 127.0.0.1 -p "$port" --fork "$workers"
