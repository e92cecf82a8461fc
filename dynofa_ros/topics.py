"""Every topic of the graph in one place: its name, its message type and the QoS role it is published with.

Pure data (no rclpy), so nodes, ``dynofa-record``/``dynofa-replay``, the launch helpers and the tests read the
same facts; ``nodes/common.py`` turns a :class:`Qos` into an rclpy ``QoSProfile``. Names are relative
(STYLE.md #8), except ``/diagnostics``. The table is documented in README.md ("Topics").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Qos:
    """A QoS role as plain values: reliability, durability and history depth."""

    reliable: bool
    transient_local: bool
    depth: int


#: Camera frames (REP-2003 sensor data): best effort, volatile, depth 1: only the newest frame matters.
IMAGE_QOS = Qos(reliable=False, transient_local=False, depth=1)
#: State a late joiner needs at once: the manager's commands, the level running, readiness. Reliable +
#: transient-local depth 1; both ends of every latched topic use this one role, so they always match.
LATCHED_QOS = Qos(reliable=True, transient_local=True, depth=1)
#: Results, targets, monitor outputs, diagnostics: the reliable default (a reliable volatile subscription
#: matches reliable publishers of either durability).
RELIABLE_QOS = Qos(reliable=True, transient_local=False, depth=10)
#: Sensor-like inputs of the manager (battery drivers often publish best effort): best effort accepts both.
SENSOR_QOS = Qos(reliable=False, transient_local=False, depth=5)
#: ``dynofa/inference_stats``: reliable, deep enough for a burst of frames between two manager callbacks.
STATS_QOS = Qos(reliable=True, transient_local=False, depth=50)

IMAGE_RAW = "image_raw"
IMAGE_COMPRESSED = "image_raw/compressed"
CLASSIFICATION = "dynofa/classification"
INFERENCE_STATS = "dynofa/inference_stats"
INFERENCE_LATENCY = "dynofa/inference_latency_ms"
ACTIVE_LEVEL = "dynofa/active_level"
READY = "dynofa/ready"
#: Latched std_msgs/UInt32: how many publishers perception sees on its camera topics (its own, reader-side
#: discovery), so a player can wait until perception knows its publisher before sending the first frame.
CAMERA_PUBLISHERS = "dynofa/camera_publishers"
#: Latched std_msgs/Float64MultiArray: each level's median ``model_ms`` timed by perception at start-up on this
#: machine (``perception/level_profile.py``); the manager plans the ratios between levels with it.
LEVEL_PROFILE = "dynofa/level_profile_ms"
SUBNET_CMD = "dynofa/subnet_cmd"
#: Latched std_msgs/Float64MultiArray ``[from_level, limit_ms, to_level]`` (empty: none), manager → perception: a
#: frame at ``from_level`` slower than ``limit_ms`` switches perception to ``to_level`` at once, one-shot
#: (``control.policy.OverrunFallback``; layout in ``nodes/inference_stats.py``).
OVERRUN_FALLBACK = "dynofa/overrun_fallback"
CPU_FREQ_CMD = "dynofa/cpu_freq_cmd"
GPU_FREQ_CMD = "dynofa/gpu_freq_cmd"
TARGET_LATENCY = "dynofa/target_latency_ms"
MIN_ACCURACY = "dynofa/min_accuracy"
BATTERY = "battery_state"
THERMAL_CPU = "thermal/cpu"
THERMAL_GPU = "thermal/gpu"
LOAD_CPU = "load/cpu"
LOAD_GPU = "load/gpu"
DIAGNOSTICS = "/diagnostics"

#: The graph's topics and their types: what ``dynofa-record`` records by default.
GRAPH_TOPICS: dict[str, str] = {
    CLASSIFICATION: "std_msgs/msg/String",
    INFERENCE_LATENCY: "std_msgs/msg/Float32",
    INFERENCE_STATS: "std_msgs/msg/Float64MultiArray",
    ACTIVE_LEVEL: "std_msgs/msg/UInt8",
    LEVEL_PROFILE: "std_msgs/msg/Float64MultiArray",
    SUBNET_CMD: "std_msgs/msg/UInt8",
    OVERRUN_FALLBACK: "std_msgs/msg/Float64MultiArray",
    CPU_FREQ_CMD: "std_msgs/msg/UInt32",
    GPU_FREQ_CMD: "std_msgs/msg/UInt64",
    TARGET_LATENCY: "std_msgs/msg/Float32",
    MIN_ACCURACY: "std_msgs/msg/Float32",
    BATTERY: "sensor_msgs/msg/BatteryState",
    THERMAL_CPU: "sensor_msgs/msg/Temperature",
    THERMAL_GPU: "sensor_msgs/msg/Temperature",
    LOAD_CPU: "std_msgs/msg/Float32",
    LOAD_GPU: "std_msgs/msg/Float32",
    DIAGNOSTICS: "diagnostic_msgs/msg/DiagnosticArray",
}
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
#: Topics that hold a value until the next message (a target in force).
STATE_TOPICS = (TARGET_LATENCY, MIN_ACCURACY)
#: What a live ``monitor_node`` publishes.
MONITOR_TOPICS = (LOAD_CPU, LOAD_GPU, THERMAL_CPU, THERMAL_GPU)


def camera_topic(camera: str, topic: str) -> str:
    """``<camera>/<topic>``, relative so node namespaces and remapping apply; just ``topic`` for ""."""
    return f"{camera}/{topic}" if camera else topic
