#!/usr/bin/env bash
# The whole test suite, with every service it needs (Docker, PostgreSQL, Redis) provided:
# nothing is skipped for a missing service. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Shape checks first: a minute of pytest is wasted on a change that does not pass them.
# Lint and format; the layers and the absence of import cycles (contracts in pyproject.toml,
# docs/architecture.md); types of the science library and the tables.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
.venv/bin/mypy harness db
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
