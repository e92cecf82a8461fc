"""What the manager, DVFS and monitor nodes share: QoS profiles, descriptors, bad-input warnings, main loop."""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind

try:  # Iron and newer
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

#: Manager commands: reliable + transient-local, depth 1, so a late joiner gets the current command.
COMMAND_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: Targets and feedback from other nodes: reliable volatile (matches reliable publishers of either durability).
INPUT_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10)
#: Sensor-like inputs (battery drivers often publish best effort): best effort accepts both kinds.
SENSOR_QOS = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=5)
#: Monitor outputs and diagnostics: the reliable default.
OUTPUT_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10)

DIAG_OK, DIAG_WARN, DIAG_ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def descriptor(description: str, *, read_only: bool = False, int_range: tuple[int, int] | None = None,
               float_range: tuple[float, float] | None = None, type_: int | None = None) -> ParameterDescriptor:
    d = ParameterDescriptor(description=description, read_only=read_only)
    if type_ is not None:
        d.type = type_
    if int_range:
        d.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    if float_range:
        d.floating_point_range = [FloatingPointRange(from_value=float(float_range[0]), to_value=float(float_range[1]),
                                                     step=0.0)]
    return d


def check_number(value: float, lo: float, hi: float, what: str, unit: str) -> str | None:
    """None when ``value`` is a finite number in [lo, hi]; otherwise why it is dropped."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return f"{what} {value!r} is not a finite number"
    if not lo <= value <= hi:
        return f"{what} {value:g} {unit} is outside [{lo:g}, {hi:g}] {unit}"
    return None


class BadInput:
    """One clear warning per topic per ``period_s``, with how many were dropped since the last one.

    rclpy's own ``throttle_duration_sec`` throttles per call site, so one helper for every topic would let
    a flood on one topic hide another; this keeps a clock per topic.
    """

    def __init__(self, node: Node, period_s: float = 5.0):
        self.node = node
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}
        self.total = 0

    def drop(self, topic: str, why: str) -> None:
        self.total += 1
        self._dropped[topic] = self._dropped.get(topic, 0) + 1
        now = time.monotonic()
        if now - self._last.get(topic, -math.inf) >= self.period_s:
            n = self._dropped.pop(topic)
            more = f" ({n} dropped on this topic since the last warning)" if n > 1 else ""
            self.node.get_logger().warning(f"'{topic}': {why}: message dropped{more}")
            self._last[topic] = now


def subscribe(node: Node, msg_type: Any, topic: str, callback: Callable[[Any], None], qos: QoSProfile) -> Any:
    """A subscription that logs one warning naming the topic and policy when a publisher's QoS is incompatible."""
    holder: dict[str, str] = {"topic": topic}

    def on_incompatible(event: Any) -> None:
        if event.total_count_change > 0:
            node.get_logger().warning(
                f"'{holder['topic']}': a publisher's QoS is incompatible with this subscription "
                f"({qos_policy_name_from_kind(event.last_policy_kind)}; subscription: {qos.reliability.name}, "
                f"{qos.durability.name}): nothing will be received from it")

    sub = node.create_subscription(msg_type, topic, callback, qos,
                                   event_callbacks=SubscriptionEventCallbacks(incompatible_qos=on_incompatible))
    holder["topic"] = sub.topic_name
    return sub


def diagnostics(node: Node, name: str, level: bytes, message: str, values: dict[str, Any]) -> DiagnosticArray:
    status = DiagnosticStatus(level=level, name=f"{node.get_fully_qualified_name()}: {name}",
                              message=message, hardware_id=node.get_name(),
                              values=[KeyValue(key=str(k), value=str(v)) for k, v in values.items()])
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = node.get_clock().now().to_msg()
    return msg


class ConfigError(ValueError):
    """A parameter given at start-up is invalid; the node exits with status 2 and this message."""


def run(name: str, factory: Callable[[], Node], on_exit: Callable[[Node], None] | None = None) -> int:
    """Spin until Ctrl-C, SIGTERM or shutdown (STYLE.md #10/#13); ``on_exit`` always runs (clock restore)."""
    rclpy.init(args=sys.argv)
    node: Node | None = None
    status = 0
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_DFL, None):  # rclpy did not take SIGTERM: make it a normal exit
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        node = factory()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        status = 2
    finally:
        if node is not None:
            if on_exit is not None:
                on_exit(node)
            node.destroy_node()
        rclpy.try_shutdown()
    return status
