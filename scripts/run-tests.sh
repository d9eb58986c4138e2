#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
.venv/bin/python -m pytest "$@"
rc=$?
# pytest exits 5 when it collected no test: that is a failure of the suite, not a pass.
exit $rc
