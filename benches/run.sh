#!/usr/bin/env bash
# End-to-end load benchmarks of the drone delivery engine: real `dronedelivery`
# processes on Redis Streams + Redis + MongoDB, driven by `loadgen`
# (benches/src/bin/loadgen.rs, whose docs explain open vs closed loop and how
# completion is tracked).
#
# Usage: benches/run.sh [--quick] [--out DIR|FILE.json] [--skip-build]
#
#   --quick       short runs (a few seconds per scenario, small counts);
#                 under 3 minutes on 2 cores once the binaries are built
#   --out         where the results go: a directory (the file is named after
#                 the UTC start time) or a .json file; default benches/results/
#   --skip-build  use the release binaries already built
#
# Scenarios, each against processes started for it alone (own Redis key
# prefix and MongoDB database, deleted afterwards):
#   a  hello-world baseline: axum hello world, closed loop, max throughput
#   b  ingestion, closed loop, same concurrency (engine --role gateway), and
#      its ratio to a; and the ceiling of ingestion on this machine: the
#      hello world answering each delivery request with one XADD of its body
#      to a Redis stream (the stores' share and HTTP with nothing else),
#      driven by the same client, with the engine's ratio to it
#   c  ingestion, open loop at 5,000 req/s: latency percentiles (p99)
#   d  end to end: delivery requests until the workflow has completed them
#      all (--role all); prints `end-to-end deliveries/s: N`
#   e  consumer pool width sweep (--consumers): deliveries/s and ingest p99
#   f  two engine processes on one stream (distinct --fleet-id) vs one (d)
#   g  packages PUT/GET on the engine, and on the original Node.js service
#      if benches/peers/package-node.sh can start it (exit 3: unavailable)
#   h  engine memory (VmRSS) before and after the end-to-end run
#
# Output: one JSON file with every figure, an SVG plot of e next to it
# (benches/plot.py, standard library only), and a Markdown table on stdout
# comparing each figure with the original system's published figures and
# the targets. Progress goes to stderr.
#
# Environment: CARGO_TARGET_DIR (where the binaries are), DD_BENCH_REDIS_URL
# (redis://127.0.0.1:6379), DD_BENCH_MONGODB (mongodb://127.0.0.1:27017).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0
OUT=
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --out) [ $# -ge 2 ] || { echo "--out needs a value" >&2; exit 2; }; OUT=$2; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    --skip-build) BUILD=0; shift ;;
    -h | --help) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

REDIS_URL=${DD_BENCH_REDIS_URL:-redis://127.0.0.1:6379}
MONGO=${DD_BENCH_MONGODB:-mongodb://127.0.0.1:27017}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN_ID=$(echo "$STAMP" | tr '[:upper:]' '[:lower:]')-$$

if [ "$QUICK" -eq 1 ]; then
  HTTP_SECS=4       # a, b, c, g: seconds per HTTP load
  E2E_COUNT=15000   # d, f: delivery requests
  SWEEP_COUNT=5000  # e: delivery requests per pool width
  SWEEP="1 4 16"
  E2E_TIMEOUT=120
  BODIES=100000     # pre-generated ingest bodies (closed loop)
  PEER_WAIT=60      # seconds the Node peer may take to start
else
  HTTP_SECS=15
  E2E_COUNT=100000
  SWEEP_COUNT=30000
  SWEEP="1 2 4 8 16 32"
  E2E_TIMEOUT=600
  BODIES=300000
  PEER_WAIT=600
fi
CONCURRENCY=64     # closed loop: requests in flight (a, b, d, e, f, g)
# loadgen runs single-threaded (least CPU taken from the server) except
# against the hello world, where one thread is the bottleneck (~9 µs of
# client CPU per request, ~100k req/s): two threads give the baseline its
# real maximum, so the ingestion/hello-world ratio is not flattered.
HELLO_CLIENT_THREADS=2
OPEN_RATE=5000     # c
OPEN_CONNECTIONS=64

RESULTS_DIR=$ROOT/benches/results
case "$OUT" in
  "") OUT_JSON=$RESULTS_DIR/$STAMP.json ;;
  *.json) OUT_JSON=$OUT ;;
  *) OUT_JSON=${OUT%/}/$STAMP.json ;;
