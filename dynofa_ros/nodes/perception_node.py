"""perception_node: Dynamic-OFA on camera frames; level switches between frames; stale frames dropped.

This module only translates: parameters → :class:`~dynofa_ros.perception.pipeline.PerceptionConfig`, image and
command messages → :class:`~dynofa_ros.perception.pipeline.Pipeline`, results → messages. What is decided or
computed lives in ``dynofa_ros/perception/pipeline.py`` (and ``image_codec``, ``frame_slots``, ``stage_timing``).

:class:`PerceptionRuntime` is shared with ``perception_lifecycle_node``: the plain node calls
``configure(background=True)`` and ``activate()`` at start-up (the model is built on the worker
thread, so parameter services, diagnostics and held level commands work while it loads); the
lifecycle node calls the same methods from its transitions. Topics: docs/perception.md.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Bool, Float32, Float64MultiArray, String, UInt8, UInt32

from .. import paths, topics
from ..inference.backends import BACKENDS, DEVICES
from ..perception import level_profile
from ..perception.pipeline import (
    PerceptionConfig,
    Pipeline,
    PipelineModel,
    build_model,
    free_memory,
    load_family,
)
from ..problems import ConfigError
from ..topics import camera_topic
from .common import IMAGE_QOS, LATCHED_QOS, RELIABLE_QOS, STATS_QOS, BadInput, descriptor, subscribe
from .common import run as run_node
from .inference_stats import overrun_from_msg
from .inference_stats import to_msg as inference_stats

LIVE_PARAMETERS = ("top_k", "max_image_pixels")
#: Seconds between two looks at how many publishers the camera topics have (``dynofa/camera_publishers``).
CAMERA_PUBLISHERS_POLL_S = 0.2


class PerceptionRuntime:
    """Parameters, publishers, subscriptions and the pipeline of one perception node (plain or lifecycle)."""

    def __init__(self, node: Node, *, settable_when_unconfigured: bool = False):
        self.node = node
        self.log = node.get_logger()
        self.pipeline: Pipeline | None = None
        self.config: PerceptionConfig | None = None
        self.fatal: str | None = None
        self._pubs: dict[str, Any] = {}
        self._result_pubs: list[Any] = []
        self._subs: list[Any] = []
        self._timer: Any = None
        self._graph_timer: Any = None
        self.level_profile_ms: list[float] = []  # each level's lower-quartile model_ms at start-up (profile_runs)
        self.bad = BadInput(node)
        self._declare(read_only=not settable_when_unconfigured)
        node.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------ parameters
    def _declare(self, read_only: bool) -> None:
        d = PerceptionConfig()
        ro = read_only
        decl = self.node.declare_parameter
        decl("family_file", d.family_file, descriptor(
            "Family JSON file; a relative path is looked up in the package share directory, then the CWD",
            read_only=ro))
        decl("initial_level", d.initial_level, descriptor(
            "Level run until the first dynofa/subnet_cmd (0 = fastest)", read_only=ro, int_range=(0, 255)))
        decl("device", d.device, descriptor(f"Where the model runs: one of {list(DEVICES)}", read_only=ro))
        decl("fp16", d.fp16, descriptor("Half precision on CUDA (ignored nowhere: refused on cpu)", read_only=ro))
        decl("weights_path", d.weights_path, descriptor(
            "OFA supernet checkpoint (.pth); '' runs seeded random weights (predictions meaningless)", read_only=ro))
        decl("threads", d.threads, descriptor("CPU threads for inference; 0 = library default", read_only=ro,
                                               int_range=(0, 256)))
        decl("top_k", d.top_k, descriptor("Classes per result, best first", read_only=False,
                                           int_range=(1, 1000)))
        decl("backend", d.backend, descriptor(f"Inference backend: one of {list(BACKENDS)}", read_only=ro))
        decl("cameras", d.cameras, descriptor(
            "Camera stream names; each <name>/image_raw gives <name>/dynofa/classification; '' = unprefixed",
            read_only=ro))
        decl("compressed", d.compressed, descriptor("Also subscribe <name>/image_raw/compressed (JPEG/PNG)",
                                                     read_only=ro))
        decl("max_image_pixels", d.max_image_pixels, descriptor(
            "Frames with more pixels are refused before decoding", read_only=False, int_range=(1, 2**31 - 1)))
        decl("seed", d.seed, descriptor("Seed of the random weights and their BN calibration frames",
                                         read_only=ro, int_range=(0, 2**31 - 1)))
        decl("timing_window", d.timing_window, descriptor("Frames in the p50/p90 stage-timing window",
                                                           read_only=ro, int_range=(10, 100000)))
        decl("diagnostics_period_s", d.diagnostics_period_s, descriptor(
            "Seconds between /diagnostics messages", read_only=ro, float_range=(0.05, 60.0)))
        decl("profile_runs", d.profile_runs, descriptor(
            "Frames timed per level at start-up, published latched on dynofa/level_profile_ms for the manager to "
            "plan the ratios between levels with (a few seconds on a CPU); 0 = no profile", read_only=ro,
            int_range=(0, 1000)))
        decl("bundle", d.bundle, descriptor(
            "Exported bundle directory (dynofa-export); when set, family_file and weights_path are not used and "
            "every level runs on ONNX Runtime without torch", read_only=ro))

    def read_config(self) -> PerceptionConfig:
        get = self.node.get_parameter
        cfg = PerceptionConfig(**{name: get(name).value for name in vars(PerceptionConfig())})
        cfg.cameras = list(cfg.cameras)
        cfg.check()
        return cfg

    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        for p in params:
            if p.name not in LIVE_PARAMETERS and self.pipeline is not None:
                return SetParametersResult(successful=False, reason=(
                    f"{p.name} can change only while the node is unconfigured (run the cleanup transition first)"))
        for p in params:
            if self.pipeline is not None and p.name == "max_image_pixels":
                self.pipeline.max_pixels = int(p.value)
            if self.pipeline is not None and self.pipeline.model is not None and p.name == "top_k":
                self.pipeline.model.top_k = int(p.value)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ transitions
    def configure(self, *, background: bool, on_fatal: Callable[[str], None] | None = None) -> None:
        """Check parameters and family (fast, raises ConfigError); build the model now or on the worker."""
        cfg = self.read_config()
        family = load_family(cfg, paths.share_dir())
        pipeline = Pipeline(cfg.cameras, len(family), max_pixels=cfg.max_image_pixels, window=cfg.timing_window,
                            now_ns=lambda: self.node.get_clock().now().nanoseconds, logger=self._log)
        self.config = cfg
        if background:
            self.pipeline = pipeline
            pipeline.start(lambda: self._build(cfg, family), on_fatal)
        else:
            model = self._build(cfg, family)
            pipeline.attach(model)
            pipeline.start()
            self.pipeline = pipeline

    def _build(self, cfg: PerceptionConfig, family: Any) -> PipelineModel:
        self.log.info(f"preparing {len(family)} levels of family {family.name!r} on device {cfg.device!r}")
        model = build_model(cfg, family)
        if cfg.profile_runs:  # before "ready": frames are taken once this returns
            t0 = time.monotonic()
            self.level_profile_ms = level_profile.measure(model, cfg.profile_runs)
            self.log.info(f"level profile ({cfg.profile_runs} frames per level, {time.monotonic() - t0:.1f} s): "
                          + level_profile.describe(self.level_profile_ms, family.latencies())
                          + " (ratio to the family file)")
        self.log.info(f"ready: {model.num_levels} levels, backend {model.backend_label()}, weights "
                      f"{model.weights_label()}, level {model.level}, accuracy {model.accuracy_label()}, "
                      f"prepared in {getattr(model, 'prepare_s', 0.0):.1f} s")
        return model

    def activate(self) -> None:
        """Create publishers and subscriptions; results flow."""
        assert self.pipeline is not None and self.config is not None
        node = self.node
        cfg = self.config
        self._result_pubs = [node.create_publisher(String, camera_topic(c, topics.CLASSIFICATION), RELIABLE_QOS)
                             for c in cfg.cameras]
        self._pubs = {
            "latency": node.create_publisher(Float32, topics.INFERENCE_LATENCY, RELIABLE_QOS),
            "stats": node.create_publisher(Float64MultiArray, topics.INFERENCE_STATS, STATS_QOS),
            "level": node.create_publisher(UInt8, topics.ACTIVE_LEVEL, LATCHED_QOS),
            # Latched readiness (replay --wait-ready): true once the model is prepared and frames are taken.
            "ready": node.create_publisher(Bool, topics.READY, LATCHED_QOS),
            "level_profile": node.create_publisher(Float64MultiArray, topics.LEVEL_PROFILE, LATCHED_QOS),
            "camera_publishers": node.create_publisher(UInt32, topics.CAMERA_PUBLISHERS, LATCHED_QOS),
            "diagnostics": node.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, RELIABLE_QOS),
        }
        for i, cam in enumerate(cfg.cameras):
            self._subscribe(Image, camera_topic(cam, topics.IMAGE_RAW), self._frame_callback(i), IMAGE_QOS)
            if cfg.compressed:
                self._subscribe(CompressedImage, camera_topic(cam, topics.IMAGE_COMPRESSED), self._frame_callback(i),
                                IMAGE_QOS)
        self._subscribe(UInt8, topics.SUBNET_CMD, self._on_subnet_cmd, LATCHED_QOS)
        self._subscribe(Float64MultiArray, topics.OVERRUN_FALLBACK, self._on_overrun_fallback, LATCHED_QOS)
        self._timer = node.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics)
        self._camera_publishers: int | None = None
        self._graph_timer = node.create_timer(CAMERA_PUBLISHERS_POLL_S, self._publish_camera_publishers)
        self.pipeline.set_sink(self)

    def deactivate(self) -> None:
        """Stop results (the model stays loaded): no frame is taken until activate."""
        if self.pipeline is not None:
            self.pipeline.set_sink(None)
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        for pub in [*self._result_pubs, *self._pubs.values()]:
            self.node.destroy_publisher(pub)
        for timer in (self._timer, self._graph_timer):
            if timer is not None:
                self.node.destroy_timer(timer)
        self._subs, self._result_pubs, self._pubs, self._timer, self._graph_timer = [], [], {}, None, None
        self._ready_sent = False

    def cleanup(self) -> None:
        """Stop the worker and free the model (and the CUDA cache)."""
        self.deactivate()
        if self.pipeline is not None:
            self.pipeline.stop()
            self.pipeline.model = None
            self.pipeline = None
        free_memory()

    def _publish_camera_publishers(self) -> None:
        """Publish (on change) how many publishers this node's own discovery sees on its camera topics.

        Why: discovery is asymmetric. A player sees this node's subscription before this node has matched
        the player's publisher, and best-effort frames sent in between are lost; only this side can tell.
        """
        pub = self._pubs.get("camera_publishers")
        if pub is None:
            return
        count = sum(self.node.count_publishers(sub.topic_name) for sub in self._subs
                    if sub.msg_type in (Image, CompressedImage))
        if count != self._camera_publishers:
            self._camera_publishers = count
            pub.publish(UInt32(data=count))

    # ------------------------------------------------------------------ subscriptions
    def _subscribe(self, msg_type: type, topic: str, callback: Callable[[Any], None], qos: Any) -> None:
        self._subs.append(subscribe(self.node, msg_type, topic, callback, qos, report_lost=True))

    def _frame_callback(self, stream: int) -> Callable[[Any], None]:
        def on_frame(msg: Any) -> None:
            pipeline = self.pipeline
            if pipeline is None:
                return
            if pipeline.submit(stream, msg, self.node.get_clock().now().nanoseconds):
                s = pipeline.slots.stats()[stream]
                self.log.info(f"camera '{s.name}': frames arrive faster than inference; kept the newest, "
                              f"{s.dropped} dropped so far", throttle_duration_sec=10.0)
        return on_frame

    def _on_subnet_cmd(self, msg: UInt8) -> None:
        if self.pipeline is None:
            self.log.warning(f"level command {msg.data} ignored: node not configured")
            return
        accepted, text = self.pipeline.request_level(int(msg.data))
        if text:  # "" while invalid commands are throttled
            self._log("info" if accepted else "warning", text)

    def _on_overrun_fallback(self, msg: Float64MultiArray) -> None:
        if self.pipeline is None:
            return
        try:
            fallback = overrun_from_msg(msg, self.pipeline.num_levels)
        except ValueError as exc:
            self.pipeline.set_overrun_fallback(None)  # an instruction that cannot be followed replaces the old one
            return self.bad.drop(topics.OVERRUN_FALLBACK, str(exc))
        self.pipeline.set_overrun_fallback(fallback)

    # ------------------------------------------------------------------ sink (called on the worker thread)
    def publish_result(self, stream: int, classification: str, model_ms: float, level: int,
                       stamp_s: float) -> None:
        self._pubs["stats"].publish(inference_stats(level, model_ms, stamp_s, stream))
        self._result_pubs[stream].publish(String(data=classification))
        self._pubs["latency"].publish(Float32(data=float(model_ms)))

    def publish_level(self, level: int) -> None:
        # The pipeline announces the level first when both the model and the sink exist: ready from here on.
        if not getattr(self, "_ready_sent", False):
            self._ready_sent = True
            if self.level_profile_ms:  # before ready and before any sample: the manager plans the first with it
                self._pubs["level_profile"].publish(Float64MultiArray(data=self.level_profile_ms))
            self._pubs["ready"].publish(Bool(data=True))
        self._pubs["level"].publish(UInt8(data=int(level)))

    def _log(self, severity: str, message: str) -> None:
        # rclpy binds a severity to each call site, so each severity gets its own call.
        if severity == "info":
            self.log.info(message)
        elif severity == "warning":
            self.log.warning(message)
        elif severity == "error":
            self.log.error(message)
        else:
            self.log.fatal(message)

    def _publish_diagnostics(self) -> None:
        pipeline = self.pipeline
        pub = self._pubs.get("diagnostics")
        if pipeline is None or pub is None:
            return
        level, summary, values = pipeline.diagnostics()
        status = DiagnosticStatus(level=bytes([level]), name=f"{self.node.get_fully_qualified_name()}: dynofa "
                                  "perception", message=summary, values=[KeyValue(key=k, value=v) for k, v in values])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        pub.publish(msg)


class PerceptionNode(Node):
    """The plain node: configured and active from start-up; the model loads on the worker thread."""

    def __init__(self) -> None:
        super().__init__("perception_node")
        self.runtime = PerceptionRuntime(self)
        self.runtime.configure(background=True, on_fatal=self._on_fatal)
        self.runtime.activate()

    def _on_fatal(self, reason: str) -> None:
        self.runtime.fatal = reason
        rclpy.try_shutdown(context=self.context)  # ends spin in main(); exit status 1


def run(node_factory: Callable[[], Node]) -> int:
    """Spin a node until Ctrl-C or shutdown (nodes/common.run); 1 on a configuration or load failure, one line."""
    def cleanup(node: Node) -> None:
        runtime = getattr(node, "runtime", None)
        if runtime is not None:
            runtime.cleanup()

    def failed(node: Node) -> bool:
        runtime = getattr(node, "runtime", None)
        return bool(runtime is not None and runtime.fatal)

    return run_node(os.path.basename(sys.argv[0]) or "perception_node", node_factory, cleanup,
                    config_errors=(ConfigError,), config_status=1, failed=failed)


def main() -> int:
    return run(PerceptionNode)


if __name__ == "__main__":
    sys.exit(main())
