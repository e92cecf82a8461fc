"""Everything the perception nodes decide or compute, without rclpy: config checks, the worker, results.

The nodes (``nodes/perception_node.py``, ``nodes/perception_lifecycle_node.py``) only turn ROS
messages into calls on :class:`Pipeline` and its outputs back into messages. Here:

- :class:`PerceptionConfig` and :func:`load_family` / :func:`build_model`: parameter values checked
  before anything heavy starts; every error is a :class:`ConfigError` naming the parameter, the file
  and what is allowed.
- :class:`Pipeline`: newest-frame slots per camera (``frame_slots``), one worker thread that decodes
  (``image_codec``), runs the model and hands results to a sink, per-stage timing (``stage_timing``),
  level commands (validated, held while the model loads), and diagnostics key/values.

Classification message format (std_msgs/String, JSON, one object per processed frame)::

    {"stamp": {"sec": 12, "nanosec": 500}, "frame_id": "cam0_optical", "camera": "",
     "level": 2, "weights": "random", "model_ms": 14.2,
     "top_k": [{"index": 734, "name": "police van", "prob": 0.687}, ...]}

``stamp`` and ``frame_id`` are copied from the source image's header; ``camera`` is the stream name
from the ``cameras`` parameter ("" for the unprefixed stream); ``weights`` is "real" when a checkpoint
is loaded and "random" otherwise (then predictions are meaningless); ``model_ms`` is pre-processing
+ inference + post-processing of this frame (also published on ``dynofa/inference_latency_ms``).

Latency statistics for the runtime manager (``dynofa/inference_stats``, std_msgs/Float64MultiArray, one per
processed frame)::

    data = [level, latency_ms, frame_stamp_s, stream]

One message holds the latency *and* the level that produced it, so the manager never has to pair a
latency with a level heard on another topic (two topics have no ordering between them: after a switch
the first sample of the new level used to be read as a slowdown of the old one).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .. import paths
from ..inference import family as fm
from ..inference.backends import BACKENDS, DEVICES
from ..problems import ConfigError, KeyedThrottle
from ..topics import camera_topic
from .frame_slots import Frame, FrameSlots, rate
from .image_codec import DEFAULT_MAX_PIXELS, ImageError, decode_message
from .stage_timing import StageTiming

if TYPE_CHECKING:  # annotations only: inference.model is imported where a model is built (build_model)
    import numpy as np

    from ..inference.model import InferenceResult

log = logging.getLogger("dynofa_ros.perception.pipeline")

_NAME_TOKEN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


# ---------------------------------------------------------------------- configuration
@dataclass
class PerceptionConfig:
    """The node's parameters (see docs/perception.md for each one's meaning)."""

    family_file: str = "config/families/xavier_nx_six_levels.json"
    initial_level: int = 0
    device: str = "auto"
    fp16: bool = False
    weights_path: str = ""
    threads: int = 0
    top_k: int = 5
    backend: str = "auto"
    cameras: list[str] = field(default_factory=lambda: [""])
    compressed: bool = True
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    seed: int = 0
    timing_window: int = 300
    diagnostics_period_s: float = 1.0
    bundle: str = ""  # an exported bundle directory (dynofa-export): family and models from it, no torch needed
    profile_runs: int = 20  # frames timed per level at start-up (perception/level_profile.py); 0 = none

    def check(self) -> None:
        """Cross-field and value checks that a ParameterDescriptor cannot express."""
        if self.device not in DEVICES:
            raise ConfigError(f"parameter device: {self.device!r}; allowed: {list(DEVICES)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"parameter backend: {self.backend!r}; allowed: {list(BACKENDS)}")
        if self.fp16 and self.device == "cpu":
            raise ConfigError("parameter fp16: true needs device 'cuda' or 'auto' with a GPU; "
                              "set fp16: false for device 'cpu'")
        check_cameras(self.cameras)


def check_cameras(names: Sequence[str]) -> list[str]:
    """Stream names: "" (the unprefixed stream) or ROS name tokens, no duplicates."""
    if not names:
        raise ConfigError("parameter cameras: empty list; use [''] for one stream on image_raw or names "
                          "such as ['front', 'rear']")
    for n in names:
        if n and not _NAME_TOKEN.match(n):
            raise ConfigError(f"parameter cameras: {n!r} is not a valid name (letters, digits, '_', starting "
                              "with a letter), or '' for the unprefixed stream")
    if len(set(names)) != len(names):
        raise ConfigError(f"parameter cameras: duplicate names in {list(names)}")
    return list(names)


def resolve_family_path(path: str, share_dir: str | None, cwd: str | os.PathLike[str] | None = None) -> Path:
    """The family file ``path`` names, in :func:`dynofa_ros.paths.candidates` order; ConfigError listing them."""
    if not path:
        raise ConfigError("parameter family_file: empty; give a family JSON file (e.g. "
                          "config/families/xavier_nx_six_levels.json)")
    candidates = paths.candidates(path, share_dir, cwd)
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError(f"parameter family_file: {path!r} not found (looked at: {', '.join(map(str, candidates))})")


def load_family(cfg: PerceptionConfig, share_dir: str | None) -> fm.SubnetFamily:
    """Resolve and load the family file (or the bundle's, when ``bundle`` is set), and check ``initial_level``."""
    if cfg.bundle:
        from ..inference.bundle import BundleError, load_bundle

        try:
            family = load_bundle(cfg.bundle).family
        except BundleError as exc:
            raise ConfigError(f"parameter bundle: {exc}") from None
        path = Path(cfg.bundle)
    else:
        path = resolve_family_path(cfg.family_file, share_dir)
        try:
            family = fm.load(path)
        except fm.FamilyError as exc:
            raise ConfigError(f"parameter family_file: {exc}") from None
    if not 0 <= cfg.initial_level < len(family):
        raise ConfigError(f"parameter initial_level: {cfg.initial_level} is not in family {family.name!r} "
                          f"({path}); allowed: 0..{len(family) - 1}")
    return family


def build_model(cfg: PerceptionConfig, family: fm.SubnetFamily) -> PipelineModel:
    """Build DynamicOFA with every level prepared; configuration failures become ConfigError."""
    if cfg.bundle:
        return build_bundle_model(cfg)
    from ..inference.backends import BackendError
    from ..inference.model import DynamicOFA, LevelError, WeightsError

    kwargs: dict[str, Any] = dict(weights=cfg.weights_path or None, device=cfg.device, fp16=cfg.fp16,
                                  threads=cfg.threads or None, top_k=cfg.top_k, seed=cfg.seed,
                                  backend=cfg.backend)
    if cfg.weights_path and not Path(cfg.weights_path).expanduser().is_file():
        raise ConfigError(f"parameter weights_path: {cfg.weights_path!r} is not a file ('' runs random weights)")
    return _prepared(lambda: DynamicOFA(family, **kwargs), cfg.initial_level, {
        WeightsError: "weights_path", BackendError: "device/backend/fp16", fm.FamilyError: "family_file",
        LevelError: "family_file"})


def build_bundle_model(cfg: PerceptionConfig) -> PipelineModel:
    """DynamicOFA from an exported bundle: ONNX Runtime only; nothing on this path imports torch or ofa."""
    from ..inference.backends import BackendError
    from ..inference.bundle import BundleError, load_bundle
    from ..inference.model import DynamicOFA, LevelError

    if cfg.weights_path:
        log.warning("parameter weights_path ignored: bundle %s carries its own exported weights", cfg.bundle)
    def make() -> PipelineModel:
        bundle = load_bundle(cfg.bundle)
        return DynamicOFA(bundle.family, device=cfg.device, fp16=cfg.fp16, threads=cfg.threads or None,
                          top_k=cfg.top_k, backend=cfg.backend, bundle=bundle)

    model = _prepared(make, cfg.initial_level, {BundleError: "bundle", BackendError: "device/backend/fp16",
                                                 fm.FamilyError: "bundle", LevelError: "bundle"})
    free_memory()  # session creation and warm-up leave freed heap behind: give it back before the robot runs
    return model


def _prepared(make: Callable[[], PipelineModel], initial_level: int,
              errors: dict[type[Exception], str]) -> PipelineModel:
    """Build, warm up and switch to ``initial_level``; an exception of a type in ``errors`` becomes one
    ConfigError naming the parameter it maps to (the first matching type, in the order given)."""
    try:
        model = make()
        warm_up(model)
        model.switch(initial_level)
    except tuple(errors) as exc:
        key = next(k for t, k in errors.items() if isinstance(exc, t))
        raise ConfigError(f"parameter {key}: {exc}") from None
    return model


def warm_up(model: PipelineModel) -> None:
    """One inference per level on a blank frame: the first frame pays no one-off cost (class-name table,
    allocator and backend arenas), so the first camera frames are not dropped behind it."""
    import numpy as np

    frame = np.zeros((64, 64, 3), np.uint8)
    for level in range(model.num_levels):
        model.switch(level)
        model.infer(frame)


# ---------------------------------------------------------------------- messages
def classification_json(stamp_sec: int, stamp_nanosec: int, frame_id: str, camera: str, result: InferenceResult,
                        random_weights: bool) -> str:
    """The ``dynofa/classification`` payload (format in the module docstring)."""
    return json.dumps({
        "stamp": {"sec": int(stamp_sec), "nanosec": int(stamp_nanosec)},
        "frame_id": frame_id,
        "camera": camera,
        "level": int(result.level),
        "weights": "random" if random_weights else "real",
        "model_ms": round(float(result.total_ms), 3),
        "top_k": [{"index": int(p.index), "name": p.name, "prob": float(p.probability)} for p in result.predictions],
    }, separators=(",", ":"))


#: Longest quoted value echoed in a log line: a malformed message may carry a string of any length.
MAX_ECHO = 64
_QUOTED = re.compile(rf"'([^'\n]{{{MAX_ECHO + 1},}})'|\"([^\"\n]{{{MAX_ECHO + 1},}})\"")


def clip_untrusted(text: str, limit: int = MAX_ECHO, total: int = 1024) -> str:
    """A log line with every quoted value longer than ``limit`` cut to ``limit`` chars + ``…(N chars)``.

    Warnings echo values taken from messages (encodings, frame ids, exception texts); a 100 KB string must
    not become a 100 KB log line. ``total`` caps what is left (an unquoted echo).
    """
    def cut(m: re.Match[str]) -> str:
        q = "'" if m.group(1) is not None else '"'
        inner = m.group(1) if m.group(1) is not None else m.group(2)
        return f"{q}{inner[:limit]}{q}…({len(inner)} chars)"

    text = _QUOTED.sub(cut, text)
    return text if len(text) <= total else f"{text[:total]}…({len(text)} chars)"


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


# ---------------------------------------------------------------------- the worker
class ResultSink(Protocol):
    """Where results go: the node's publishers (set while active)."""

    def publish_result(self, stream: int, classification: str, model_ms: float, level: int,
                       stamp_s: float) -> None: ...

    def publish_level(self, level: int) -> None: ...


class PipelineModel(Protocol):
    """What the pipeline, its diagnostics and the node use of a model: the contract a backend must keep.

    ``inference.model.DynamicOFA`` is the one implementation (torch, ONNX Runtime or a bundle behind it);
    written down so that a change to it that would break the worker, the diagnostics or the ``top_k``
    parameter is visible here rather than at the first frame. ``switch`` may be called from another thread
    than ``infer`` and takes effect at the next frame. A ``device`` attribute is shown in diagnostics when
    present.
    """

    top_k: int  # set live by the node's ``top_k`` parameter

    @property
    def num_levels(self) -> int: ...

    @property
    def level(self) -> int: ...

    @property
    def resolution(self) -> int: ...  # input side of ``level``: compressed frames are decoded down to it

    @property
    def random_weights(self) -> bool: ...

    def switch(self, level: int) -> None: ...

    def infer(self, frame: np.ndarray) -> InferenceResult: ...

    def backend_label(self) -> str: ...

    def weights_label(self) -> str: ...

    def accuracy_label(self, level: int | None = None) -> str: ...

    def memory_bytes(self) -> int: ...


Logger = Callable[[str, str], None]  # (severity: "info"|"warning"|"error", message)


def _default_log(severity: str, message: str) -> None:
    getattr(log, severity if severity != "fatal" else "critical")(message)


class Pipeline:
    """Frames in through newest-frame slots, results out through a sink; one worker thread, one model.

    ``submit`` is all a subscription callback does (store the message; no decoding, no inference).
    The worker takes the newest frame of the stream waiting longest, decodes, infers, and publishes
    through the sink. Level commands switch the model, which applies them at the next frame.
    """

    def __init__(self, streams: Sequence[str], num_levels: int, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 window: int = 300, now_ns: Callable[[], int] = time.time_ns, logger: Logger = _default_log):
        self.streams = list(streams)
        self.num_levels = num_levels
        self.max_pixels = max_pixels
        self.slots = FrameSlots(self.streams, window=window)
        self.timing = StageTiming(window)
        self.model: PipelineModel | None = None
        self.now_ns = now_ns
        self._log = logger
        self._throttle = KeyedThrottle()
        self._sink: ResultSink | None = None
        self._busy = threading.Lock()        # held while one frame is processed and published
        self._state_lock = threading.Lock()  # model / held level hand-over
        self._held_level: int | None = None
        self._published_level: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done_times: deque[float] = deque(maxlen=window)
        self.load_error: str | None = None
        self._overrun: tuple[int, float, int] | None = None  # the manager's (from_level, limit_ms, to_level)
        self.overruns_caught = 0  # frames after which that instruction switched the level

    # ------------------------------------------------------------------ lifecycle of the worker
    def start(self, loader: Callable[[], PipelineModel] | None = None,
              on_fatal: Callable[[str], None] | None = None) -> None:
        """Start the worker; with ``loader``, the model is built on the worker first (node stays responsive)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(loader, on_fatal), name="dynofa-worker",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the worker to stop and wait for it; True when it ended in time."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        alive = self._thread.is_alive()
        self._thread = None
        return not alive

    def attach(self, model: PipelineModel) -> None:
        """The model is ready: apply a held level command, then let frames through."""
        with self._state_lock:
            if self._held_level is not None:
                model.switch(self._held_level)
                self._log("info", f"applied held level command: level {self._held_level}")
                self._held_level = None
            self.model = model
        self._announce_level()

    def set_sink(self, sink: ResultSink | None) -> None:
        """Start (sink) or stop (None) results; waits for a frame in flight, forgets waiting frames."""
        with self._busy:
            self._sink = sink
            self._published_level = None
            if sink is None:
                self.slots.clear()
        if sink is not None:
            self._announce_level()

    @property
    def ready(self) -> bool:
        return self.model is not None

    # ------------------------------------------------------------------ inputs
    def submit(self, stream: int, msg: Any, received_ns: int) -> bool:
        """Store the newest frame of ``stream``; True when an unprocessed frame was dropped for it."""
        return self.slots.put(stream, msg, received_ns)

    def request_level(self, level: int) -> tuple[bool, str]:
        """A level command: (accepted, one-line explanation). Held while the model is still loading.

        Invalid commands share one throttled warning (a flood of bad commands is one line per period, with
        how many were suppressed); the explanation is "" while it is throttled.
        """
        if not 0 <= level < self.num_levels:
            suppressed = self._throttle.check("invalid level command")
            if suppressed is None:
                return False, ""
            current = self.model.level if self.model is not None else self._held_level
            more = f" ({suppressed} similar suppressed)" if suppressed else ""
            return False, (f"level command {level} ignored: not in the family (allowed 0..{self.num_levels - 1}); "
                           f"keeping level {current if current is not None else 'initial'}{more}")
        with self._state_lock:
            if self.model is None:
                self._held_level = level
                return True, f"level command {level} held: model still loading, applied before the first frame"
            self.model.switch(level)
        return True, f"level command {level}: takes effect at the next frame"

    def set_overrun_fallback(self, fallback: tuple[int, float, int] | None) -> None:
        """The manager's standing instruction (``dynofa/overrun_fallback``, checked by the node): after a frame at
        ``from_level`` that took longer than ``limit_ms``, switch to ``to_level`` before the next frame, once.
        None clears it. Why here and not only in the manager: the next frame starts as soon as the late one
        ends, before the manager's drop can arrive (``control.policy.OverrunFallback``)."""
        with self._state_lock:
            self._overrun = fallback

    def _catch_overrun(self, level: int, model_ms: float) -> int | None:
        """Follow the standing instruction after a frame at ``level`` that took ``model_ms``: the level switched
        to, or None. Not when a newer level command is already waiting (the manager has moved on)."""
        with self._state_lock:
            fb, model = self._overrun, self.model
            if fb is None or model is None or level != fb[0] or model_ms <= fb[1] or model.level != fb[0]:
                return None
            self._overrun = None  # one-shot: the manager issues the next one after its own decision
            model.switch(fb[2])
        self.overruns_caught += 1
        self._log("info", f"frame at level {level} took {model_ms:.1f} ms > {fb[1]:.1f} ms: level {fb[2]} from the "
                          "next frame on (the manager's overrun fallback, before its own command)")
        return fb[2]

    # ------------------------------------------------------------------ the worker
    def _run(self, loader: Callable[[], PipelineModel] | None, on_fatal: Callable[[str], None] | None) -> None:
        if loader is not None:
            try:
                model = loader()
            except Exception as exc:  # any failure to load ends the node with the reason, not a traceback
                self.load_error = str(exc) or type(exc).__name__
                self._log("fatal", f"model could not be prepared: {self.load_error}")
                if on_fatal:
                    on_fatal(self.load_error)
                return
            if self._stop.is_set():
                return
            self.attach(model)
        while not self._stop.is_set():
            frame = self.slots.take(self._stop, timeout=0.2)
            if frame is None:
                continue
            with self._busy:
                if self._sink is None:
                    continue
                try:
                    self._process(frame, self._sink)
                except Exception as exc:  # a bug must not kill the worker silently; say it once per kind
                    self._warn(frame.stream, "error", f"frame dropped, unexpected {type(exc).__name__}: {exc}")

    def _warn(self, stream: int, severity: str, text: str) -> None:
        key = (stream, text[:32])
        suppressed = self._throttle.check(key)
        if suppressed is None:
            return
        more = f" ({suppressed} similar suppressed)" if suppressed else ""
        self._log(severity, clip_untrusted(f"camera '{self.streams[stream]}': {text}{more}"))

    def _process(self, frame: Frame, sink: ResultSink) -> None:
        from ..inference.preprocess import FrameError

        taken = time.monotonic()
        msg = frame.payload
        model = self.model
        # A JPEG is decoded at 1/2, 1/4 or 1/8 scale when the network's square still fits in it (libjpeg's
        # DCT scaling, image_codec). Read before infer: should the level switch in between, preprocess still
        # resizes the crop to the new level's side, at worst a mild upscale for that one frame (a crop of at
        # least 160 px resized to 224)
        min_side = model.resolution
        try:
            rgb = decode_message(msg, max_pixels=self.max_pixels, min_side=min_side)
        except ImageError as exc:
            self.slots.mark_rejected(frame.stream)
            kind = "compressed" if hasattr(msg, "format") else "raw"
            self._warn(frame.stream, "warning", f"{kind} frame dropped: {exc}")
            return
        decoded = time.monotonic()
        try:
            result = model.infer(rgb)
        except FrameError as exc:
            self.slots.mark_rejected(frame.stream)
            self._warn(frame.stream, "warning", f"frame refused by the model: {exc}")
            return
        inferred = time.monotonic()
        header = msg.header
        text = classification_json(header.stamp.sec, header.stamp.nanosec, header.frame_id,
                                   self.streams[frame.stream], result, model.random_weights)
        sink.publish_result(frame.stream, text, result.total_ms, result.level,
                            header.stamp.sec + header.stamp.nanosec * 1e-9)
        level = self._catch_overrun(result.level, result.total_ms)
        level = result.level if level is None else level
        if level != self._published_level:
            self._published_level = level
            sink.publish_level(level)
        published = time.monotonic()
        now = self.now_ns()
        stamp = stamp_ns(header)
        age_ms: float | None = (now - stamp) / 1e6
        if stamp <= 0:  # never set: an age since 1970 says nothing
            self._warn(frame.stream, "warning", "zero stamp: frame age left out of the statistics (stamp "
                                                "header.stamp when the frame is captured)")
            age_ms = None
        elif age_ms < 0:
            self._warn(frame.stream, "warning", f"stamp ahead of this node's clock: frame age left out of the "
                                                f"statistics ({-age_ms:.1f} ms in the future; clocks not "
                                                "synchronised?)")
            age_ms = None
        model_residual = (inferred - decoded) * 1e3 - result.total_ms  # lock hand-over inside infer
        self.timing.add({
            "transport": (frame.received_ns - stamp) / 1e6 if age_ms is not None else 0.0,
            "wait": (taken - frame.received) * 1e3,
            "conversion": (decoded - taken) * 1e3,
            "preprocess": result.preprocess_ms,
            "inference": result.inference_ms + max(model_residual, 0.0),
            "postprocess": result.postprocess_ms,
            "publish": (published - inferred) * 1e3,
        })
        self.slots.mark_done(frame.stream, age_ms)
        self._done_times.append(published)

    def _announce_level(self) -> None:
        with self._busy:
            sink, model = self._sink, self.model
            if sink is None or model is None:
                return
            level = model.level
            if level != self._published_level:
                self._published_level = level
                sink.publish_level(level)

    # ------------------------------------------------------------------ diagnostics
    def fps(self) -> float:
        return rate(list(self._done_times), time.monotonic())

    def diagnostics(self) -> tuple[int, str, list[tuple[str, str]]]:
        """(level 0 OK / 1 WARN / 2 ERROR, summary, key/values) for a DiagnosticStatus."""
        streams = self.slots.stats()
        dropped = sum(s.dropped for s in streams)
        rejected = sum(s.rejected for s in streams)
        model = self.model
        values: list[tuple[str, str]] = []
        if model is None:
            status = (2, f"model failed: {self.load_error}") if self.load_error else (1, "loading model")
            values.append(("level", "none (loading)" if not self.load_error else "none"))
        else:
            level = model.level
            values += [
                ("level", str(level)),
                ("num_levels", str(model.num_levels)),
                ("device", str(getattr(model, "device", "?"))),
                ("backend", model.backend_label()),
                ("weights", model.weights_label()),
                ("weights_real", str(not model.random_weights).lower()),
                ("accuracy", model.accuracy_label(level)),
                ("model_memory_mb", f"{model.memory_bytes() / 2**20:.1f}"),
                ("torch_loaded", str("torch" in sys.modules).lower()),  # false on the bundle runtime
            ]
            status = (1, "running RANDOM weights: predictions are meaningless") if model.random_weights \
                else (0, f"running level {level}")
        values += [("fps", f"{self.fps():.2f}"), ("dropped_frames", str(dropped)),
                   ("rejected_frames", str(rejected)),
                   ("processed_frames", str(sum(s.processed for s in streams))),
                   ("overrun_fallbacks", str(self.overruns_caught))]
        for stage, (p50, p90) in self.timing.percentiles().items():
            values += [(f"{stage}_ms_p50", f"{p50:.2f}"), (f"{stage}_ms_p90", f"{p90:.2f}")]
        for s in streams:
            prefix = camera_topic(s.name, "image_raw")
            values += [(f"{prefix}.fps", f"{s.fps:.2f}"), (f"{prefix}.received", str(s.received)),
                       (f"{prefix}.processed", str(s.processed)), (f"{prefix}.dropped", str(s.dropped)),
                       (f"{prefix}.rejected", str(s.rejected))]
            if s.age_ms_p50 is not None:
                values += [(f"{prefix}.age_ms_p50", f"{s.age_ms_p50:.2f}"),
                           (f"{prefix}.age_ms_p90", f"{s.age_ms_p90:.2f}")]
        return status[0], status[1], values


def free_memory() -> None:
    """Give freed tensors back: Python objects, the CUDA cache, and glibc's heap (malloc_trim)."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(Exception):
        torch = sys.modules.get("torch")  # only if already loaded: a torch-free runtime must stay torch-free

        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
