#!/usr/bin/env bash
# Production-like local run: starts Redis and a MongoDB-wire server (if they
# are not running), then the engine on Redis Streams + Redis + MongoDB.
# Extra arguments go to `dronedelivery serve` (e.g. --sim-speed 50).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
exec cargo run --release --bin dronedelivery -- serve \
  --queue redis-streams \
  --redis-url "${DD_REDIS_URL:-redis://127.0.0.1:6379}" \
  --mongodb-uri "${DD_MONGODB_URI:-mongodb://127.0.0.1:27017/dronedelivery}" \
  --fleet-id "${DD_FLEET_ID:-local}" \
  "$@"
