"""monitor_node: publishes this machine's CPU/GPU load and temperatures (~2 Hz), power rails in diagnostics.

Only translation lives here: :class:`~dynofa_ros.control.telemetry.Telemetry` samples → messages. What the machine
lacks is logged once at start-up and never published (no invented zeros). Topics: docs/manager.md.
"""

from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Temperature
from std_msgs.msg import Float32

from .. import topics
from ..control.platforms import (
    DEFAULT_CPU_THERMAL_ZONES,
    DEFAULT_GPU_LOAD_FILES,
    DEFAULT_GPU_THERMAL_ZONES,
    DEFAULT_TOTAL_POWER_RAILS,
)
from ..control.telemetry import Telemetry, total_power_key
from .common import DIAG_OK, DIAG_WARN, RELIABLE_QOS, descriptor, diagnostics, run


class MonitorNode(Node):
    def __init__(self) -> None:
        super().__init__("monitor_node")
        p = self.declare_parameter
        p("sysfs_root", "/", descriptor("root under which sysfs is read (a test tree, or /); CPU load always "
                                        "comes from this machine's /proc", read_only=True))
        p("rate_hz", 2.0, descriptor("samples per second (about 2 Hz: faster sampling costs CPU and reads "
                                     "noisy rails)", read_only=True, float_range=(0.1, 10.0)))
        p("cpu_thermal_zones", list(DEFAULT_CPU_THERMAL_ZONES),
          descriptor("thermal zone types for thermal/cpu, first found wins", read_only=True))
        p("gpu_thermal_zones", list(DEFAULT_GPU_THERMAL_ZONES),
          descriptor("thermal zone types for thermal/gpu, first found wins", read_only=True))
        p("gpu_load_files", list(DEFAULT_GPU_LOAD_FILES),
          descriptor("GPU load files (per-mille), relative to sysfs_root, first found wins", read_only=True))
        p("total_power_rails", list(DEFAULT_TOTAL_POWER_RAILS),
          descriptor("INA3221 labels that are the board's total input; no sum is ever made", read_only=True))
        p("frame_id", "", descriptor("header.frame_id of the Temperature messages", read_only=True))
        gp = self.get_parameter
        self.telemetry = Telemetry(gp("sysfs_root").value, cpu_zones=gp("cpu_thermal_zones").value,
                                   gpu_zones=gp("gpu_thermal_zones").value,
                                   gpu_load_files=gp("gpu_load_files").value,
                                   total_rails=gp("total_power_rails").value)
        for m in self.telemetry.missing:
            self.get_logger().warning(f"not available on this machine, not published: {m}")
        self.frame_id = gp("frame_id").value
        self.pubs = {
            topics.LOAD_CPU: self.create_publisher(Float32, topics.LOAD_CPU, RELIABLE_QOS),
            topics.LOAD_GPU: self.create_publisher(Float32, topics.LOAD_GPU, RELIABLE_QOS),
            topics.THERMAL_CPU: self.create_publisher(Temperature, topics.THERMAL_CPU, RELIABLE_QOS),
            topics.THERMAL_GPU: self.create_publisher(Temperature, topics.THERMAL_GPU, RELIABLE_QOS),
            "diagnostics": self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, RELIABLE_QOS),
        }
        self.create_timer(1.0 / gp("rate_hz").value, self._sample)

    def _temperature(self, celsius: float) -> Temperature:
        msg = Temperature(temperature=float(celsius), variance=0.0)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.frame_id
        return msg

    def _sample(self) -> None:
        s = self.telemetry.sample()
        if s.cpu_load_pct is not None:
            self.pubs[topics.LOAD_CPU].publish(Float32(data=float(s.cpu_load_pct)))
        if s.gpu_load_pct is not None:
            self.pubs[topics.LOAD_GPU].publish(Float32(data=float(s.gpu_load_pct)))
        if s.cpu_temp_c is not None:
            self.pubs[topics.THERMAL_CPU].publish(self._temperature(s.cpu_temp_c))
        if s.gpu_temp_c is not None:
            self.pubs[topics.THERMAL_GPU].publish(self._temperature(s.gpu_temp_c))
        values: dict[str, Any] = {}
        if s.cpu_load_pct is not None:
            values["cpu_load_pct"] = f"{s.cpu_load_pct:.1f}"
        if s.gpu_load_pct is not None:
            values["gpu_load_pct"] = f"{s.gpu_load_pct:.1f}"
        for name, c in s.zones.items():
            values[f"temp {name} C"] = f"{c:.1f}"
        for r in s.rails:
            values[f"power {r.label} mW"] = f"{r.power_mw:.0f}"
        if s.total_power_mw is not None:
            values[total_power_key(str(s.total_rail))] = f"{s.total_power_mw:.0f}"
        level = DIAG_WARN if self.telemetry.missing else DIAG_OK
        message = "; ".join(self.telemetry.missing) if self.telemetry.missing else "all sources present"
        self.pubs["diagnostics"].publish(diagnostics(self, "dynofa monitor", level, message, values))


def main() -> int:
    return run("monitor_node", MonitorNode)


if __name__ == "__main__":
    raise SystemExit(main())
