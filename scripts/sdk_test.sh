#!/usr/bin/env bash
# Microsoft's own Python SDKs against the emulator over https, as a user scripting around
# tagfence would run them (scripts/sdk_test.py says what it checks).
#
# Creates (or reuses) .venv-sdk/ with the versions pinned in scripts/sdk_test.requirements.txt
# from PyPI, builds tagfence and the emulator, starts `tagfence-emulator --tls` with a fresh CA,
# and runs the test with only the endpoint (the env file's TAGFENCE_ARM_ENDPOINT) and the CA
# (REQUESTS_CA_BUNDLE for the SDKs, SSL_CERT_FILE for tagfence) pointing at it. Needs python3
# (3.9+) and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-sdk
requirements=scripts/sdk_test.requirements.txt
stamp="$venv/.requirements"

if [ ! -x "$venv/bin/python" ]; then
  echo "== creating $venv"
  python3 -m venv "$venv"
fi
if ! cmp -s "$requirements" "$stamp"; then
  echo "== installing $requirements into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi

cargo build --locked --quiet --workspace --bins
work=$(mktemp -d)
emulator_pid=""
cleanup() {
  if [ -n "$emulator_pid" ]; then kill "$emulator_pid" 2>/dev/null || true; wait "$emulator_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

target/debug/tagfence-emulator --tls --ca-file "$work/ca.pem" --env-file "$work/emulator.env" \
  >"$work/emulator.out" 2>"$work/emulator.err" &
emulator_pid=$!
for _ in $(seq 1 200); do
  [ -s "$work/emulator.env" ] && break
  sleep 0.05
done
[ -s "$work/emulator.env" ] || { echo "the emulator did not start:" >&2; cat "$work/emulator.err" >&2; exit 1; }

set -a
# shellcheck disable=SC1091
. "$work/emulator.env"
set +a
export REQUESTS_CA_BUNDLE="$TAGFENCE_EMULATOR_CA_FILE"
export TAGFENCE_BIN="$PWD/target/debug/tagfence" TAGFENCE_WORK="$work"
export PYTHONDONTWRITEBYTECODE=1
"$venv/bin/python" scripts/sdk_test.py
