#!/usr/bin/env bash
# Ingestion against what this machine allows, in one session, run
# alternately:
#   hello   the axum hello world (`GET /`), two client threads, as in
#           `benches/run.sh` scenario a;
#   ceiling the hello world answering each `POST /api/deliveryrequests` with
#           one `XADD` of its body to a Redis stream, then `202` with the
#           body: HTTP and the stream's work with nothing else around them;
#   engine  `dronedelivery --role gateway` on Redis Streams (scenario b),
#           with any extra engine arguments given after `--`.
# The ceiling and the engine get the same client (loadgen ingest, one
# thread, 64 in flight, the same delivery requests). Prints one line per
# run, then the means and the engine's ratios to the hello world and to
# the ceiling.
#
# Usage: benches/ingest-limit.sh ENGINE LOADGEN [ROUNDS] [SECS] [-- ENGINE ARGS...]
#
# Environment: DD_BENCH_REDIS_URL (redis://127.0.0.1:6379). Each run's keys
# are deleted afterwards.
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
[ $# -ge 2 ] || { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
ENGINE=$1 LOADGEN=$2
shift 2
ROUNDS=3 SECS=5
if [ $# -gt 0 ] && [ "$1" != "--" ]; then ROUNDS=$1; shift; fi
if [ $# -gt 0 ] && [ "$1" != "--" ]; then SECS=$1; shift; fi
[ "${1:-}" = "--" ] && shift
EXTRA=("$@")
REDIS_URL=${DD_BENCH_REDIS_URL:-redis://127.0.0.1:6379}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dd-ingest.XXXXXX")
PID=

cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_http() { # pid url
  until curl -s -o /dev/null --max-time 2 "$2"; do
    kill -0 "$1" 2>/dev/null || { echo "server exited" >&2; exit 1; }
    sleep 0.1
  done
}

line() { # label run-number json
  python3 -c 'import json, sys; v = json.load(open(sys.argv[3])); print(sys.argv[1], "run", sys.argv[2] + ":", round(v["ok_rps"]), "req/s, p99", v["latency_ms"]["p99"], "ms")' \
    "$1" "$2" "$3" | tee -a "$WORK/lines"
}

hello() { # run-number [hello arguments...]
  local n=$1 label=hello port
  shift
  [ $# -gt 0 ] && label=ceiling
  port=$(free_port)
  "$LOADGEN" hello --listen "127.0.0.1:$port" "$@" >/dev/null 2>"$WORK/$label-$n.log" &
  PID=$!
  wait_http "$PID" "http://127.0.0.1:$port/"
  if [ "$label" = hello ]; then
    "$LOADGEN" --threads 2 http --url "http://127.0.0.1:$port" --concurrency 64 --duration "$SECS" \
      >"$WORK/$label-$n.json" 2>/dev/null
  else
    "$LOADGEN" ingest --url "http://127.0.0.1:$port" --concurrency 64 --duration "$SECS" \
      >"$WORK/$label-$n.json" 2>/dev/null
  fi
  kill -TERM "$PID"
  wait "$PID" 2>/dev/null || true
  PID=
  line "$label" "$n" "$WORK/$label-$n.json"
}

engine() { # run-number
  local n=$1 port prefix=ing-$$-$1
  port=$(free_port)
  RUST_LOG=warn "$ENGINE" serve --listen "127.0.0.1:$port" --role gateway \
    --queue redis-streams --redis-url "$REDIS_URL" --redis-prefix "$prefix" \
    ${EXTRA[@]+"${EXTRA[@]}"} </dev/null >"$WORK/engine-$n.log" 2>&1 &
  PID=$!
  wait_ready "$PID" "$port" "$WORK/engine-$n.log"
  "$LOADGEN" ingest --url "http://127.0.0.1:$port" --concurrency 64 --duration "$SECS" \
    >"$WORK/engine-$n.json" 2>/dev/null
  kill -TERM "$PID"
  wait "$PID" 2>/dev/null || true
  PID=
  "$LOADGEN" cleanup --redis-url "$REDIS_URL" --redis-prefix "$prefix" >/dev/null 2>&1 ||
    echo "warning: cleanup of $prefix failed" >&2
  line engine "$n" "$WORK/engine-$n.json"
}

for n in $(seq 1 "$ROUNDS"); do
  hello "$n"
  hello "$n" --redis-url "$REDIS_URL" --stream "ing-$$-ceiling:hello-ingest"
  "$LOADGEN" cleanup --redis-url "$REDIS_URL" --redis-prefix "ing-$$-ceiling" >/dev/null 2>&1 || true
  engine "$n"
done
python3 - "$WORK/lines" <<'PY'
import re, sys
rates = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\w+) run \d+: ([\d.]+) req/s", line)
    if m:
        rates.setdefault(m.group(1), []).append(float(m.group(2)))
mean = {k: sum(v) / len(v) for k, v in rates.items()}
print(f"mean: hello {mean['hello']:.0f}, ceiling (hello + XADD) {mean['ceiling']:.0f}, engine {mean['engine']:.0f} req/s")
print(f"ceiling / hello {mean['ceiling'] / mean['hello']:.2f}; engine / hello {mean['engine'] / mean['hello']:.2f}; engine / ceiling {mean['engine'] / mean['ceiling']:.2f}")
PY
