#!/usr/bin/env bash
# One command, fresh machine: install everything, then run the whole challenge end to end on the
# embedded default (SQLite, filesystem broker, the machine's Docker daemon) and print the
# overall leaderboard: one image, run by the server on all three tiers, makes one Certified
# method row. Extra arguments go to `edx-arena demo` (see `edx-arena demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/edx-arena demo "$@"
