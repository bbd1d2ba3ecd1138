#!/usr/bin/env bash
# Runs the reference implementation's ORIGINAL Package service (Node.js, Koa +
# MongoDB driver 3.2, TypeScript) as a benchmark peer, next to our engine, on
# the same MongoDB.
#
# The original's source is NOT part of this repository: it is exported at run
# time from a git mirror of
#   https://github.com/mspnp/aks-fabrikam-dronedelivery-workload
# (directory src/shipping/package), installed with npm from its own lockfile,
# built with its own build script (`npm run build`, gulp + tsc) and started as
# its Dockerfile does (`node main.js` in the build output). Everything lands
# under $DD_PEERS/package-node, never in this tree.
#
# Usage:
#   benches/peers/package-node.sh [--port N]          # build if needed, start
#   benches/peers/package-node.sh --stop [--port N]   # stop (all ports if none)
#   benches/peers/package-node.sh --build-only        # fetch + install + build
#
# On success prints one line on stdout:  package-node: http://127.0.0.1:PORT
#
# Exit codes: 0 ok; 1 failure (install, build, start, MongoDB unreachable);
# 2 bad usage; 3 the original's git mirror is missing (peer unavailable).
#
# Environment (all optional):
#   DD_PEERS              /opt/dronedelivery-peers   cache root
#   DD_RI_MIRROR          /work/.mirror/mspnp+aks-fabrikam-dronedelivery-workload/repo
#                         a bare or non-bare .git dir of the original repository
#   DD_RI_REF             HEAD                       commit/branch to export
#   DD_PEER_MONGODB_URI   mongodb://127.0.0.1:27017/dd_peer_package
#                         -> the service's CONNECTION_STRING (database = path)
#   DD_PEER_COLLECTION    packages                   -> its COLLECTION_NAME
#   DD_PEER_LOG_LEVEL     warn                       -> its LOG_LEVEL (winston)
#   DD_PEER_WAIT_SECS     30                         readiness timeout
set -euo pipefail

PEERS_ROOT=${DD_PEERS:-/opt/dronedelivery-peers}
MIRROR=${DD_RI_MIRROR:-/work/.mirror/mspnp+aks-fabrikam-dronedelivery-workload/repo}
REF=${DD_RI_REF:-HEAD}
MONGO_URI=${DD_PEER_MONGODB_URI:-mongodb://127.0.0.1:27017/dd_peer_package}
COLLECTION=${DD_PEER_COLLECTION:-packages}
LOG_LEVEL=${DD_PEER_LOG_LEVEL:-warn}
WAIT_SECS=${DD_PEER_WAIT_SECS:-30}

SUBDIR=src/shipping/package
ROOT=$PEERS_ROOT/package-node
SRC=$ROOT/src            # the exported src/shipping/package
RUN=$ROOT/run            # pid and log files, one pair per port
STAMP=$ROOT/.built       # "<commit>" of the tree last built successfully
DEFAULT_PORT=8090

NAME=package-node
log() { echo "$NAME: $*" >&2; }
die() {
  echo "$NAME: error: $*" >&2
  exit 1
}

usage() {
  sed -n '14,17p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

PORT=
ACTION=start
while [ $# -gt 0 ]; do
  case "$1" in
    --port) [ $# -ge 2 ] || usage; PORT=$2; shift 2 ;;
    --port=*) PORT=${1#--port=}; shift ;;
    --stop) ACTION=stop; shift ;;
    --build-only) ACTION=build; shift ;;
    -h | --help) usage ;;
    *) echo "$NAME: unknown argument: $1" >&2; usage ;;
  esac
done
if [ -n "$PORT" ]; then
  case "$PORT" in
    '' | *[!0-9]*) die "--port needs a number, got '$PORT'" ;;
  esac
fi

# ---------------------------------------------------------------- processes

# The pid in $1 is a node process running our build's main.js.
is_ours() {
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$SRC/.bin/app" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'main\.js'
}

stop_port() {
  local port=$1 pidfile=$RUN/$1.pid pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if is_ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped (port $port, pid $pid)"
  fi
  rm -f "$pidfile"
}

