#!/usr/bin/env bash
# Holds the OpenAPI document to what the engine really does, as an outside
# client would: runs schemathesis (pinned below, installed into a virtualenv
# under the cargo target directory when missing) against a real
# `dronedelivery serve` (in-memory backends, an admin token, a free port),
# with every check (scripts/schemathesis.toml lists the few per-operation
# exceptions and why), a fixed seed and a bounded number of examples, so the
# run is repeatable and takes about a minute. Exits non-zero on any failure;
# the JUnit report goes to $CARGO_TARGET_DIR/schemathesis-report (and
# .ci/artifacts/schemathesis/ under CI); replay a failure from
# $CARGO_TARGET_DIR/schemathesis with `../schemathesis-venv/bin/st replay ID`.
#
#   scripts/schemathesis.sh
#
# Environment: DD_BIN (binary to test; default: the debug build, built if
# needed), ST_SEED (default 42), ST_MAX_EXAMPLES (per operation, default
# 100), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SCHEMATHESIS_VERSION=4.32.5
SEED=${ST_SEED:-42}
MAX_EXAMPLES=${ST_MAX_EXAMPLES:-100}

case "${1:-}" in
  -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

TARGET=${CARGO_TARGET_DIR:-target}
case "$TARGET" in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac

apt_install() {
  local sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

VENV=$TARGET/schemathesis-venv
ST=$VENV/bin/st
if ! "$ST" --version 2>/dev/null | grep -qx "st, version $SCHEMATHESIS_VERSION"; then
  echo "==> installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv --help >/dev/null 2>&1; then
    apt_install python3 python3-venv
  fi
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV"; then
    apt_install python3-venv
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

if [ -z "${DD_BIN:-}" ]; then
  echo "==> building dronedelivery"
  cargo build --locked -p dronedelivery-engine --bin dronedelivery
  DD_BIN=$TARGET/debug/dronedelivery
fi

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
BASE=http://127.0.0.1:$PORT
LOG=$TARGET/schemathesis-engine.log
mkdir -p "$TARGET"

echo "==> starting $DD_BIN on $BASE"
# No payload limit: the heaviest package a fleet carries is the deployment's
# configuration, not the schema's, so a schema-valid weight must be
# accepted here (the limits have their own tests).
"$DD_BIN" serve --listen "127.0.0.1:$PORT" --admin-token "$TOKEN" --sim-speed 50 \
  --payload-limits-kg small=inf,medium=inf,large=inf >"$LOG" 2>&1 &
ENGINE=$!
stop_engine() {
  kill "$ENGINE" 2>/dev/null || true
  wait "$ENGINE" 2>/dev/null || true
}
trap stop_engine EXIT

ready=0
for _ in $(seq 1 120); do
  if curl -sf "$BASE/readyz" >/dev/null 2>&1; then
    ready=1
    break
  fi
  if ! kill -0 "$ENGINE" 2>/dev/null; then
    break
  fi
  sleep 0.5
done
if [ "$ready" -ne 1 ]; then
  echo "the engine did not become ready; its log ($LOG):" >&2
  tail -n 50 "$LOG" >&2
  exit 1
fi

REPORT=$TARGET/schemathesis-report
rm -rf "$REPORT"
# schemathesis keeps what `st replay` needs in ./.schemathesis: keep it out of
# the work tree.
WORK=$TARGET/schemathesis
mkdir -p "$WORK"
echo "==> schemathesis $SCHEMATHESIS_VERSION (seed $SEED, at most $MAX_EXAMPLES examples per operation)"
rc=0
(cd "$WORK" && "$ST" --config-file "$ROOT/scripts/schemathesis.toml" run "$BASE/openapi.json" \
  --header "Authorization: Bearer $TOKEN" \
  --seed "$SEED" \
  --max-examples "$MAX_EXAMPLES" \
  --request-timeout 10 \
  --generation-database none \
  --report junit --report-dir "$REPORT" \
  --no-color) || rc=$?

if [ "${CI:-}" = "true" ] && [ -d "$REPORT" ]; then
  mkdir -p .ci/artifacts/schemathesis
  cp "$REPORT"/* .ci/artifacts/schemathesis/ 2>/dev/null || true
fi
exit "$rc"
