#!/usr/bin/env bash
# A/B ingestion benchmark of two `dronedelivery` binaries on the embedded
# backends: for each round, a fresh engine of A then of B, each loaded by
# `loadgen ingest` (closed loop, 64 in flight) for SECS seconds. Prints one
# JSON line per run (throughput, latency, the engine's CPU time per request
# from /proc) and then the medians of each side. Alternating A and B spreads
# the noise of a shared machine over both.
#
#   benches/ab-ingest.sh A_BIN B_BIN [--role gateway|all] [--rounds N] [--secs S] [-- serve flags…]
#
# --role gateway (default) measures the HTTP ingestion path alone (nothing
# consumes the in-process queue, so its capacity is raised to 5,000,000);
# --role all is the embedded default, with the workflow and the drones
# running beside ingestion. LOADGEN names the loadgen binary (default:
# target/release/loadgen; build it with
# `cargo build --release -p dronedelivery-benches --bin loadgen`).
# DD_AB_A_ARGS / DD_AB_B_ARGS add `serve` flags to one side only, and
# DD_AB_A_LOADGEN / DD_AB_B_LOADGEN `loadgen` flags (`--bearer TOKEN`):
# benches/auth-cost.sh compares one binary with authentication off and on.
set -euo pipefail

[ $# -ge 2 ] || { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
A=$1
B=$2
shift 2
ROLE=gateway
ROUNDS=5
SECS=15
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --role) ROLE=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOADGEN=${LOADGEN:-$ROOT/target/release/loadgen}
[ "$ROLE" = gateway ] && EXTRA=(--queue-capacity 5000000 "${EXTRA[@]}")
TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dd-ab.XXXXXX")
RESULTS=$WORK/results.jsonl
ENGINE_PID=
cleanup() {
  if [ -n "$ENGINE_PID" ]; then kill -TERM "$ENGINE_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

for round in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    bin=$A side_args=${DD_AB_A_ARGS:-} side_loadgen=${DD_AB_A_LOADGEN:-}
    [ "$side" = B ] && bin=$B side_args=${DD_AB_B_ARGS:-} side_loadgen=${DD_AB_B_LOADGEN:-}
    port=$(free_port)
    # shellcheck disable=SC2086
    RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --role "$ROLE" "${EXTRA[@]}" $side_args \
      </dev/null >"$WORK/engine-$side.log" 2>&1 &
    ENGINE_PID=$!
    for _ in $(seq 1 100); do
      curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
      sleep 0.1
    done
    sleep 1
    c0=$(cpu_ticks "$ENGINE_PID")
    load=$(cut -d' ' -f1 /proc/loadavg)
    # shellcheck disable=SC2086
    "$LOADGEN" $side_loadgen ingest --url "http://127.0.0.1:$port" --concurrency 64 --duration "$SECS" \
      2>"$WORK/loadgen.err" >"$WORK/run.json"
    c1=$(cpu_ticks "$ENGINE_PID")
    python3 - "$side" "$round" "$ROLE" "$c0" "$c1" "$TCK" "$load" "$WORK/run.json" >>"$RESULTS" <<'PY'
import json, sys
side, rnd, role, c0, c1, tck, load, path = sys.argv[1:]
d = json.load(open(path))
cpu_s = (int(c1) - int(c0)) / int(tck)
print(json.dumps({"side": side, "round": int(rnd), "role": role, "ok_rps": d["ok_rps"], "ok": d["ok"],
  "non_2xx": d["non_2xx"], "errors": d["errors"], "p50_ms": d["latency_ms"]["p50"],
  "p99_ms": d["latency_ms"]["p99"], "engine_cpu_s": cpu_s,
  "cpu_us_per_req": round(cpu_s * 1e6 / max(d["ok"], 1), 2), "load1_at_start": float(load)}))
PY
    kill -TERM "$ENGINE_PID"
    wait "$ENGINE_PID" || true
    ENGINE_PID=
    tail -1 "$RESULTS"
  done
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
for side in ("A", "B"):
    r = [x for x in runs if x["side"] == side]
    print(f"{side}: median {statistics.median(x['ok_rps'] for x in r):,.0f} req/s, "
          f"p99 {statistics.median(x['p99_ms'] for x in r):.1f} ms, "
          f"engine CPU {statistics.median(x['cpu_us_per_req'] for x in r):.2f} µs/request "
          f"over {len(r)} runs; any non-2xx: {any(x['non_2xx'] for x in r)}")
PY
