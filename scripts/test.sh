#!/usr/bin/env bash
# The test command of README.md: build/refresh .venv, lint, then run the whole suite inside a fresh
# network namespace that has only loopback, so no DDS packet can leave this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
.venv/bin/ruff check .
run_isolated() {
  # Root (CI, these VMs): a plain new network namespace. Otherwise: an unprivileged user+net namespace.
  if [ "$(id -u)" = 0 ]; then
    unshare --net -- bash -c 'ip link set lo up && exec "$@"' isolated "$@"
  else
    unshare --map-root-user --net -- bash -c 'ip link set lo up && exec "$@"' isolated "$@"
  fi
}
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
run_isolated .venv/bin/python -m pytest "$@"
