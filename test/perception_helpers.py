"""Shared by the perception graph tests: a tiny family, frame messages, paced publishing, result parsing."""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIX_LEVELS = REPO / "config" / "families" / "xavier_nx_six_levels.json"

# Module-scoped nodes need a domain for the whole module: pick from a range the per-test fixture
# (conftest.domain_id, starting at pid*7 % 100) reaches only after dozens of tests.
_module_domains = itertools.count((os.getpid() * 7 + 53) % 100)


def module_domain() -> int:
    return 1 + next(_module_domains) % 100


def tiny_family(path: Path, levels: tuple[int, ...] = (0, 5)) -> Path:
    """A family with a few levels of the Xavier NX six-level family (0 = smallest, 5 = largest)."""
    raw = json.loads(SIX_LEVELS.read_text(encoding="utf-8"))
    raw["name"] = "test_tiny"
    raw["levels"] = [raw["levels"][i] for i in levels]
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def node_args(family: Path, *extra: str) -> list[str]:
    return ["-p", f"family_file:={family}", "-p", "threads:=1", "-p", "diagnostics_period_s:=0.5", *extra]


def frame_rgb(seed: int = 0, h: int = 120, w: int = 160) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def image_msg(probe: Any, rgb: np.ndarray | None, frame_id: str, *, encoding: str = "bgr8", **override: Any) -> Any:
    """A sensor_msgs/Image stamped now; ``override`` sets raw fields (height, step, data, ...) for bad input."""
    from sensor_msgs.msg import Image

    from dynofa_ros.perception.image_codec import encode_image

    fields = encode_image(rgb, encoding) if rgb is not None else {"encoding": encoding}
    fields.update(override)
    msg = Image()
    for key, value in fields.items():
        setattr(msg, key, value)
    msg.header.frame_id = frame_id
    msg.header.stamp = probe.node.get_clock().now().to_msg()
    return msg


def key(msg: Any) -> tuple[int, int, str]:
    """(sec, nanosec, frame_id) of an Image header."""
    return (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)


def result(msg: Any) -> dict[str, Any]:
    return json.loads(msg.data)


def result_key(res: dict[str, Any]) -> tuple[int, int, str]:
    return (res["stamp"]["sec"], res["stamp"]["nanosec"], res["frame_id"])


def publish_paced(probe: Any, pub: Any, rgb: np.ndarray, count: int, hz: float, prefix: str) -> list[tuple]:
    """Publish ``count`` frames at ``hz`` on a monotonic schedule (a rate loop, not a wait); their keys."""
    sent = []
    period = 1.0 / hz
    start = time.monotonic()
    for i in range(count):
        msg = image_msg(probe, rgb, f"{prefix}{i}")
        pub.publish(msg)
        sent.append(key(msg))
        delay = start + (i + 1) * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return sent


def ros_minus_monotonic(probe: Any) -> float:
    """Offset that turns a Collector's monotonic receive time into the ROS clock (seconds)."""
    return probe.node.get_clock().now().nanoseconds / 1e9 - time.monotonic()
