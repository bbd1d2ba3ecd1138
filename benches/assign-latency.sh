#!/usr/bin/env bash
# Expedited against normal: the time from a delivery request's 202 to its
# drone, behind a backlog. One engine on Redis Streams + Redis + MongoDB
# with a small fleet (--fleet-size, default 20, flights of a few seconds at
# sim speed 200), then `assign_latency` (benches/src/bin/assign_latency.rs):
# a backlog of normal requests, then pairs of one expedited and one normal.
#
# Usage: benches/assign-latency.sh ENGINE ASSIGN_LATENCY LOADGEN [BACKLOG] [PAIRS]
#
#   ENGINE          a `dronedelivery` binary (release build)
#   ASSIGN_LATENCY  the `assign_latency` binary
#   LOADGEN         a `loadgen` binary (for the cleanup)
#
# Environment: DD_BENCH_REDIS_URL (redis://127.0.0.1:6379), DD_BENCH_MONGODB
# (mongodb://127.0.0.1:27017), DD_AL_ARGS (extra `serve` arguments),
# DD_AL_BENCH_ARGS (extra `assign_latency` arguments: `--until created
# --backlog-concurrency 64` times the queue instead of the fleet). The
# run's key prefix and database are deleted afterwards.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
ENGINE=$1 BENCH=$2 LOADGEN=$3 BACKLOG=${4:-300} PAIRS=${5:-30}
REDIS_URL=${DD_BENCH_REDIS_URL:-redis://127.0.0.1:6379}
MONGO=${DD_BENCH_MONGODB:-mongodb://127.0.0.1:27017}
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
PREFIX=al-$$
DB=dd_al_$$
LOG=$(mktemp "${TMPDIR:-/tmp}/dd-al.XXXXXX.log")
# shellcheck disable=SC2086
RUST_LOG=warn "$ENGINE" serve --listen "127.0.0.1:$PORT" \
  --queue redis-streams --redis-url "$REDIS_URL" --redis-prefix "$PREFIX" \
  --mongodb-uri "$MONGO/$DB" --fleet-size 20 --depots 4 --sim-speed 200 ${DD_AL_ARGS:-} \
  </dev/null >"$LOG" 2>&1 &
PID=$!
cleanup() {
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  "$LOADGEN" cleanup --redis-url "$REDIS_URL" --redis-prefix "$PREFIX" \
    --mongodb-uri "$MONGO/$DB" >/dev/null 2>&1 || echo "warning: cleanup of $PREFIX failed" >&2
  rm -f "$LOG"
}
trap cleanup EXIT
until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/readyz"; do
  kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
# shellcheck disable=SC2086
"$BENCH" --url "http://127.0.0.1:$PORT" --backlog "$BACKLOG" --pairs "$PAIRS" ${DD_AL_BENCH_ARGS:-}
