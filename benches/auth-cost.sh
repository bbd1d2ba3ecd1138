#!/usr/bin/env bash
# The cost of bearer-token validation on ingestion: one `dronedelivery`
# binary, `--role gateway` on the embedded backends, loaded by `loadgen
# ingest` (closed loop, 64 in flight) with authentication off (A) and with
# `--auth-mode jwt` (B), alternately (benches/ab-ingest.sh). For B a local
# OpenID Connect issuer is made here: an RSA key (openssl), its discovery
# document and key set served by `python3 -m http.server`, and one RS256
# token for the owner of loadgen's requests (`--owner`, both sides), sent
# with every request. Every
# request of B is validated (signature, issuer, audience, expiry).
#
#   benches/auth-cost.sh ENGINE [--rounds N] [--secs S]
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
ENGINE=$1
shift
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dd-auth.XXXXXX")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ISSUER="http://127.0.0.1:$PORT"
SERVER=
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/key.pem" 2>/dev/null
MODULUS=$(openssl rsa -in "$WORK/key.pem" -noout -modulus | cut -d= -f2)
mkdir -p "$WORK/www/.well-known"
TOKEN=$(python3 - "$ISSUER" "$MODULUS" "$WORK" <<'PY'
import base64, json, subprocess, sys, time
issuer, modulus, work = sys.argv[1:]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
n = b64(bytes.fromhex(modulus))
json.dump({"issuer": issuer, "jwks_uri": issuer + "/keys.json"},
          open(f"{work}/www/.well-known/openid-configuration", "w"))
json.dump({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "bench", "n": n, "e": "AQAB"}]},
          open(f"{work}/www/keys.json", "w"))
header = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "bench"}).encode())
now = int(time.time())
# The owner of every loadgen request (`loadgen --owner bench-owner`).
claims = b64(json.dumps({"iss": issuer, "aud": "api://bench", "sub": "bench-owner",
                         "iat": now, "exp": now + 6 * 3600}).encode())
signed = f"{header}.{claims}".encode()
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{work}/key.pem"],
                     input=signed, capture_output=True, check=True).stdout
print(f"{header}.{claims}.{b64(sig)}")
PY
)
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 &
SERVER=$!
for _ in $(seq 1 50); do
  curl -sf "$ISSUER/keys.json" >/dev/null && break
  sleep 0.1
done
DD_AB_B_ARGS="--auth-mode jwt --auth-issuer $ISSUER --auth-audience api://bench" \
DD_AB_A_LOADGEN="--owner bench-owner" \
DD_AB_B_LOADGEN="--owner bench-owner --bearer $TOKEN" \
  "$ROOT/benches/ab-ingest.sh" "$ENGINE" "$ENGINE" "$@"
