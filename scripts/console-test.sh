#!/usr/bin/env bash
# Browser tests of the web console (console-tests/): a real `dronedelivery`
# process driven through headless Chromium by Playwright. Installs what is
# missing (Debian's chromium, Node.js and npm), the npm packages pinned by
# console-tests/package-lock.json, builds the binary and runs the tests.
# Screenshots go to console-tests/artifacts/ (and .ci/artifacts/console/
# under CI).
#
#   scripts/console-test.sh                        # run the tests
#   scripts/console-test.sh --update-readme-shots  # also refresh docs/console/*.png
#
# Environment: DD_BIN (binary to test; default: the debug build),
# CHROMIUM (default /usr/bin/chromium), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

for arg in "$@"; do
  case "$arg" in
    --update-readme-shots) export UPDATE_README_SHOTS=1 ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

need() { command -v "$1" >/dev/null 2>&1; }
APT_UPDATED=0
apt_install() {
  local sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  if [ "$APT_UPDATED" -eq 0 ]; then
    $sudo apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
export CHROMIUM
if [ ! -x "$CHROMIUM" ]; then
  echo "==> installing chromium (Debian package)"
  apt_install chromium
fi
if ! need node || ! need npm; then
  echo "==> installing Node.js and npm (Debian packages)"
  apt_install nodejs npm
fi

echo "==> npm ci (console-tests)"
(cd console-tests && npm ci --no-audit --no-fund --loglevel=error)

echo "==> building dronedelivery"
cargo build --locked -p dronedelivery-engine --bin dronedelivery
TARGET=${CARGO_TARGET_DIR:-target}
case "$TARGET" in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
export DD_BIN=${DD_BIN:-$TARGET/debug/dronedelivery}

echo "==> browser tests of the web console ($("$CHROMIUM" --version 2>/dev/null || echo chromium))"
rc=0
(cd console-tests && node --test-reporter=spec console.test.js) || rc=$?

if [ "${CI:-}" = "true" ] && [ -d console-tests/artifacts ]; then
  mkdir -p .ci/artifacts/console
  cp console-tests/artifacts/*.png .ci/artifacts/console/ 2>/dev/null || true
fi
exit "$rc"
