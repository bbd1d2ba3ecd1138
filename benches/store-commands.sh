#!/usr/bin/env bash
# What one delivery costs the stores: the commands the engine sends to
# Redis and MongoDB per delivery, end to end (scenario d of benches/run.sh:
# Redis Streams + Redis + MongoDB, 1,000 drones at sim speed 1000), and the
# server CPU they take.
#
# Redis: `INFO commandstats` before and after the run (calls and µs per
# command, divided by the deliveries), and the server's slow log with a
# threshold of 0 (every command with its duration) for the Lua script calls
# (`EVALSHA`), split by script and what their keys name (`…:delivery:…`,
# `…:drones`, a stream, a lease…). MongoDB: the server's CPU time from /proc
# (its process is found by name). Use it on an otherwise idle machine:
# everything on the Redis server is counted. The slow log keeps every
# command of the run (about 1 KB each): keep COUNT to a few thousand.
#
# Usage: benches/store-commands.sh ENGINE LOADGEN [COUNT] [-- ENGINE ARGS...]
#
# Environment: DD_BENCH_REDIS_URL (redis://127.0.0.1:6379), DD_BENCH_MONGODB
# (mongodb://127.0.0.1:27017).
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
[ $# -ge 2 ] || { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
ENGINE=$1 LOADGEN=$2
shift 2
COUNT=3000
if [ $# -gt 0 ] && [ "$1" != "--" ]; then COUNT=$1; shift; fi
[ "${1:-}" = "--" ] && shift
REDIS_URL=${DD_BENCH_REDIS_URL:-redis://127.0.0.1:6379}
MONGO=${DD_BENCH_MONGODB:-mongodb://127.0.0.1:27017}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dd-cmds.XXXXXX")
PID=
SLOWLOG=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  if [ -n "$SLOWLOG" ]; then
    redis-cli -u "$REDIS_URL" config set slowlog-log-slower-than "${SLOWLOG% *}" slowlog-max-len "${SLOWLOG#* }" >/dev/null || true
    redis-cli -u "$REDIS_URL" slowlog reset >/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

port=$(free_port)
prefix=cmds-$$
db=dd_cmds_$$
RUST_LOG=warn "$ENGINE" serve --listen "127.0.0.1:$port" \
  --queue redis-streams --redis-url "$REDIS_URL" --redis-prefix "$prefix" \
  --mongodb-uri "$MONGO/$db" --fleet-size 1000 --sim-speed 1000 "$@" \
  </dev/null >"$WORK/engine.log" 2>&1 &
PID=$!
wait_ready "$PID" "$port" "$WORK/engine.log"
sleep 1
mongo_pid=$(pgrep -o -f 'secantusd|mongod' || true)
cpu() { # utime+stime of a pid, in clock ticks
  [ -n "$1" ] && awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}
SLOWLOG="$(redis-cli -u "$REDIS_URL" config get slowlog-log-slower-than | tail -1) $(redis-cli -u "$REDIS_URL" config get slowlog-max-len | tail -1)"
redis-cli -u "$REDIS_URL" config set slowlog-log-slower-than 0 slowlog-max-len $((COUNT * 60)) >/dev/null
redis-cli -u "$REDIS_URL" slowlog reset >/dev/null
redis-cli -u "$REDIS_URL" config resetstat >/dev/null
m0=$(cpu "$mongo_pid") e0=$(cpu "$PID")
"$LOADGEN" e2e --url "http://127.0.0.1:$port" --count "$COUNT" --concurrency 64 --timeout 180 >"$WORK/e2e.json" 2>/dev/null
m1=$(cpu "$mongo_pid") e1=$(cpu "$PID")
redis-cli -u "$REDIS_URL" info commandstats >"$WORK/stats"
redis-cli -u "$REDIS_URL" config set slowlog-log-slower-than -1 >/dev/null
redis-cli -u "$REDIS_URL" --json slowlog get -1 >"$WORK/slowlog"
kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=
"$LOADGEN" cleanup --redis-url "$REDIS_URL" --redis-prefix "$prefix" --mongodb-uri "$MONGO/$db" >/dev/null 2>&1 || true

python3 - "$WORK" "$COUNT" "$((m1 - m0))" "$((e1 - e0))" "$(getconf CLK_TCK)" <<'EOF'
import json, re, sys
from collections import Counter
work, count, mongo_ticks, engine_ticks, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
e2e = json.load(open(f"{work}/e2e.json"))
done = e2e.get("completed") or count
print(f"{done} deliveries, {e2e.get('deliveries_per_sec')} deliveries/s")
print(f"engine CPU {engine_ticks / hz * 1e6 / done:.0f} µs/delivery; MongoDB server CPU {mongo_ticks / hz * 1e6 / done:.0f} µs/delivery")
rows, calls_all, usec_all = [], 0, 0
for line in open(f"{work}/stats"):
    m = re.match(r"cmdstat_(\S+):calls=(\d+),usec=(\d+)", line)
    if m:
        name, calls, usec = m.group(1), int(m.group(2)), int(m.group(3))
        if name in ("monitor", "info", "config|resetstat"):
            continue
        rows.append((usec, calls, name))
        calls_all += calls
        usec_all += usec
print(f"Redis: {calls_all / done:.1f} commands and {usec_all / done:.0f} µs of command time per delivery")
print("| command | calls per delivery | µs per delivery |")
print("|---|---|---|")
for usec, calls, name in sorted(rows, reverse=True):
    print(f"| {name} | {calls / done:.2f} | {usec / done:.1f} |")
calls, usecs = Counter(), Counter()
for _id, _at, usec, words, *_ in json.load(open(f"{work}/slowlog")):
    if not words or words[0].upper() not in ("EVALSHA", "EVAL"):
        continue
    nkeys = int(words[2]) if len(words) > 2 and words[2].isdigit() else 0
    keys = words[3:3 + nkeys]
    shape = ",".join(re.sub(r"[0-9a-f-]{36}|drone-\d+|\d+", "…", re.sub(r"^[^:]+:", "", k)) for k in keys[:3])
    calls[(words[1][:8], shape)] += 1
    usecs[(words[1][:8], shape)] += usec
print("| script (sha: its first keys) | calls per delivery | µs per call | µs per delivery |")
print("|---|---|---|---|")
for key, us in usecs.most_common(14):
    print(f"| {key[0]}: {key[1]} | {calls[key] / done:.2f} | {us / calls[key]:.1f} | {us / done:.1f} |")
EOF
