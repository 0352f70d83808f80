#!/usr/bin/env bash
# The fuzzing smoke of CI: every cargo-fuzz target (fuzz/README.md) fuzzed for a short while,
# starting from its committed corpus. Long campaigns are run by hand (fuzz/README.md, "Figures").
#
# Usage: scripts/fuzz_smoke.sh [SECONDS per target, default 20]
# libFuzzer needs nightly-only flags: with a nightly toolchain it is used; without one (the CI
# machine has the one stable toolchain and can fetch no other) the stable compiler is let accept
# them with RUSTC_BOOTSTRAP=1, which is for exactly such tooling and changes nothing in the code
# built. cargo-fuzz is installed on first use into .tools/cargo-fuzz at a pinned version. Builds
# without a sanitizer (`-s none`: ASan needs nightly's -Zsanitizer, and without it a target runs
# 3–10 times the executions a second, fuzz/README.md); the code with `unsafe` is fuzzed under ASan by hand
# (fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

CARGO_FUZZ_VERSION=0.13.2
tools=.tools/cargo-fuzz
if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools"
  cargo install --locked --quiet --root "$tools" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
export PATH="$PWD/$tools/bin:$PATH"

echo "== building the fuzz targets (${toolchain[*]:-the default toolchain}${RUSTC_BOOTSTRAP:+ with RUSTC_BOOTSTRAP=1}, no sanitizer)"
cargo "${toolchain[@]}" fuzz build -s none

status=0
for target in service_tags envelope event_grid cidr; do
  case $target in
    service_tags) dict=json.dict; extra=(-max_len=16384) ;;
    *) dict=$target.dict; extra=() ;;
  esac
  # New inputs go to a scratch directory: the committed corpus is only read.
  scratch=$(mktemp -d)
  log=$(mktemp)
  echo "== fuzzing $target for ${seconds}s"
  if cargo "${toolchain[@]}" fuzz run -s none "$target" "$scratch" "fuzz/corpus/$target" -- \
      -dict="fuzz/dict/$dict" "${extra[@]}" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' "$log" | sed "s/^/  $target /"
  else
    status=1
    echo "fuzz smoke: $target FAILED; the crashing input is in fuzz/artifacts/$target/ (reproduce: cargo +nightly fuzz run $target <file>)" >&2
    tail -n 60 "$log" >&2
  fi
  rm -rf "$scratch" "$log"
done
exit $status