esac
mkdir -p "$(dirname "$OUT_JSON")"
OUT_SVG=${OUT_JSON%.json}.svg

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dd-bench.XXXXXX")
log() { echo "==> $*" >&2; }
die() {
  echo "error: $*" >&2
  exit 1
}

# ------------------------------------------------------------ bookkeeping

STARTED_PIDS=()   # processes this script started
PREFIXES=()       # Redis prefixes to delete
DATABASES=()      # MongoDB databases to drop
PEER_PORT=

stop_pid() { # pid [grace seconds]
  local pid=$1 grace=${2:-30} waited=0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge $((grace * 10)) ]; then
      echo "warning: pid $pid still running ${grace}s after SIGTERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  wait "$pid" 2>/dev/null || true
}

cleanup_data() { # prefix database
  "$LOADGEN" cleanup --redis-url "$REDIS_URL" --redis-prefix "$1" \
    --mongodb-uri "$MONGO/$2" >/dev/null 2>>"$WORK/cleanup.log" ||
    echo "warning: cleanup of $1 / $2 failed (see $WORK/cleanup.log)" >&2
}

on_exit() {
  local rc=$?
  set +e
  for pid in "${STARTED_PIDS[@]}"; do
    stop_pid "$pid" 10
  done
  if [ -n "$PEER_PORT" ]; then
    "$ROOT/benches/peers/package-node.sh" --stop --port "$PEER_PORT" >/dev/null 2>&1
  fi
  if [ -n "${LOADGEN:-}" ] && [ -x "${LOADGEN:-}" ]; then
    for i in "${!PREFIXES[@]}"; do
      cleanup_data "${PREFIXES[$i]}" "${DATABASES[$i]}"
    done
  fi
  if [ "$rc" -ne 0 ]; then
    echo "benchmark failed (exit $rc); engine logs:" >&2
    for f in "$WORK"/*.log; do
      [ -f "$f" ] || continue
      echo "---- $f (last 20 lines)" >&2
      tail -n 20 "$f" >&2
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Waits until GET $1 answers 2xx, while pid $2 lives; $3 seconds at most.
wait_http() {
  local url=$1 pid=$2 secs=${3:-60} waited=0
  until curl -sf -o /dev/null --max-time 2 "$url"; do
    kill -0 "$pid" 2>/dev/null || die "process $pid exited before $url answered"
    [ "$waited" -ge $((secs * 10)) ] && die "$url did not answer within ${secs}s"
    sleep 0.1
    waited=$((waited + 1))
  done
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# CPU seconds (user + system) a process has used so far.
cpu_s() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"
}

# Starts an engine; sets ENGINE_PID and ENGINE_URL. Arguments: name, Redis
# prefix, MongoDB database, then extra flags.
start_engine() {
  local name=$1 prefix=$2 db=$3
  shift 3
  local port
  port=$(free_port)
  RUST_LOG=warn "$ENGINE" serve --listen "127.0.0.1:$port" \
    --queue redis-streams --redis-url "$REDIS_URL" --redis-prefix "$prefix" \
    --mongodb-uri "$MONGO/$db" --fleet-size 1000 --sim-speed 1000 "$@" \
    </dev/null >"$WORK/$name.log" 2>&1 &
  ENGINE_PID=$!
  STARTED_PIDS+=("$ENGINE_PID")
  ENGINE_URL=http://127.0.0.1:$port
  wait_http "$ENGINE_URL/readyz" "$ENGINE_PID" 60
  log "$name: engine pid $ENGINE_PID on $ENGINE_URL ($*)"
}

# Runs loadgen with the arguments after $1, its JSON to file $1. In the
# background and waited for, so that a signal to this script stops it at
# once (the EXIT trap kills it) instead of after the run.
lg() {
  local out=$1
  shift
  "$LOADGEN" "$@" >"$out" &
  local pid=$!
  STARTED_PIDS+=("$pid")
  local rc=0
  wait "$pid" || rc=$?
  forget_pid "$pid"
  if [ "$rc" -ne 0 ]; then
    echo "error: loadgen $1 failed (exit $rc)" >&2
    return "$rc"
  fi
}

forget_pid() {
  local kept=()
  for pid in "${STARTED_PIDS[@]}"; do
    [ "$pid" = "$1" ] || kept+=("$pid")
  done
  STARTED_PIDS=("${kept[@]}")
}

stop_engine() {
  stop_pid "$1" 30
  forget_pid "$1"
}

# A fresh Redis prefix and MongoDB database for scenario $1: sets PREFIX, DB.
new_run() {
  PREFIX=bench-$RUN_ID-$1
  DB=dd_bench_${RUN_ID//-/_}_$1
  PREFIXES+=("$PREFIX")
  DATABASES+=("$DB")
}

# Deletes the data of the last new_run.
drop_run() {
  cleanup_data "$PREFIX" "$DB"
  unset 'PREFIXES[-1]' 'DATABASES[-1]'
}

# ------------------------------------------------------------------ setup

started_at=$SECONDS
log "starting Redis and MongoDB (scripts/services.sh)"
"$ROOT/scripts/services.sh" >&2

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
if [ "$BUILD" -eq 1 ]; then
  log "building release binaries"
  (cd "$ROOT" && cargo build --release --locked -p dronedelivery-engine -p dronedelivery-benches --bins) >&2
fi
ENGINE=$TARGET_DIR/release/dronedelivery
LOADGEN=$TARGET_DIR/release/loadgen
[ -x "$ENGINE" ] || die "$ENGINE not built"
[ -x "$LOADGEN" ] || die "$LOADGEN not built"
bench_started=$SECONDS

python3 - "$WORK/meta.json" "$QUICK" "$STAMP" "$ROOT" <<'EOF'
import json, os, platform, subprocess, sys
out, quick, stamp, root = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return None
cpu = None
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
mem_kb = None
try:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
except OSError:
    pass
json.dump({
    "started_utc": stamp,
    "quick": quick,
    "machine": {"cpus": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem_kb / 1048576, 1) if mem_kb else None,
                "kernel": platform.release()},
    "git_commit": sh("git", "-C", root, "rev-parse", "HEAD"),
    "git_dirty": bool(sh("git", "-C", root, "status", "--porcelain", "--untracked-files=no")),
    "rustc": sh("rustc", "--version"),
}, open(out, "w"))
EOF
cat >"$WORK/params.json" <<EOF
{"http_secs": $HTTP_SECS, "concurrency": $CONCURRENCY, "open_rate": $OPEN_RATE,
 "open_connections": $OPEN_CONNECTIONS, "e2e_count": $E2E_COUNT, "sweep_count": $SWEEP_COUNT,
 "sweep": [$(echo "$SWEEP" | tr ' ' ',')], "fleet_size": 1000, "sim_speed": 1000,
 "queue": "redis-streams", "stores": "redis + mongodb"}
EOF

# ----------------------------------------------------------- a: hello world

log "a: hello-world baseline, closed loop, $CONCURRENCY in flight, ${HTTP_SECS}s"
port=$(free_port)
"$LOADGEN" hello --listen "127.0.0.1:$port" >/dev/null 2>"$WORK/hello.log" &
HELLO_PID=$!
STARTED_PIDS+=("$HELLO_PID")
wait_http "http://127.0.0.1:$port/" "$HELLO_PID" 20
lg "$WORK/a_hello.json" --threads "$HELLO_CLIENT_THREADS" http --url "http://127.0.0.1:$port" --concurrency "$CONCURRENCY" \
  --duration "$HTTP_SECS"
stop_engine "$HELLO_PID"

log "b: ingestion ceiling: hello world + one XADD per delivery request, closed loop, $CONCURRENCY in flight, ${HTTP_SECS}s"
new_run xadd
port=$(free_port)
"$LOADGEN" hello --listen "127.0.0.1:$port" --redis-url "$REDIS_URL" --stream "$PREFIX:hello-ingest" \
  >/dev/null 2>"$WORK/hello-xadd.log" &
HELLO_PID=$!
STARTED_PIDS+=("$HELLO_PID")
wait_http "http://127.0.0.1:$port/" "$HELLO_PID" 20
lg "$WORK/b_ingest_ceiling.json" ingest --url "http://127.0.0.1:$port" --concurrency "$CONCURRENCY" \
  --duration "$HTTP_SECS" --bodies "$BODIES"
stop_engine "$HELLO_PID"
drop_run

# ------------------------------------------------------ b, c: ingestion only

log "b: ingestion (--role gateway), closed loop, $CONCURRENCY in flight, ${HTTP_SECS}s"
new_run b
start_engine ingest-closed "$PREFIX" "$DB" --role gateway
lg "$WORK/b_ingest_closed.json" ingest --url "$ENGINE_URL" --concurrency "$CONCURRENCY" \
  --duration "$HTTP_SECS" --bodies "$BODIES"
stop_engine "$ENGINE_PID"
drop_run

log "c: ingestion (--role gateway), open loop at $OPEN_RATE req/s over $OPEN_CONNECTIONS connections, ${HTTP_SECS}s"
new_run c
start_engine ingest-open "$PREFIX" "$DB" --role gateway
lg "$WORK/c_ingest_open.json" ingest --url "$ENGINE_URL" --mode open --rate "$OPEN_RATE" \
  --connections "$OPEN_CONNECTIONS" --duration "$HTTP_SECS"
stop_engine "$ENGINE_PID"
drop_run

# ------------------------------------------------- d, h: end to end, memory

log "d: end to end, $E2E_COUNT delivery requests, $CONCURRENCY in flight"
new_run d
start_engine e2e "$PREFIX" "$DB" --fleet-id a
rss_before=$(rss_kb "$ENGINE_PID")
cpu_before=$(cpu_s "$ENGINE_PID")
lg "$WORK/d_e2e.json" e2e --url "$ENGINE_URL" --count "$E2E_COUNT" --concurrency "$CONCURRENCY" \
  --timeout "$E2E_TIMEOUT"
rss_after=$(rss_kb "$ENGINE_PID")
hwm=$(hwm_kb "$ENGINE_PID")
cpu_after=$(cpu_s "$ENGINE_PID")
stop_engine "$ENGINE_PID"
drop_run
cat >"$WORK/h_memory.json" <<EOF
{"rss_before_kb": $rss_before, "rss_after_kb": $rss_after, "rss_peak_kb": $hwm,
 "engine_cpu_s": $(python3 -c "print(round($cpu_after - $cpu_before, 2))"), "deliveries": $E2E_COUNT}
EOF
e2e_rate=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["deliveries_per_sec"])' "$WORK/d_e2e.json")
printf "end-to-end deliveries/s: %.0f\n" "$e2e_rate"
log "h: engine RSS ${rss_before} kB before, ${rss_after} kB after the end-to-end run (peak ${hwm} kB)"

# ------------------------------------------------------ e: pool width sweep

for consumers in $SWEEP; do
  log "e: pool width $consumers, $SWEEP_COUNT delivery requests"
  new_run "e$consumers"
  start_engine "sweep-$consumers" "$PREFIX" "$DB" --fleet-id a --consumers "$consumers"
  lg "$WORK/e_sweep_$consumers.json" e2e --url "$ENGINE_URL" --count "$SWEEP_COUNT" --concurrency "$CONCURRENCY" \
    --timeout "$E2E_TIMEOUT"
  stop_engine "$ENGINE_PID"
  drop_run
done

# ------------------------------------------- f: two processes on one stream

log "f: two engines on one stream, $E2E_COUNT delivery requests spread over both"
new_run f
start_engine two-a "$PREFIX" "$DB" --fleet-id a
pid_a=$ENGINE_PID url_a=$ENGINE_URL
start_engine two-b "$PREFIX" "$DB" --fleet-id b
pid_b=$ENGINE_PID url_b=$ENGINE_URL
lg "$WORK/f_two_engines.json" e2e --url "$url_a" --url "$url_b" --count "$E2E_COUNT" \
  --concurrency "$CONCURRENCY" --timeout "$E2E_TIMEOUT"
stop_engine "$pid_a"
stop_engine "$pid_b"
drop_run

# -------------------------------------------------------------- g: packages

log "g: packages PUT/GET on the engine, $CONCURRENCY in flight, ${HTTP_SECS}s"
new_run g
start_engine packages "$PREFIX" "$DB" --fleet-id a
lg "$WORK/g_packages_engine.json" packages --url "$ENGINE_URL" --flavor engine --concurrency "$CONCURRENCY" \
  --duration "$HTTP_SECS"
stop_engine "$ENGINE_PID"
drop_run

PEER=$ROOT/benches/peers/package-node.sh
if [ -x "$PEER" ]; then
  log "g: packages on the original Node.js service (benches/peers/package-node.sh)"
  new_run node
  PEER_PORT=$(free_port)
  peer_rc=0
  peer_out=$(DD_PEER_MONGODB_URI="$MONGO/$DB" DD_PEER_WAIT_SECS=60 \
    timeout "$PEER_WAIT" "$PEER" --port "$PEER_PORT" 2>"$WORK/package-node.log") || peer_rc=$?
  if [ "$peer_rc" -eq 0 ]; then
    peer_url=$(echo "$peer_out" | sed -n 's/^package-node: \(http:[^ ]*\).*/\1/p' | tail -n 1)
    peer_url=${peer_url:-http://127.0.0.1:$PEER_PORT}
    if lg "$WORK/g_packages_node.json.tmp" packages --url "$peer_url" --flavor node --concurrency "$CONCURRENCY" \
      --duration "$HTTP_SECS"; then
      python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["status"]="ok"; json.dump(d, open(sys.argv[2],"w"))' \
        "$WORK/g_packages_node.json.tmp" "$WORK/g_packages_node.json"
    else
      echo '{"status": "failed", "reason": "load run failed"}' >"$WORK/g_packages_node.json"
    fi
  else
    if [ "$peer_rc" -eq 3 ]; then
      status=unavailable
    else
      status=failed
    fi
    log "g: Node peer $status (exit $peer_rc); see the log tail below"
    tail -n 5 "$WORK/package-node.log" >&2 || true
    reason=$(tail -n 1 "$WORK/package-node.log" 2>/dev/null | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))')
    echo "{\"status\": \"$status\", \"exit_code\": $peer_rc, \"reason\": $reason}" >"$WORK/g_packages_node.json"
  fi
  "$PEER" --stop --port "$PEER_PORT" >/dev/null 2>&1 || true
  PEER_PORT=
  drop_run
else
  echo '{"status": "unavailable", "reason": "benches/peers/package-node.sh not found"}' >"$WORK/g_packages_node.json"
fi

# ----------------------------------------------------------------- report

bench_secs=$((SECONDS - bench_started))
log "scenarios took ${bench_secs}s (setup and build $((bench_started - started_at))s)"
python3 "$ROOT/benches/plot.py" assemble "$WORK" "$OUT_JSON" --bench-seconds "$bench_secs"
python3 "$ROOT/benches/plot.py" svg "$OUT_JSON" "$OUT_SVG"
python3 "$ROOT/benches/plot.py" table "$OUT_JSON"
echo
echo "Results: ${OUT_JSON#"$ROOT"/} (plot: ${OUT_SVG#"$ROOT"/})"
