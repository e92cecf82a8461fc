# Sourced by scripts/test.sh and scripts/demo.sh: run a command in a fresh network namespace with only
# loopback up, so no DDS packet can leave this machine.
# Root (CI, these VMs): a plain new network namespace. Otherwise: an unprivileged user+net namespace.
run_isolated() {
  if [ "$(id -u)" = 0 ]; then
    unshare --net -- bash -c 'ip link set lo up && exec "$@"' isolated "$@"
  else
    unshare --map-root-user --net -- bash -c 'ip link set lo up && exec "$@"' isolated "$@"
  fi
}
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
