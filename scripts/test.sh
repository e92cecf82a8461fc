#!/usr/bin/env bash
# The test command of README.md: build/refresh .venv, lint, then run the whole suite inside a fresh
# network namespace that has only loopback, so no DDS packet can leave this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
.venv/bin/ruff check .
. scripts/isolated.sh
run_isolated .venv/bin/python -m pytest "$@"
