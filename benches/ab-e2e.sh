#!/usr/bin/env bash
# A/B of the end-to-end scenario (d of benches/run.sh) between two engine
# builds, run alternately in one session so that both see the same machine:
# one engine on Redis Streams + Redis + MongoDB, 1,000 drones at sim speed
# 1000, N delivery requests with 64 in flight, until the workflow has
# completed them all. Prints one line per run (deliveries/s, ingest p99)
# and the ratio B/A of the means.
#
# Usage: benches/ab-e2e.sh ENGINE_A ENGINE_B LOADGEN [ROUNDS] [COUNT]
#
#   ENGINE_A, ENGINE_B  `dronedelivery` binaries (release builds)
#   LOADGEN             a `loadgen` binary (benches/src/bin/loadgen.rs)
#   ROUNDS              A/B pairs (default 3); COUNT requests per run (15000)
#
# With DD_AB_CEILING set to a `store_limit` binary, each round also runs
# `store_limit pipeline` with COUNT deliveries: the stores' work alone, no
# HTTP and no actors (benches/src/bin/store_limit/pipeline.rs), and the
# summary gives A and B as fractions of that ceiling.
#
# Environment: DD_AB_A_ARGS, DD_AB_B_ARGS (extra `serve` arguments of A, B),
# DD_AB_KEEP=1 (keep the engines' logs), DD_BENCH_REDIS_URL (redis://127.0.0.1:6379),
# DD_BENCH_MONGODB (mongodb://127.0.0.1:27017). Each run has its own key
# prefix and database, deleted afterwards.
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
[ $# -ge 3 ] || { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
A=$1 B=$2 LOADGEN=$3 ROUNDS=${4:-3} COUNT=${5:-15000}
REDIS_URL=${DD_BENCH_REDIS_URL:-redis://127.0.0.1:6379}
MONGO=${DD_BENCH_MONGODB:-mongodb://127.0.0.1:27017}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dd-ab.XXXXXX")
PID=

cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  if [ -n "${DD_AB_KEEP:-}" ]; then echo "logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT


run() { # label engine run-number [engine arguments...]
  local label=$1 engine=$2 n=$3 port prefix db
  shift 3
  port=$(free_port)
  prefix=ab-$$-$label-$n
  db=dd_ab_$$_${label}_$n
  RUST_LOG=warn "$engine" serve --listen "127.0.0.1:$port" \
    --queue redis-streams --redis-url "$REDIS_URL" --redis-prefix "$prefix" \
    --mongodb-uri "$MONGO/$db" --fleet-size 1000 --sim-speed 1000 "$@" \
    </dev/null >"$WORK/$label-$n.log" 2>&1 &
  PID=$!
  wait_ready "$PID" "$port" "$WORK/$label-$n.log"
  "$LOADGEN" e2e --url "http://127.0.0.1:$port" --count "$COUNT" --concurrency 64 \
    --timeout 120 >"$WORK/$label-$n.json" 2>/dev/null
  kill -TERM "$PID"
  wait "$PID" 2>/dev/null || true
  PID=
  "$LOADGEN" cleanup --redis-url "$REDIS_URL" --redis-prefix "$prefix" \
    --mongodb-uri "$MONGO/$db" >/dev/null 2>&1 || echo "warning: cleanup of $prefix failed" >&2
  python3 -c '
import json, sys
v = json.load(open(sys.argv[1]))
p99 = (v["ingest"].get("latency_ms") or {}).get("p99")
rate, done, sent = v["deliveries_per_sec"], v["completed"], v["accepted"]
drain, retried = v["drain_s"], v["retried"]
print(f"{sys.argv[2]} run {sys.argv[3]}: {rate} deliveries/s, ingest p99 {p99} ms, completed {done}/{sent}, drained {drain} s after the last post, {retried} retried")
' "$WORK/$label-$n.json" "$label" "$n" | tee -a "$WORK/lines"
}

ceiling() { # run-number
  "$DD_AB_CEILING" --mongodb-uri "$MONGO" pipeline --redis-url "$REDIS_URL" --count "$COUNT" \
    >"$WORK/ceiling-$1.json" 2>/dev/null
  python3 -c 'import json, sys; v = json.load(open(sys.argv[1])); print("ceiling run", sys.argv[2] + ":", round(v["deliveries_per_sec"], 1), "deliveries/s, CPU per delivery", v["cpu_per_delivery"])' \
    "$WORK/ceiling-$1.json" "$1" | tee -a "$WORK/lines"
}

# shellcheck disable=SC2086 # word splitting of the extra arguments is meant
for n in $(seq 1 "$ROUNDS"); do
  run A "$A" "$n" ${DD_AB_A_ARGS:-}
  run B "$B" "$n" ${DD_AB_B_ARGS:-}
  if [ -n "${DD_AB_CEILING:-}" ]; then ceiling "$n"; fi
done
python3 - "$WORK/lines" <<'EOF'
import re, sys
rates = {"A": [], "B": [], "ceiling": []}
for line in open(sys.argv[1]):
    m = re.match(r"(A|B|ceiling) run \d+: ([\d.]+) deliveries/s", line)
    if m:
        rates[m.group(1)].append(float(m.group(2)))
mean = {k: sum(v) / len(v) for k, v in rates.items() if v}
print(f"mean A {mean['A']:.0f}/s, B {mean['B']:.0f}/s, B/A = {mean['B'] / mean['A']:.2f}")
if "ceiling" in mean:
    c = mean["ceiling"]
    print(f"ceiling {c:.0f}/s: A {mean['A'] / c:.2f}, B {mean['B'] / c:.2f} of it")
EOF
