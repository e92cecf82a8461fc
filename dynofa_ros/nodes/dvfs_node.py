"""dvfs_node: applies the manager's CPU/GPU frequency commands through cpufreq/devfreq sysfs, and restores.

Only translation lives here: commands → :class:`~dynofa_ros.control.dvfs.DvfsController` calls, results → log and
``/diagnostics``. Every rule about what may be written is in ``dynofa_ros/control/dvfs.py``. On the way out
(Ctrl-C, SIGTERM, shutdown, or a crash in spin) the clocks are restored to what they were, with further
signals held until that is done; after SIGKILL the originals recorded in ``state_dir`` are restored at the
next start. Topics, parameters and safety: docs/manager.md.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterType
from rclpy.exceptions import ParameterUninitializedException
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import UInt32, UInt64

from .. import topics
from ..control.dvfs import CPU_MODES, DEFAULT_CPUFREQ_DIR, DEFAULT_STATE_DIR, HELD_SIGNALS, ApplyResult, DvfsController
from ..control.platforms import DEFAULT_GPU_DEVFREQ_DIRS
from ..problems import ConfigError
from .common import (
    DIAG_ERROR,
    DIAG_OK,
    DIAG_WARN,
    LATCHED_QOS,
    RELIABLE_QOS,
    BadInput,
    descriptor,
    diagnostics,
    run,
    subscribe,
)


class DvfsNode(Node):
    def __init__(self) -> None:
        super().__init__("dvfs_node")
        self.bad = BadInput(self)
        p = self.declare_parameter
        p("sysfs_root", "/", descriptor("root under which every sysfs path is taken (a test tree, or /)",
                                        read_only=True))
        p("cpufreq_dir", DEFAULT_CPUFREQ_DIR, descriptor("cpufreq directory holding policyN, relative to "
                                                         "sysfs_root", read_only=True))
        p("cpu_policies", Parameter.Type.STRING_ARRAY,
          descriptor("cpufreq policies to drive (e.g. [policy0]); unset = all", read_only=True,
                     type_=ParameterType.PARAMETER_STRING_ARRAY))
        p("gpu_devfreq_dirs", list(DEFAULT_GPU_DEVFREQ_DIRS),
          descriptor("GPU devfreq directories to try in order, relative to sysfs_root", read_only=True))
        p("cpu_mode", "auto", descriptor(f"{list(CPU_MODES)}: auto = userspace governor where listed, else "
                                         "min/max clamping", read_only=True))
        p("dry_run", False, descriptor("decide and log, never write (robots where clocks must not be touched)",
                                       read_only=True))
        p("state_dir", DEFAULT_STATE_DIR,
          descriptor("directory where the original clock values are recorded before the first write, so that the "
                     "next start restores them if this process is killed (SIGKILL, OOM); '' = do not record",
                     read_only=True))
        p("diagnostics_period_s", 1.0, descriptor("seconds between /diagnostics messages", read_only=True,
                                                  float_range=(0.1, 60.0)))
        gp = self.get_parameter
        try:
            policies = gp("cpu_policies").value or []
        except ParameterUninitializedException:
            policies = []
        if gp("cpu_mode").value not in CPU_MODES:
            raise ConfigError(f"cpu_mode {gp('cpu_mode').value!r} is unknown; allowed: {list(CPU_MODES)}")
        self.ctl = DvfsController(gp("sysfs_root").value, cpufreq_dir=gp("cpufreq_dir").value,
                                  cpu_policies=policies, gpu_devfreq_dirs=gp("gpu_devfreq_dirs").value,
                                  cpu_mode=gp("cpu_mode").value, dry_run=gp("dry_run").value,
                                  state_dir=gp("state_dir").value or None)
        for note in self.ctl.notes:
            self.get_logger().info(note)
        for warning in self.ctl.warnings:
            self.get_logger().warning(warning)
        if not gp("state_dir").value and not self.ctl.dry_run:
            self.get_logger().warning("state_dir is empty: if this process is killed, the clocks it set stay "
                                      "pinned until reboot")
        self.errors: list[str] = []
        self.last_messages: list[str] = []
        self.pub_diag = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, RELIABLE_QOS)
        subscribe(self, UInt32, topics.CPU_FREQ_CMD, self._on_cpu, LATCHED_QOS)
        subscribe(self, UInt64, topics.GPU_FREQ_CMD, self._on_gpu, LATCHED_QOS)
        self.create_timer(gp("diagnostics_period_s").value, self._publish_diagnostics)

    def _report(self, results: list[ApplyResult]) -> None:
        for r in results:
            for m in r.messages:
                self.get_logger().info(m, throttle_duration_sec=5.0)
            for e in r.errors:
                self.get_logger().warning(e, throttle_duration_sec=5.0)
            self.errors = (self.errors + r.errors)[-10:]
            self.last_messages = r.messages[-3:]
        self._publish_diagnostics()

    def _check(self, topic: str, value: int, rng: tuple[int, int] | None, unit: str) -> bool:
        if rng is None:
            self.bad.drop(topic, f"{value} {unit} requested, but this machine has no controllable domain for it")
            return False
        if not rng[0] <= value <= rng[1]:
            self.bad.drop(topic, f"{value} {unit} is outside the available range {rng[0]}..{rng[1]} {unit}")
            return False
        return True

    def _on_cpu(self, msg: UInt32) -> None:
        if self._check(topics.CPU_FREQ_CMD, int(msg.data), self.ctl.cpu_range(), "kHz"):
            self._report(self.ctl.set_cpu_khz(int(msg.data)))

    def _on_gpu(self, msg: UInt64) -> None:
        if self._check(topics.GPU_FREQ_CMD, int(msg.data), self.ctl.gpu_range(), "Hz"):
            res = self.ctl.set_gpu_hz(int(msg.data))
            self._report([res] if res else [])

    def _publish_diagnostics(self) -> None:
        if not self.context.ok():
            return  # a signal shut rclpy down while a callback ran: the way out restores, nothing to publish
        values: dict[str, Any] = self.ctl.status()
        values["bad_commands_dropped"] = self.bad.total
        for i, e in enumerate(self.errors[-3:]):
            values[f"error {i}"] = e
        if self.errors:
            level, msg = DIAG_WARN, f"last write failed: {self.errors[-1]}"
        elif not self.ctl.cpu and self.ctl.gpu is None:
            level, msg = DIAG_ERROR, "no controllable CPU or GPU frequency domain under " + str(self.ctl.fs.root)
        else:
            level, msg = DIAG_OK, "dry run: nothing written" if self.ctl.dry_run else "clocks applied"
        try:
            self.pub_diag.publish(diagnostics(self, "dynofa dvfs", level, msg, values))
        except _rclpy.RCLError:
            if self.context.ok():
                raise  # a real failure; a context shut down between the check and the publish is not

    def restore(self) -> list[str]:
        return self.ctl.restore()


_restored = threading.Event()   # set once on_exit has run: main() must not restore twice
_nodes: list[DvfsNode] = []     # the node main() started, for the last-resort restore below


def _hold_signals_for_exit(received: list[int]) -> None:
    """From here to the end of the process, SIGINT/SIGTERM/SIGHUP are recorded, never raised.

    The node is on its way out already; a second Ctrl-C or launch's SIGTERM a few ms after the first
    must not cut the restore (or the shutdown after it) short. SIGKILL still ends a hung exit, and the
    state file then restores at the next start.
    """
    for sig in HELD_SIGNALS:
        signal.signal(sig, lambda signum, _frame: received.append(signum))


def _restore(node: Node) -> None:
    held: list[int] = []
    _hold_signals_for_exit(held)
    ctl: DvfsController = node.ctl  # type: ignore[attr-defined]
    changed = any(d.saved for d in [*ctl.cpu, *([ctl.gpu] if ctl.gpu else [])])
    errors = node.restore()  # type: ignore[attr-defined]
    _restored.set()
    # the context may already be shut down: print, rclpy logging may be gone
    if held or ctl.held_signals:
        names = sorted({signal.Signals(s).name for s in [*held, *ctl.held_signals]})
        print(f"dvfs_node: {', '.join(names)} received while restoring: held until the clocks were back", flush=True)
    if errors:
        print(f"dvfs_node: restore failed: {errors}", flush=True)
    elif ctl.dry_run:
        would = "; ".join(m.removeprefix("dry run: ") for m in ctl.restore_messages) or "nothing to write back"
        print(f"dvfs_node: dry run: no clock was written, so none restored (a real run would now: {would})",
              flush=True)
    else:
        print("dvfs_node: clocks restored" if changed else "dvfs_node: no clock was changed", flush=True)


def _make_node() -> DvfsNode:
    node = DvfsNode()
    _nodes.append(node)
    return node


def main() -> int:
    try:
        return run("dvfs_node", _make_node, on_exit=_restore)
    except KeyboardInterrupt:
        # a second signal landed between the first one and on_exit (rclpy's exit path): restore here
        if _nodes and not _restored.is_set():
            _restore(_nodes[0])
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
