#!/usr/bin/env bash
# The whole test suite, with every service it needs (Docker, PostgreSQL, Redis) provided:
# nothing is skipped for a missing service. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Lint and format first: a minute of pytest is wasted on a change that does not pass them.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
