# Sourced by scripts/test.sh, scripts/demo.sh and scripts/gpu_check.sh: run a command in a fresh network
# namespace with only loopback up, so no DDS packet can leave this machine.
# Root (CI, these VMs): a plain new network namespace. Otherwise: an unprivileged user+net namespace.
# Loopback is brought up by iproute2 where it is installed, else by one SIOCSIFFLAGS ioctl from Python
# (IFF_UP | IFF_RUNNING): a bare GPU image has no iproute2, and this is the whole of what `ip link set lo up`
# does. DYNOFA_ISOLATED_PY names that Python (default python3).
_dynofa_lo_up='if [ -z "${DYNOFA_LO_IOCTL:-}" ] && command -v ip >/dev/null; then ip link set lo up
else "${DYNOFA_ISOLATED_PY:-python3}" -c "import fcntl, socket, struct
fcntl.ioctl(socket.socket(), 0x8914, struct.pack(\"16sH14x\", b\"lo\", 0x41))"; fi && exec "$@"'
run_isolated() {
  if ! command -v unshare >/dev/null; then
    if [ "${DYNOFA_ALLOW_SHARED_NET:-0}" = 1 ]; then
      echo "run_isolated: no unshare on this machine: running in its own network namespace" >&2; "$@"; return
    fi
    echo "run_isolated: unshare (util-linux) is needed to keep DDS traffic on loopback" >&2; return 127
  fi
  if [ "$(id -u)" = 0 ]; then
    unshare --net -- bash -c "$_dynofa_lo_up" isolated "$@"
  else
    unshare --map-root-user --net -- bash -c "$_dynofa_lo_up" isolated "$@"
  fi
}
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
