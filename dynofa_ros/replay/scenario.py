"""Scenario model: what a recorded robot run looks like, as a small YAML file, turned into timed events.

A scenario describes, over ``duration_s`` seconds, the camera stream and the conditions the runtime
manager reacts to: battery drain, a thermal ramp, CPU/GPU load steps and performance-target changes,
plus (for the demo) when real CPU contention starts. ``make_scenario_bag`` turns the events into a
rosbag2 bag; the demo and the report read the same file, so there is one description of the run.

Pure: no rclpy, no rosbags, so it is unit-tested on its own (``test/test_scenario_bag.py``).

YAML format (every key optional except ``duration_s``; see ``docs/replay.md``)::

    name: contention_demo
    duration_s: 60
    start_time_ns: 1700000000000000000   # bag clock start; default: a fixed epoch, so bags are reproducible
    camera: {fps: 10, width: 160, height: 120, encoding: rgb8, frame_id: camera, topic: image_raw,
             source: null}                # a video file or an image folder; null = synthetic scenes
    battery: {rate_hz: 1, start_percent: 95, end_percent: 60, voltage: 11.1, topic: battery_state}
    thermal: {rate_hz: 2, cpu: [[0, 45], [60, 70]], gpu: [[0, 42], [60, 66]]}   # piecewise-linear ramps
    load:    {rate_hz: 2, cpu: [[0, 15], [30, 95]], gpu: [[0, 5]]}              # steps: value holds from t
    targets: {latency_ms: [[0, 60], [45, 40]], min_accuracy: [[0, 0]]}         # published at each change
    contention: {start_s: 30, workers: 2}   # real competing processes (demo only; not in the bag)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..series import step_value

#: The ROS message type each event kind is written as (topic names: ``dynofa_ros/topics.py``).
TOPIC_TYPES: dict[str, str] = {
    "image": "sensor_msgs/msg/Image",
    "battery": "sensor_msgs/msg/BatteryState",
    "thermal_cpu": "sensor_msgs/msg/Temperature",
    "thermal_gpu": "sensor_msgs/msg/Temperature",
    "load_cpu": "std_msgs/msg/Float32",
    "load_gpu": "std_msgs/msg/Float32",
    "target_latency_ms": "std_msgs/msg/Float32",
    "min_accuracy": "std_msgs/msg/Float32",
}
DEFAULT_TOPICS: dict[str, str] = {
    "image": "image_raw",
    "battery": "battery_state",
    "thermal_cpu": "thermal/cpu",
    "thermal_gpu": "thermal/gpu",
    "load_cpu": "load/cpu",
    "load_gpu": "load/gpu",
    "target_latency_ms": "dynofa/target_latency_ms",
    "min_accuracy": "dynofa/min_accuracy",
}
ENCODINGS = ("rgb8", "bgr8", "mono8")
#: 2023-11-14T22:13:20Z: a fixed bag clock, so the same scenario gives byte-identical bags.
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000

Points = tuple[tuple[float, float], ...]


class ScenarioError(ValueError):
    """A scenario file is invalid; the message names the file, the key and what is allowed."""


@dataclass(frozen=True)
class Camera:
    fps: float = 10.0
    width: int = 160
    height: int = 120
    encoding: str = "rgb8"
    frame_id: str = "camera"
    source: str | None = None


@dataclass(frozen=True)
class Battery:
    rate_hz: float = 1.0
    start_percent: float = 95.0
    end_percent: float = 60.0
    voltage: float = 11.1


@dataclass(frozen=True)
class Contention:
    """Real CPU contention started by the demo (not written into the bag: it must be real)."""

    start_s: float | None = None
    workers: int = 2


@dataclass(frozen=True)
class Event:
    """One message to write: when (ns on the bag clock), what kind (a ``TOPIC_TYPES`` key), its value."""

    t_ns: int
    kind: str
    value: Any


@dataclass(frozen=True)
class Scenario:
    name: str
    duration_s: float
    start_time_ns: int = DEFAULT_START_NS
    camera: Camera | None = field(default_factory=Camera)
    battery: Battery | None = None
    thermal_rate_hz: float = 2.0
    thermal: dict[str, Points] = field(default_factory=dict)   # 'cpu'/'gpu' -> ramp points
    load_rate_hz: float = 2.0
    load: dict[str, Points] = field(default_factory=dict)      # 'cpu'/'gpu' -> step points
    targets: dict[str, Points] = field(default_factory=dict)   # 'latency_ms'/'min_accuracy' -> steps
    contention: Contention = field(default_factory=Contention)
    topics: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TOPICS))
    source_path: Path | None = None

    def topic(self, kind: str) -> str:
        return self.topics[kind]

    def kinds(self) -> list[str]:
        """The event kinds this scenario writes (one bag topic each)."""
        out = []
        if self.camera is not None:
            out.append("image")
        if self.battery is not None:
            out.append("battery")
        out += [f"thermal_{k}" for k in ("cpu", "gpu") if k in self.thermal]
        out += [f"load_{k}" for k in ("cpu", "gpu") if k in self.load]
        out += [k for k in ("target_latency_ms", "min_accuracy") if k in self.targets]
        return out

    def end_ns(self) -> int:
        return self.start_time_ns + seconds_to_ns(self.duration_s)


# ---------------------------------------------------------------------------------------- values
def seconds_to_ns(t: float) -> int:
    return round(t * 1e9)


def ramp_value(points: Points, t: float) -> float:
    """Piecewise-linear interpolation, held constant outside the given points."""
    if t <= points[0][0]:
        return points[0][1]
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if t <= t1:
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1
    return points[-1][1]


def _ticks(rate_hz: float, duration_s: float) -> Iterator[float]:
    n = math.floor(duration_s * rate_hz + 1e-9)
    for i in range(n):
        yield i / rate_hz


def events(sc: Scenario) -> list[Event]:
    """Every message of the scenario except camera frames, sorted by time (frames: ``frame_times``)."""
    out: list[Event] = []
    t0 = sc.start_time_ns
    if sc.battery is not None:
        b = sc.battery
        for t in _ticks(b.rate_hz, sc.duration_s):
            pct = b.start_percent + (b.end_percent - b.start_percent) * t / sc.duration_s
            out.append(Event(t0 + seconds_to_ns(t), "battery", {"percentage": pct / 100.0, "voltage": b.voltage}))
    for key, pts in sc.thermal.items():
        for t in _ticks(sc.thermal_rate_hz, sc.duration_s):
            out.append(Event(t0 + seconds_to_ns(t), f"thermal_{key}", ramp_value(pts, t)))
    for key, pts in sc.load.items():
        for t in _ticks(sc.load_rate_hz, sc.duration_s):
            out.append(Event(t0 + seconds_to_ns(t), f"load_{key}", step_value(pts, t)))
    for key, pts in sc.targets.items():
        for t, v in pts:
            if t < sc.duration_s:
                out.append(Event(t0 + seconds_to_ns(t), key, v))
    out.sort(key=lambda e: (e.t_ns, e.kind))
    return out


def frame_times_ns(sc: Scenario) -> list[int]:
    """Bag-clock time (and header stamp) of every camera frame."""
    if sc.camera is None:
        return []
    return [sc.start_time_ns + seconds_to_ns(t) for t in _ticks(sc.camera.fps, sc.duration_s)]


def expected_counts(sc: Scenario) -> dict[str, int]:
    """Messages per topic the bag of this scenario holds: what the bag tests check."""
    counts: dict[str, int] = {}
    if sc.camera is not None:
        counts[sc.topic("image")] = len(frame_times_ns(sc))
    for ev in events(sc):
        counts[sc.topic(ev.kind)] = counts.get(sc.topic(ev.kind), 0) + 1
    return counts


def synthetic_frame(index: int, width: int, height: int, encoding: str = "rgb8") -> np.ndarray:
    """A deterministic moving scene (gradient background, a bright square drifting across it).

    Frames differ from one another so a classifier's output is not trivially constant, and the same
    index always gives the same pixels, so bags are reproducible.
    """
    yy, xx = np.mgrid[0:height, 0:width]
    phase = index * 0.15
    r = (127 + 120 * np.sin(xx / max(width, 1) * 2 * np.pi + phase)).astype(np.uint8)
    g = (127 + 120 * np.cos(yy / max(height, 1) * 2 * np.pi - phase)).astype(np.uint8)
    b = ((xx + yy + index * 3) % 256).astype(np.uint8)
    img = np.stack([r, g, b], axis=-1)
    side = max(4, min(width, height) // 4)
    x0 = (index * 4) % max(1, width - side)
    y0 = (index * 3) % max(1, height - side)
    img[y0:y0 + side, x0:x0 + side] = (255, 255, 40)
    return convert_rgb(img, encoding)


def convert_rgb(img: np.ndarray, encoding: str) -> np.ndarray:
    """An HxWx3 RGB uint8 array in one of ``ENCODINGS``."""
    if encoding == "rgb8":
        return np.ascontiguousarray(img)
    if encoding == "bgr8":
        return np.ascontiguousarray(img[..., ::-1])
    if encoding == "mono8":
        return (img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
    raise ScenarioError(f"camera.encoding {encoding!r}; allowed: {list(ENCODINGS)}")


def channels(encoding: str) -> int:
    return 1 if encoding == "mono8" else 3


# ---------------------------------------------------------------------------------------- loading
def _err(where: str, key: str, msg: str) -> ScenarioError:
    return ScenarioError(f"{where}: {key}: {msg}")


def _number(where: str, key: str, v: Any, *, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise _err(where, key, f"expected a finite number, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise _err(where, key, f"{v!r} outside [{lo}, {hi}]")
    return float(v)


def _points(where: str, key: str, v: Any, duration: float) -> Points:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return ((0.0, _number(where, key, v)),)
    if not isinstance(v, Sequence) or isinstance(v, str) or not v:
        raise _err(where, key, f"expected a number or a non-empty list of [t_s, value] pairs, got {v!r}")
    pts = []
    for i, p in enumerate(v):
        if not isinstance(p, Sequence) or isinstance(p, str) or len(p) != 2:
            raise _err(where, f"{key}[{i}]", f"expected [t_s, value], got {p!r}")
        pts.append((_number(where, f"{key}[{i}][0]", p[0], lo=0.0, hi=duration),
                    _number(where, f"{key}[{i}][1]", p[1])))
    if any(b[0] < a[0] for a, b in itertools.pairwise(pts)):
        raise _err(where, key, "times must not decrease")
    return tuple(pts)


def _section(where: str, data: dict[str, Any], key: str, allowed: Sequence[str]) -> dict[str, Any] | None:
    v = data.get(key)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise _err(where, key, f"expected a mapping, got {v!r}")
    unknown = sorted(set(v) - set(allowed))
    if unknown:
        raise _err(where, key, f"unknown keys {unknown}; allowed: {sorted(allowed)}")
    return v


def scenario_from_dict(data: Any, where: str = "<scenario>") -> Scenario:
    """Validate a parsed YAML mapping completely and build the scenario (every error names the key)."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    allowed_top = ("name", "duration_s", "start_time_ns", "camera", "battery", "thermal", "load", "targets",
                   "contention", "topics")
    unknown = sorted(set(data) - set(allowed_top))
    if unknown:
        raise _err(where, "<top level>", f"unknown keys {unknown}; allowed: {list(allowed_top)}")
    if "duration_s" not in data:
        raise _err(where, "duration_s", "required")
    duration = _number(where, "duration_s", data["duration_s"], lo=0.1, hi=24 * 3600)
    start_ns = data.get("start_time_ns", DEFAULT_START_NS)
    if isinstance(start_ns, bool) or not isinstance(start_ns, int) or start_ns < 0:
        raise _err(where, "start_time_ns", f"expected a non-negative integer, got {start_ns!r}")

    topics = dict(DEFAULT_TOPICS)
    t = _section(where, data, "topics", list(DEFAULT_TOPICS))
    for k, v in (t or {}).items():
        if not isinstance(v, str) or not v:
            raise _err(where, f"topics.{k}", f"expected a topic name, got {v!r}")
        topics[k] = v

    camera: Camera | None = Camera()
    if "camera" in data and data["camera"] is None:
        camera = None
    c = _section(where, data, "camera", ("fps", "width", "height", "encoding", "frame_id", "source", "topic"))
    if c is not None:
        enc = c.get("encoding", "rgb8")
        if enc not in ENCODINGS:
            raise _err(where, "camera.encoding", f"{enc!r}; allowed: {list(ENCODINGS)}")
        source = c.get("source")
        if source is not None and not isinstance(source, str):
            raise _err(where, "camera.source", f"expected a path or null, got {source!r}")
        if "topic" in c:
            topics["image"] = str(c["topic"])
        camera = Camera(fps=_number(where, "camera.fps", c.get("fps", 10), lo=0.1, hi=240),
                        width=int(_number(where, "camera.width", c.get("width", 160), lo=1, hi=8192)),
                        height=int(_number(where, "camera.height", c.get("height", 120), lo=1, hi=8192)),
                        encoding=enc, frame_id=str(c.get("frame_id", "camera")), source=source)

    battery = None
    b = _section(where, data, "battery", ("rate_hz", "start_percent", "end_percent", "voltage", "topic"))
    if b is not None:
        if "topic" in b:
            topics["battery"] = str(b["topic"])
        battery = Battery(rate_hz=_number(where, "battery.rate_hz", b.get("rate_hz", 1), lo=0.01, hi=100),
                          start_percent=_number(where, "battery.start_percent", b.get("start_percent", 95), lo=0,
                                                hi=100),
                          end_percent=_number(where, "battery.end_percent", b.get("end_percent", 60), lo=0, hi=100),
                          voltage=_number(where, "battery.voltage", b.get("voltage", 11.1), lo=0))

    def curves(section: str, keys: tuple[str, ...]) -> tuple[float, dict[str, Points]]:
        s = _section(where, data, section, ("rate_hz", *keys)) or {}
        rate = _number(where, f"{section}.rate_hz", s.get("rate_hz", 2), lo=0.01, hi=100)
        return rate, {k: _points(where, f"{section}.{k}", s[k], duration) for k in keys if k in s}

    thermal_rate, thermal = curves("thermal", ("cpu", "gpu"))
    load_rate, load = curves("load", ("cpu", "gpu"))
    for k, pts in load.items():
        for i, (_, v) in enumerate(pts):
            if not 0 <= v <= 100:
                raise _err(where, f"load.{k}[{i}]", f"{v} is not a percentage in [0, 100]")
    tg = _section(where, data, "targets", ("latency_ms", "min_accuracy")) or {}
    targets = {k: _points(where, f"targets.{k}", tg[k], duration) for k in ("latency_ms", "min_accuracy") if k in tg}
    for i, (_, v) in enumerate(targets.get("latency_ms", ())):
        if v <= 0:
            raise _err(where, f"targets.latency_ms[{i}]", f"{v} must be > 0 ms")
    targets = {("target_latency_ms" if k == "latency_ms" else k): v for k, v in targets.items()}

    cont = Contention()
    ct = _section(where, data, "contention", ("start_s", "workers"))
    if ct is not None:
        start = ct.get("start_s")
        cont = Contention(start_s=None if start is None else _number(where, "contention.start_s", start, lo=0,
                                                                     hi=duration),
                          workers=int(_number(where, "contention.workers", ct.get("workers", 2), lo=1, hi=64)))
    name = data.get("name") or (Path(where).stem if where != "<scenario>" else "scenario")
    return Scenario(name=str(name), duration_s=duration, start_time_ns=start_ns, camera=camera, battery=battery,
                    thermal_rate_hz=thermal_rate, thermal=thermal, load_rate_hz=load_rate, load=load,
                    targets=targets, contention=cont, topics=topics)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file."""
    import dataclasses

    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from exc
    sc = scenario_from_dict(data, str(path))
    if sc.camera is not None and sc.camera.source and not Path(sc.camera.source).is_absolute():
        # A relative source is relative to the scenario file, so scenarios can ship with their clips.
        sc = dataclasses.replace(sc, camera=dataclasses.replace(sc.camera,
                                                                source=str(path.parent / sc.camera.source)))
    return dataclasses.replace(sc, source_path=path)
