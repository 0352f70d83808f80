#!/usr/bin/env bash
# The infrastructure gate (scripts/infra_gate.py, with its Bicep evaluator scripts/infra_bicep_eval.py) in
# its pinned tool environment.
#
# Creates (or reuses) .venv-infra/ with checkov 3.3.30 (which pins pycep-parser 0.5.1),
# tree-sitter 0.26.1 and tree-sitter-bicep 1.1.0 from PyPI, then runs the gate on infra/ and its
# self-test (deliberately broken copies must fail). Needs python3 (3.11+) and PyPI; no Azure, no
# Bicep compiler. Extra arguments go to the gate run (e.g. --verbose).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-infra
pins=(checkov==3.3.30 tree-sitter==0.26.1 tree-sitter-bicep==1.1.0)
stamp="$venv/.pins"

if [ ! -x "$venv/bin/python" ]; then
  echo "== creating $venv"
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null || true)" != "${pins[*]}" ]; then
  echo "== installing ${pins[*]} into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
  echo "${pins[*]}" >"$stamp"
fi

export PYTHONDONTWRITEBYTECODE=1
echo "== infra gate"
"$venv/bin/python" scripts/infra_gate.py "$@"
echo "== infra gate self-test"
"$venv/bin/python" scripts/infra_gate.py --self-test
