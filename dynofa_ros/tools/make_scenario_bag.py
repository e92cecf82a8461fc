"""``make_scenario_bag``: write a scenario (config/scenarios/*.yaml) as a rosbag2 bag, sqlite3 and/or mcap.

    make_scenario_bag config/scenarios/demo.yaml -o out/scenario_demo            # mcap
    make_scenario_bag config/scenarios/ci_short.yaml -o /tmp/b --storage both    # /tmp/b_sqlite3, /tmp/b_mcap
    make_scenario_bag demo.yaml -o out/walk --source walk.mp4                     # frames from a video

Camera frames come from a video file or an image folder when one is given (resized to the scenario's
size, looped when the clip is shorter than the scenario), otherwise from deterministic synthetic scenes.
Written with ``rosbags`` so it needs no ROS install; the bag plays with ``ros2 bag play`` on a robot
(metadata version 8 by default, which Humble, Jazzy and later all read; ``--bag-version 9`` for the
newer layout, which Humble cannot parse) and with ``replay`` anywhere.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..replay import scenario as scn
from ..replay import transport as pb
from ..replay.bagio import DEFAULT_VERSION, VERSIONS, BagError, BagWriter, OfferedQos

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff")


class SourceError(ValueError):
    """A frame source (video, image folder) cannot be read."""


def source_frames(source: str, width: int, height: int) -> Iterator[np.ndarray]:
    """RGB frames from a video file or an image folder, resized, looping forever."""
    import cv2

    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)})")
        frames = []
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise SourceError(f"{f}: not a readable image")
            frames.append(cv2.cvtColor(cv2.resize(img, (width, height)), cv2.COLOR_BGR2RGB))
        while True:
            yield from frames
    if not path.exists():
        raise SourceError(f"{path}: no such video file or image folder")
    first = True
    while True:
        cap = cv2.VideoCapture(str(path))
        got = False
        try:
            while True:
                ok, img = cap.read()
                if not ok:
                    break
                got = True
                yield cv2.cvtColor(cv2.resize(img, (width, height)), cv2.COLOR_BGR2RGB)
        finally:
            cap.release()
        if not got:
            raise SourceError(f"{path}: no frames could be decoded" + ("" if first else " on a second pass"))
        first = False


def _time(ts: Any, t_ns: int) -> Any:
    return ts.types["builtin_interfaces/msg/Time"](sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)


def _header(ts: Any, t_ns: int, frame_id: str) -> Any:
    return ts.types["std_msgs/msg/Header"](stamp=_time(ts, t_ns), frame_id=frame_id)


def build_message(ts: Any, kind: str, t_ns: int, value: Any) -> Any:
    """A rosbags message for one scenario event (kinds of ``scenario.TOPIC_TYPES``)."""
    types = ts.types
    if kind == "battery":
        cls = types["sensor_msgs/msg/BatteryState"]
        return cls(header=_header(ts, t_ns, "battery"), voltage=float(value["voltage"]), temperature=float("nan"),
                   current=float("nan"), charge=float("nan"), capacity=float("nan"), design_capacity=float("nan"),
                   percentage=float(value["percentage"]), power_supply_status=cls.POWER_SUPPLY_STATUS_DISCHARGING,
                   power_supply_health=cls.POWER_SUPPLY_HEALTH_GOOD,
                   power_supply_technology=cls.POWER_SUPPLY_TECHNOLOGY_LION, present=True,
                   cell_voltage=np.zeros(0, np.float32), cell_temperature=np.zeros(0, np.float32),
                   location="", serial_number="")
    if kind.startswith("thermal_"):
        return types["sensor_msgs/msg/Temperature"](header=_header(ts, t_ns, kind), temperature=float(value),
                                                    variance=0.0)
    if kind in ("load_cpu", "load_gpu", "target_latency_ms", "min_accuracy"):
        return types["std_msgs/msg/Float32"](data=float(value))
    raise ValueError(f"unknown event kind {kind!r}")


def image_message(ts: Any, t_ns: int, frame: np.ndarray, camera: scn.Camera) -> Any:
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    height, width = frame.shape[:2]
    return ts.types["sensor_msgs/msg/Image"](header=_header(ts, t_ns, camera.frame_id), height=height, width=width,
                                             encoding=camera.encoding, is_bigendian=0,
                                             step=width * scn.channels(camera.encoding),
                                             data=frame.reshape(-1))


def write_bag(sc: scn.Scenario, out: str | Path, storage: str = "mcap", *, source: str | None = None,
              overwrite: bool = False, version: int = DEFAULT_VERSION) -> dict[str, int]:
    """Write the scenario as one bag; returns messages per topic (equal to ``scenario.expected_counts``)."""
    counts: dict[str, int] = {}
    with BagWriter(out, storage, overwrite=overwrite, version=version) as w:
        ts = w.typestore
        frames_t = scn.frame_times_ns(sc)
        frame_iter: Iterator[np.ndarray] | None = None
        cam = sc.camera
        src = source or (cam.source if cam else None)
        if cam is not None and src:
            frame_iter = source_frames(src, cam.width, cam.height)
        merged: list[tuple[int, int, str, Any]] = [(t, 0, "image", i) for i, t in enumerate(frames_t)]
        merged += [(e.t_ns, 1, e.kind, e.value) for e in scn.events(sc)]
        merged.sort(key=lambda x: (x[0], x[1], x[2]))
        for t_ns, _, kind, value in merged:
            topic = sc.topic(kind)
            if kind == "image":
                assert cam is not None
                rgb = next(frame_iter) if frame_iter is not None else None
                frame = (scn.convert_rgb(rgb, cam.encoding) if rgb is not None
                         else scn.synthetic_frame(value, cam.width, cam.height, cam.encoding))
                msg = image_message(ts, t_ns, frame, cam)
            else:
                msg = build_message(ts, kind, t_ns, value)
            q = pb.replay_qos(scn.TOPIC_TYPES[kind])  # what replay offers: ros2 bag play offers the same
            w.write(topic, scn.TOPIC_TYPES[kind], t_ns, msg, OfferedQos(q.reliable, q.transient_local, q.depth))
            counts[topic] = counts.get(topic, 0) + 1
    return counts


def output_paths(out: str | Path, storage: str) -> dict[str, Path]:
    """Where each storage goes: ``out`` itself for one storage, ``out_sqlite3`` / ``out_mcap`` for both."""
    out = Path(out)
    if storage == "both":
        return {s: out.with_name(f"{out.name}_{s}") for s in ("sqlite3", "mcap")}
    return {storage: out}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dynofa-make-scenario-bag", description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", help="scenario YAML (see docs/replay.md)")
    p.add_argument("-o", "--out", required=True, help="bag directory to write")
    p.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3", "both"])
    p.add_argument("--source", default=None, help="video file or image folder for the camera frames")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bag")
    p.add_argument("--bag-version", type=int, default=DEFAULT_VERSION, choices=VERSIONS,
                   help="rosbag2 metadata version: 8 (default; Humble, Jazzy and later read it) or 9 (Jazzy and later)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sc = scn.load_scenario(args.scenario)
        for storage, path in output_paths(args.out, args.storage).items():
            counts = write_bag(sc, path, storage, source=args.source, overwrite=args.overwrite,
                               version=args.bag_version)
            total = sum(counts.values())
            print(f"make_scenario_bag: wrote {path} ({storage}, {total} messages, {sc.duration_s:g} s: "
                  + ", ".join(f"{t}={n}" for t, n in sorted(counts.items())) + ")")
    except (scn.ScenarioError, BagError, SourceError) as exc:
        print(f"make_scenario_bag: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
