#!/usr/bin/env bash
# The test command of README.md: build/refresh .venv, lint, then run the suite inside a fresh network namespace
# that has only loopback, so no DDS packet can leave this machine.
#
# With no pytest arguments (CI: .ci/run) a second stage follows: the robot runtime on Python 3.10 (Humble on
# JetPack 6). It builds .venv-py310 with requirements-runtime.txt only (no torch, no ofa; cached with a stamp
# like .venv), exports a bundle with the main venv, and runs the runtime tests there: perception from the
# bundle, manager + DVFS + monitor graph, image codec, policy, DVFS, telemetry.
#   PYTHON310=/path/to/python3.10  the interpreter (default: pyenv's 3.10.x, else python3.10 on PATH)
#   DYNOFA_SKIP_PY310=1            skip that stage
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
.venv/bin/ruff check .
. scripts/isolated.sh
run_isolated .venv/bin/python -m pytest "$@"

[ $# -eq 0 ] && [ "${DYNOFA_SKIP_PY310:-0}" != 1 ] || exit 0
py310=${PYTHON310:-}
if [ -z "$py310" ] && command -v pyenv >/dev/null; then
  py310=$(ls -d "$(pyenv root)"/versions/3.10.*/bin/python 2>/dev/null | sort -V | tail -1 || true)
fi
[ -n "$py310" ] || py310=$(command -v python3.10 || true)
if [ -z "$py310" ] || [ ! -x "$py310" ]; then
  echo "py310 runtime stage: SKIPPED, no Python 3.10 found (set PYTHON310=/path/to/python3.10)"
  exit 0
fi
echo "py310 runtime stage: $("$py310" -V) from $py310"
VENV=.venv-py310 PYTHON="$py310" scripts/setup_env.sh --runtime
if .venv-py310/bin/python -c 'import torch' 2>/dev/null; then
  echo "py310 runtime stage: .venv-py310 can import torch; it must not" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python - "$work/tiny.json" <<'EOF'
import sys
sys.path.insert(0, "test")
from perception_helpers import tiny_family
from pathlib import Path
tiny_family(Path(sys.argv[1]))
EOF
.venv/bin/dynofa-export "$work/tiny.json" --out "$work/bundle" | tail -1
DYNOFA_TEST_BUNDLE="$work/bundle" run_isolated .venv-py310/bin/python -m pytest -p no:cacheprovider -q \
  test/test_bundle.py test/test_manager_graph.py test/test_image_codec.py test/test_policy.py test/test_dvfs.py \
  test/test_telemetry.py
echo "py310 runtime stage: passed ($(.venv-py310/bin/python -V), no torch)"
