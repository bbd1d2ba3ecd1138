#!/usr/bin/env bash
# Installs (when missing) and starts the backing services the tests and the
# local engine use:
#
#   - Redis on 127.0.0.1:6379 (Debian's redis-server);
#   - redis-server and openssl on the PATH even when Redis already runs (the
#     TLS test starts its own TLS-only server with a certificate it makes);
#   - a MongoDB-wire server on 127.0.0.1:27017: SecantusDB, built from
#     crates.io (secantus-mdb; 3.5 min on 2 idle cores the first time, 12 min
#     on 2 busy ones), or, if that build fails, its Python server from PyPI.
#     No registry reachable from CI ships a genuine mongod; point
#     DD_MONGODB_URI at a real MongoDB (or Cosmos DB for MongoDB) in
#     production instead.
#
# Idempotent: a service that already answers is left alone. Meant for a fresh
# Debian 12 machine running as root (CI), and harmless on a developer machine
# where the services already run.
#
# Environment overrides (all optional):
#   DD_MONGO_PORT         27017
#   DD_MONGO_DATA         /var/lib/dronedelivery/mongo
#   DD_MONGO_LOG          /var/log/dronedelivery-mongo.log
#   DD_MONGO_WAIT_SECS    60
#   DD_REDIS_WAIT_SECS    30
set -euo pipefail

REDIS_HOST=127.0.0.1
REDIS_PORT=6379
REDIS_WAIT_SECS=${DD_REDIS_WAIT_SECS:-30}

MONGO_HOST=127.0.0.1
MONGO_PORT=${DD_MONGO_PORT:-27017}
MONGO_DATA=${DD_MONGO_DATA:-/var/lib/dronedelivery/mongo}
MONGO_LOG=${DD_MONGO_LOG:-/var/log/dronedelivery-mongo.log}
MONGO_WAIT_SECS=${DD_MONGO_WAIT_SECS:-60}

SECANTUS_VERSION=0.5.3-beta.196
SECANTUS_ROOT=/opt/secantus
SECANTUS_BIN=$SECANTUS_ROOT/bin/secantusd-rs
SECANTUS_PY_VERSION=0.7.0b3
SECANTUS_PY_VENV=/opt/secantus-py
SECANTUS_PY_BIN=$SECANTUS_PY_VENV/bin/secantusd-py

log() { echo "==> $*"; }
die() {
  echo "error: $*" >&2
  exit 1
}
need() { command -v "$1" >/dev/null 2>&1; }

APT_UPDATED=0
apt_install() {
  need apt-get || die "apt-get not found; install $* by hand"
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --------------------------------------------------------------------- Redis

redis_up() { [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }

start_redis() {
  if need redis-cli && redis_up; then
    log "redis already running"
  else
    if ! need redis-server || ! need redis-cli; then
      apt_install redis-server
    fi
    log "starting redis-server"
    redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" \
      --save "" --appendonly no >/dev/null
    local waited=0
    until redis_up; do
      [ "$waited" -ge "$REDIS_WAIT_SECS" ] && die "redis did not answer PING within ${REDIS_WAIT_SECS}s"
      sleep 1
      waited=$((waited + 1))
    done
  fi
  echo "redis: redis://$REDIS_HOST:$REDIS_PORT"
}

# ------------------------------------------------------------- MongoDB wire

# True when something accepts TCP connections on the MongoDB port.
mongo_port_open() {
  (exec 3<>"/dev/tcp/$MONGO_HOST/$MONGO_PORT") 2>/dev/null
}

# True when the server answers `{ping: 1}` with ok: 1. Speaks the wire
# protocol directly (one OP_MSG) so that neither mongosh nor a driver is
# needed: header (length 51, requestID 1, responseTo 0, opCode 2013), flags 0,
# a kind-0 section holding the BSON document {ping: int32 1, $db: "admin"}.
mongo_ping() {
  local len hex
  hex=$(
    exec 2>/dev/null
    exec 3<>"/dev/tcp/$MONGO_HOST/$MONGO_PORT" || exit 1
    printf '\x33\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xdd\x07\x00\x00' >&3
    printf '\x00\x00\x00\x00\x00' >&3
    # shellcheck disable=SC2016 # "$db" is the BSON key, not a variable.
    printf '\x1e\x00\x00\x00\x10ping\x00\x01\x00\x00\x00\x02$db\x00\x06\x00\x00\x00admin\x00\x00' >&3
    len=$(timeout 5 head -c 4 <&3 | od -An -tu4 | tr -d ' \n')
    [ -n "$len" ] && [ "$len" -gt 4 ] && [ "$len" -lt 65536 ] || exit 1
    timeout 5 head -c $((len - 4)) <&3 | od -An -tx1 | tr -d ' \n'
  ) || return 1
  # "ok" as double 1.0, int32 1 or int64 1.
  case "$hex" in
    *016f6b00000000000000f03f* | *106f6b0001000000* | *126f6b000100000000000000*) return 0 ;;
    *) return 1 ;;
  esac
}

