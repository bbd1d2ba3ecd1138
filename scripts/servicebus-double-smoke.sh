#!/usr/bin/env bash
# The README's "engine on Service Bus without Azure" walk-through, run as
# written: the standalone Service Bus double (`--example servicebus-double`),
# an engine started with the Listen+Send connection string the double
# prints, one delivery request taken to Completed, the queue reported up.
#
#   scripts/servicebus-double-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked -p dronedelivery-engine --example servicebus-double --bin dronedelivery
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
double_port=$(free_port)
engine_port=$(free_port)
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "servicebus-double-smoke: $*" >&2
  for f in "$work"/*; do echo "--- $f" >&2; tail -n 30 "$f" >&2; done
  exit 1
}

target/debug/examples/servicebus-double --listen "127.0.0.1:${double_port}" \
  > "$work/double.out" 2> "$work/double.err" &
pids+=($!)
for _ in $(seq 1 100); do
  grep -q '^ready$' "$work/double.out" 2>/dev/null && break
  sleep 0.1
done
grep -q '^ready$' "$work/double.out" || fail "the double did not start"
# The policy with Listen and Send only: what an engine needs.
connection_string=$(grep -A1 '(Listen, Send)$' "$work/double.out" |
  sed -n "s/^ *DD_SERVICEBUS_CONNECTION_STRING='\(.*\)'$/\1/p")
[ -n "$connection_string" ] || fail "no Listen+Send connection string printed"

DD_SERVICEBUS_ENDPOINT="http://127.0.0.1:${double_port}" \
DD_SERVICEBUS_CONNECTION_STRING="$connection_string" \
DD_SERVICEBUS_QUEUE=deliveries \
DD_SERVICEBUS_EXPEDITED_QUEUE=deliveries-expedited \
  target/debug/dronedelivery serve --queue servicebus --partitions 4 \
  --listen "127.0.0.1:${engine_port}" --sim-speed 2000 --tick-ms 20 \
  > "$work/engine.log" 2>&1 &
pids+=($!)
base="http://127.0.0.1:${engine_port}"
for _ in $(seq 1 300); do
  curl -sf "$base/readyz" > /dev/null 2>&1 && break
  sleep 0.2
done
curl -sf "$base/readyz" > /dev/null || fail "the engine never became ready on a Listen+Send key"

id=$(curl -sf -X POST "$base/api/deliveryrequests" -H 'content-type: application/json' -d '{
  "confirmationRequired": "None", "deadline": "", "dropOffLocation": "drop off", "expedited": true,
  "ownerId": "smoke", "packageInfo": {"packageId": "smoke-package", "size": "Small", "tag": "t", "weight": 10},
  "pickupLocation": "pickup", "pickupTime": "2019-05-08T20:00:00.000Z"}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["deliveryId"])') ||
  fail "the delivery request was not accepted"
stage=""
for _ in $(seq 1 300); do
  stage=$(curl -sf "$base/api/deliveries/$id/status" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["stage"])' 2>/dev/null || true)
  [ "$stage" = "4" ] && break
  sleep 0.2
done
[ "$stage" = "4" ] || fail "delivery $id did not complete (stage ${stage:-unknown})"
queue_up=$(curl -sf "$base/healthz/dependencies" |
  python3 -c 'import json, sys; print([d["up"] for d in json.load(sys.stdin)["dependencies"] if d["name"] == "queue"][0])')
[ "$queue_up" = "True" ] || fail "the queue is not reported up"
echo "servicebus double walk-through: delivery $id completed on a Listen+Send key"
