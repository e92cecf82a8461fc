#!/usr/bin/env bash
# README's main job: the whole dynofa_ros graph on a replayed scenario, with real CPU contention half-way.
#   scripts/demo.sh                       both runs (runtime manager, then fixed level), report + out/demo_timeline.png
#   scripts/demo.sh --runs managed        only the managed run
#   scripts/demo.sh --scenario config/scenarios/ci_short.yaml --out out/short
# Sets up .venv (scripts/setup_env.sh), builds the scenario bag if missing, and runs everything inside a
# fresh network namespace with only loopback, like scripts/test.sh: no DDS packet leaves this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
. scripts/isolated.sh
run_isolated .venv/bin/python -m devtools.demo "$@"
