#!/usr/bin/env bash
# Sets up what the tests need (toolchain pieces, Redis, a MongoDB-wire
# server) and runs the whole check: formatting, lints and every test (unit,
# integration against the real servers) with cargo-nextest, then the
# OpenAPI document against the running engine (schemathesis,
# scripts/schemathesis.sh), the README's Service Bus walk-through on the
# standalone double (scripts/servicebus-double-smoke.sh), the optional `otel`
# feature (trace export to a local collector, one trace across the queue)
# and the web console in headless Chromium
# (scripts/console-test.sh).
#
#   scripts/test.sh            # everything
#   scripts/test.sh -E 'test(lifecycle)'   # extra arguments go to nextest
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/services.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> module graph (no import cycles in actors/src, actors/src/domain, gateway/src)"
scripts/module-graph.py actors/src actors/src/domain gateway/src > /dev/null ||
  scripts/module-graph.py actors/src actors/src/domain gateway/src
echo "==> Helm chart"
scripts/chart-check.sh
echo "==> cargo nextest"
cargo nextest run --workspace --all-targets --locked --no-fail-fast "$@"
echo "==> the OpenAPI document against the running engine (scripts/schemathesis.sh)"
scripts/schemathesis.sh
echo "==> the engine on the standalone Service Bus double (scripts/servicebus-double-smoke.sh)"
scripts/servicebus-double-smoke.sh
echo "==> optional OpenTelemetry export (--features otel)"
cargo clippy -p dronedelivery-engine --features otel --all-targets --locked -- -D warnings
cargo nextest run -p dronedelivery-engine --features otel --test otel --locked
echo "==> web console in a real browser (scripts/console-test.sh)"
scripts/console-test.sh
