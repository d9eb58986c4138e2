#!/usr/bin/env bash
# Lint and format check over forgellm/ and tests/, type check over forgellm/ (settings in pyproject.toml). Run by
# scripts/run-tests.sh before pytest and by `make lint`; exits non-zero on any finding.
# To fix what it reports: `.venv/bin/ruff check --fix forgellm tests` and `.venv/bin/ruff format forgellm tests`.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
.venv/bin/ruff check forgellm tests || rc=1
.venv/bin/ruff format --check forgellm tests || rc=1
.venv/bin/mypy || rc=1
[ $rc -ne 0 ] && echo "lint: findings above (ruff check, ruff format --check, mypy)" >&2
exit $rc