if [ "$ACTION" = stop ]; then
  if [ -n "$PORT" ]; then
    stop_port "$PORT"
  else
    shopt -s nullglob
    for f in "$RUN"/*.pid; do
      p=$(basename "$f" .pid)
      stop_port "$p"
    done
  fi
  exit 0
fi

PORT=${PORT:-$DEFAULT_PORT}

# ------------------------------------------------------------ obtain source

if ! git --git-dir="$MIRROR" rev-parse --verify --quiet "$REF^{commit}" >/dev/null 2>&1; then
  cat >&2 <<EOF
$NAME: unavailable: no git mirror of the reference implementation at
  DD_RI_MIRROR=$MIRROR
Obtain it with
  git clone https://github.com/mspnp/aks-fabrikam-dronedelivery-workload
and set DD_RI_MIRROR to that clone's .git directory, e.g.
  DD_RI_MIRROR=\$PWD/aks-fabrikam-dronedelivery-workload/.git $0
EOF
  exit 3
fi
COMMIT=$(git --git-dir="$MIRROR" rev-parse "$REF^{commit}")

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is required but not installed"; }
need node
need npm
need curl
need tar

mkdir -p "$ROOT" "$RUN"

# One build at a time (several runners may start peers on different ports).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$ROOT/.lock"
  flock 9
fi

built() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$COMMIT" ] && [ -f "$SRC/.bin/app/main.js" ]
}

if ! built; then
  # Stop instances of an older build before replacing it.
  shopt -s nullglob
  for f in "$RUN"/*.pid; do stop_port "$(basename "$f" .pid)"; done
  shopt -u nullglob

  log "exporting $SUBDIR at ${COMMIT:0:12} from $MIRROR"
  tmp=$(mktemp -d "$ROOT/export.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  git --git-dir="$MIRROR" archive "$COMMIT" "$SUBDIR" | tar -x -C "$tmp"
  [ -f "$tmp/$SUBDIR/package.json" ] || die "$SUBDIR/package.json not found at ${COMMIT:0:12}"
  rm -rf "$SRC" "$STAMP"
  mv "$tmp/$SUBDIR" "$SRC"
  rm -rf "$tmp"
  trap - EXIT

  cd "$SRC"
  # Its own lockfile when it has one (it does: package-lock.json), exactly as
  # pinned there; nothing is added or upgraded.
  if [ -f package-lock.json ]; then
    log "npm ci (from its package-lock.json)"
    npm ci --no-audit --no-fund --loglevel=error >&2 || die "npm ci failed"
  else
    log "npm install (no lockfile)"
    npm install --no-audit --no-fund --loglevel=error >&2 || die "npm install failed"
  fi
  log "npm run build (its gulp build: tsc into .bin/app)"
  npm run build >&2 || die "build failed"
  [ -f .bin/app/main.js ] || die "build produced no .bin/app/main.js"
  echo "$COMMIT" >"$STAMP"
fi

# --------------------------------------------------------------------- start

[ "$ACTION" = build ] && {
  log "built ${COMMIT:0:12} in $SRC"
  exit 0
}

URL=http://127.0.0.1:$PORT
PIDFILE=$RUN/$PORT.pid
LOGFILE=$RUN/$PORT.log
# An id no benchmark uses: a GET of it answers 404 only once the service's
# repository is connected to MongoDB (before that it fails with 500).
PROBE=$URL/api/packages/__peer_readiness_probe__

probe_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$PROBE" 2>/dev/null || true; }

if [ -f "$PIDFILE" ]; then
  pid=$(cat "$PIDFILE" 2>/dev/null || true)
  if is_ours "$pid"; then
    code=$(probe_status)
    if [ "$code" = 404 ] || [ "$code" = 200 ]; then
      log "already running (pid $pid)"
      echo "$NAME: $URL"
      exit 0
    fi
    stop_port "$PORT"
  fi
  rm -f "$PIDFILE"
fi

if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  die "port $PORT is already in use by another process"
fi

# Fail fast with a useful hint when the (single-host) MongoDB is not up.
hostport=${MONGO_URI#mongodb://}
hostport=${hostport#*@}
hostport=${hostport%%/*}
hostport=${hostport%%\?*}
case "$MONGO_URI" in
  mongodb://*)
    case "$hostport" in
      *,*) ;; # replica set list: let the driver sort it out
      *)
        mhost=${hostport%:*}
        mport=${hostport##*:}
        [ "$mport" = "$hostport" ] && mport=27017
        if ! (exec 3<>"/dev/tcp/$mhost/$mport") 2>/dev/null; then
          die "MongoDB not reachable at $mhost:$mport (run scripts/services.sh, or set DD_PEER_MONGODB_URI)"
        fi
        ;;
    esac
    ;;
esac

# The service reads exactly these (app/util/settings.ts, server.ts,
# initializer.ts): PORT, CONNECTION_STRING (database from its path),
# COLLECTION_NAME, LOG_LEVEL (winston, default debug = a line per request),
# CONTAINER_NAME (App Insights role only). NODE_ENV=development with no
# APPINSIGHTS_INSTRUMENTATIONKEY is its documented local mode: telemetry off.
cd "$SRC/.bin/app"
env -u APPINSIGHTS_INSTRUMENTATIONKEY \
  NODE_ENV=development \
  PORT="$PORT" \
  CONNECTION_STRING="$MONGO_URI" \
  COLLECTION_NAME="$COLLECTION" \
  LOG_LEVEL="$LOG_LEVEL" \
  CONTAINER_NAME=package \
  nohup node main.js >"$LOGFILE" 2>&1 </dev/null 9>&- &
pid=$!
echo "$pid" >"$PIDFILE"

deadline=$((SECONDS + WAIT_SECS))
while :; do
  code=$(probe_status)
  if [ "$code" = 404 ] || [ "$code" = 200 ]; then
    break
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$PIDFILE"
    tail -n 20 "$LOGFILE" >&2 || true
    die "exited during start-up (log: $LOGFILE)"
  fi
  if [ $SECONDS -ge $deadline ]; then
    tail -n 20 "$LOGFILE" >&2 || true
    stop_port "$PORT"
    die "not ready after ${WAIT_SECS}s (last probe status: ${code:-none}; log: $LOGFILE)"
  fi
  sleep 0.2
done

log "started ${COMMIT:0:12} (pid $pid, db $MONGO_URI, collection $COLLECTION, log $LOGFILE)"
echo "$NAME: $URL"
