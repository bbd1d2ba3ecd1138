#!/usr/bin/env bash
# Packages against the limit of the database itself, in one session: the
# engine's `PUT` then `GET /api/packages/{id}` (loadgen, closed loop, 64 in
# flight) with its MongoDB calls batched (the default) and unbatched
# (`--store-batch-max 1`), and the bare `mongodb` driver loop of the same
# upsert and find against the same server (`store_limit packages`), run
# alternately. Prints one line per run and each engine figure as a
# fraction of the bare loop.
#
# Usage: benches/packages-limit.sh ENGINE LOADGEN STORE_LIMIT [ROUNDS] [SECS]
#
#   ENGINE       a `dronedelivery` binary (release build)
#   LOADGEN      a `loadgen` binary; STORE_LIMIT a `store_limit` binary
#   ROUNDS       rounds of the three runs (default 3); SECS per run (5)
#
# Environment: DD_BENCH_REDIS_URL (redis://127.0.0.1:6379), DD_BENCH_MONGODB
# (mongodb://127.0.0.1:27017). Each run has its own database, dropped
# afterwards.
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
[ $# -ge 3 ] || { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
ENGINE=$1 LOADGEN=$2 STORE_LIMIT=$3 ROUNDS=${4:-3} SECS=${5:-5}
REDIS_URL=${DD_BENCH_REDIS_URL:-redis://127.0.0.1:6379}
MONGO=${DD_BENCH_MONGODB:-mongodb://127.0.0.1:27017}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dd-packages.XXXXXX")
PID=

cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT


engine() { # label run-number [engine arguments...]
  local label=$1 n=$2 port db
  shift 2
  port=$(free_port)
  db=dd_pk_$$_${label}_$n
  RUST_LOG=warn "$ENGINE" serve --listen "127.0.0.1:$port" --role gateway \
    --queue redis-streams --redis-url "$REDIS_URL" --redis-prefix "pk-$$-$label-$n" \
    --mongodb-uri "$MONGO/$db" "$@" </dev/null >"$WORK/$label-$n.log" 2>&1 &
  PID=$!
  wait_ready "$PID" "$port" "$WORK/$label-$n.log"
  "$LOADGEN" packages --url "http://127.0.0.1:$port" --duration "$SECS" --concurrency 64 \
    >"$WORK/$label-$n.json" 2>/dev/null
  kill -TERM "$PID"
  wait "$PID" 2>/dev/null || true
  PID=
  "$LOADGEN" cleanup --redis-url "$REDIS_URL" --redis-prefix "pk-$$-$label-$n" \
    --mongodb-uri "$MONGO/$db" >/dev/null 2>&1 || echo "warning: cleanup of $db failed" >&2
  python3 -c 'import json, sys; v = json.load(open(sys.argv[1])); print(sys.argv[2], "run", sys.argv[3] + ":", round(v["rps"]), "req/s")' \
    "$WORK/$label-$n.json" "$label" "$n" | tee -a "$WORK/lines"
}

bare() { # run-number
  "$STORE_LIMIT" --mongodb-uri "$MONGO" --secs "$SECS" --concurrency 64 packages 2>/dev/null >"$WORK/bare-$1.json"
  python3 -c 'import json, sys; v = json.load(open(sys.argv[1])); print("bare run", sys.argv[2] + ":", round(v["per_second"]), "req/s")' \
    "$WORK/bare-$1.json" "$1" | tee -a "$WORK/lines"
}

for n in $(seq 1 "$ROUNDS"); do
  engine batched "$n"
  engine unbatched "$n" --store-batch-max 1
  bare "$n"
done
python3 - "$WORK/lines" <<'EOF'
import re, sys
rates = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\w+) run \d+: ([\d.]+) req/s", line)
    if m:
        rates.setdefault(m.group(1), []).append(float(m.group(2)))
mean = {k: sum(v) / len(v) for k, v in rates.items()}
print(f"mean: engine batched {mean['batched']:.0f}, unbatched {mean['unbatched']:.0f}, bare driver loop {mean['bare']:.0f} req/s")
print(f"engine / bare driver loop: batched {mean['batched'] / mean['bare']:.2f}, unbatched {mean['unbatched'] / mean['bare']:.2f}")
EOF
