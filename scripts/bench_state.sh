#!/usr/bin/env bash
# The apply benchmark with its state in Blob storage: starts Azurite (HTTPS with a throwaway CA,
# OAuth, in memory, loopback) and runs `cargo bench --bench apply` against it.
# Usage: scripts/bench_state.sh [VAULTS] [CONCURRENCY]   (needs openssl and scripts/test's Azurite)
set -euo pipefail
cd "$(dirname "$0")/.."
vaults=${1:-100}
concurrency=${2:-8}
azurite=${AZURITE_BIN:-.tools/azurite/node_modules/.bin/azurite-blob}
[ -x "$azurite" ] || { echo "no Azurite at $azurite: run scripts/test once (it installs it) or set AZURITE_BIN" >&2; exit 1; }

work=$(mktemp -d)
azurite_pid=""
cleanup() {
  if [ -n "$azurite_pid" ]; then kill "$azurite_pid" 2>/dev/null || true; wait "$azurite_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=bench CA" \
  -keyout "$work/ca.key" -out "$work/ca.pem" -addext basicConstraints=critical,CA:TRUE 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$work/key.pem" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$work/ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -days 1 -extfile "$work/ext" -out "$work/cert.pem" 2>/dev/null

(cd "$work" && exec "$OLDPWD/$azurite" --blobHost 127.0.0.1 --blobPort 0 --inMemoryPersistence \
  --disableTelemetry --skipApiVersionCheck --oauth basic --cert "$work/cert.pem" --key "$work/key.pem" \
  >"$work/azurite.out" 2>&1) &
azurite_pid=$!
port=""
for _ in $(seq 1 300); do
  port=$(sed -n 's/.*listens on https:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$work/azurite.out" | head -1)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "Azurite did not start:" >&2; cat "$work/azurite.out" >&2; exit 1; }

TAGFENCE_STATE_CA_FILE="$work/ca.pem" cargo bench --locked --bench apply -- "$vaults" "$concurrency" \
  "https://127.0.0.1:$port/devstoreaccount1/tagfence"
