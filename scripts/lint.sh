#!/usr/bin/env bash
# Lint, format check and type check over forgellm/ (settings in pyproject.toml). Run by
# scripts/run-tests.sh before pytest and by `make lint`; exits non-zero on any finding.
# To fix what it reports: `.venv/bin/ruff check --fix forgellm` and `.venv/bin/ruff format forgellm`.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
.venv/bin/ruff check forgellm || rc=1
.venv/bin/ruff format --check forgellm || rc=1
.venv/bin/mypy || rc=1
[ $rc -ne 0 ] && echo "lint: findings above (ruff check, ruff format --check, mypy)" >&2
exit $rc
