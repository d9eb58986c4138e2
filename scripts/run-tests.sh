#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it: lint (ruff check, ruff format --check,
# mypy over forgellm/), pytest, then the benchmark harness in quick mode as a smoke test (it
# checks the harness runs, not the timings).
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-artifacts
bash scripts/lint.sh || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
# pytest exits 5 when it collected no test: a failure of the suite, not a pass.
[ $rc -ne 0 ] && exit $rc
.venv/bin/forgellm bench --quick --json > test-artifacts/bench-quick.json || { echo "bench --quick failed" >&2; exit 1; }
echo "bench --quick: ok (test-artifacts/bench-quick.json)"