install_secantus_rs() {
  [ -x "$SECANTUS_BIN" ] && return 0
  need cargo || {
    log "cargo not found; cannot build the Rust SecantusDB"
    return 1
  }
  need cmake || apt_install cmake
  log "building SecantusDB $SECANTUS_VERSION (secantus-mdb, bundles WiredTiger; takes minutes: ~3.5 min on 2 idle cores)"
  local started=$SECONDS
  if ! cargo install secantus-mdb --version "$SECANTUS_VERSION" \
    --ignore-rust-version --locked --root "$SECANTUS_ROOT"; then
    log "SecantusDB build failed"
    return 1
  fi
  log "SecantusDB built in $((SECONDS - started))s"
}

install_secantus_py() {
  [ -x "$SECANTUS_PY_BIN" ] && return 0
  need python3 || apt_install python3
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  log "installing SecantusDB $SECANTUS_PY_VERSION (Python server) into $SECANTUS_PY_VENV"
  rm -rf "$SECANTUS_PY_VENV"
  python3 -m venv "$SECANTUS_PY_VENV"
  "$SECANTUS_PY_VENV/bin/pip" install -q "SecantusDB==$SECANTUS_PY_VERSION"
}

# Starts "$@" detached from this script (own session, no terminal, output to
# the log) so it outlives the shell that ran the script.
spawn_detached() {
  mkdir -p "$MONGO_DATA" "$(dirname "$MONGO_LOG")"
  {
    echo "---- $(date -u +%Y-%m-%dT%H:%M:%SZ) starting: $*"
  } >>"$MONGO_LOG"
  setsid nohup "$@" >>"$MONGO_LOG" 2>&1 </dev/null &
  disown || true
}

wait_mongo() {
  local waited=0
  until mongo_port_open && mongo_ping; do
    if [ "$waited" -ge "$MONGO_WAIT_SECS" ]; then
      echo "error: MongoDB-wire server did not answer ping within ${MONGO_WAIT_SECS}s; log tail ($MONGO_LOG):" >&2
      tail -n 40 "$MONGO_LOG" >&2 || true
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

start_mongo() {
  if mongo_port_open; then
    if mongo_ping; then
      log "MongoDB-wire server already running"
    else
      log "something listens on $MONGO_HOST:$MONGO_PORT but does not answer ping yet; waiting"
      wait_mongo || exit 1
    fi
  elif install_secantus_rs; then
    log "starting $SECANTUS_BIN"
    spawn_detached "$SECANTUS_BIN" --host "$MONGO_HOST" --port "$MONGO_PORT" \
      --storage-path "$MONGO_DATA" --cache-size 256M --log-file-max 16MB
    wait_mongo || exit 1
  else
    log "falling back to the Python SecantusDB server"
    install_secantus_py
    log "starting $SECANTUS_PY_BIN"
    spawn_detached "$SECANTUS_PY_BIN" --host "$MONGO_HOST" --port "$MONGO_PORT" \
      --storage-path "$MONGO_DATA" --cache-size 256M
    wait_mongo || exit 1
  fi
  echo "mongodb: mongodb://$MONGO_HOST:$MONGO_PORT/ (log: $MONGO_LOG)"
}

start_redis
# engine/tests/redis_tls.rs runs its own TLS-only redis-server with a CA and
# certificate it makes with openssl.
need redis-server || apt_install redis-server
need openssl || apt_install openssl
start_mongo
