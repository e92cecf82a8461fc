"""The ``dynofa/inference_stats`` message: one latency sample *with the level that produced it*.

Both ends (perception publishes, the manager subscribes) import this one module, so the field order and
the checks cannot drift apart; the topic name and its QoS role (``STATS_QOS``) are in ``topics.py``.
The message is a standard ``std_msgs/Float64MultiArray`` (no interface package to build), with the field
names written into ``layout.dim[0].label`` so that ``ros2 topic echo`` shows what each number is::

    data = [level, latency_ms, frame_stamp_s, stream]

It also checks ``dynofa/level_profile_ms`` (one latency per level, perception's start-up timing), whose values
are latencies under the same bound, and carries ``dynofa/overrun_fallback``, the manager's standing instruction
to perception (``data = [from_level, limit_ms, to_level]``, empty: none; ``control.policy.OverrunFallback``).

Why one message rather than ``dynofa/inference_latency_ms`` + ``dynofa/active_level``: two topics have
no ordering between them, so a manager that pairs each latency with the last level it heard attributes
the first samples after a switch to the wrong level (a switch 1 → 6 read as a 2× slowdown of level 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from std_msgs.msg import Float64MultiArray, MultiArrayDimension

FIELDS = ("level", "latency_ms", "frame_stamp_s", "stream")
MAX_LATENCY_MS = 60000.0


@dataclass(frozen=True)
class InferenceStats:
    level: int
    latency_ms: float
    frame_stamp_s: float
    stream: int


def _check_level(name: str, value: float, num_levels: int) -> None:
    if not math.isfinite(value) or value != int(value) or not 0 <= value < num_levels:
        raise ValueError(f"{name} {value!r} is not a level of the family (0..{num_levels - 1})")


def _is_latency(ms: float) -> bool:
    return math.isfinite(ms) and 0.0 < ms <= MAX_LATENCY_MS


def to_msg(level: int, latency_ms: float, frame_stamp_s: float, stream: int) -> Float64MultiArray:
    msg = Float64MultiArray(data=[float(level), float(latency_ms), float(frame_stamp_s), float(stream)])
    msg.layout.dim = [MultiArrayDimension(label=",".join(FIELDS), size=len(FIELDS), stride=len(FIELDS))]
    return msg


def from_msg(msg: Float64MultiArray, num_levels: int) -> InferenceStats:
    """The sample in ``msg``; ValueError saying why when it cannot be trusted (the caller drops it)."""
    data = list(msg.data)
    if len(data) < 2:
        raise ValueError(f"expected {len(FIELDS)} values [{', '.join(FIELDS)}], got {len(data)}")
    level, latency = data[0], data[1]
    _check_level("level", level, num_levels)
    if not _is_latency(latency):
        raise ValueError(f"latency {latency!r} ms is not in (0, {MAX_LATENCY_MS:g}] ms")
    stamp = data[2] if len(data) > 2 and math.isfinite(data[2]) else 0.0
    stream = int(data[3]) if len(data) > 3 and math.isfinite(data[3]) and data[3] >= 0 else 0
    return InferenceStats(int(level), float(latency), float(stamp), stream)


def level_profile_from_msg(msg: Float64MultiArray, num_levels: int) -> list[float]:
    """``dynofa/level_profile_ms`` (one latency per level, perception's start-up timing); ValueError saying why it
    cannot be used (the caller drops it). Each value is bounded as a sample's latency is above."""
    out = [float(v) for v in msg.data]
    if len(out) != num_levels:
        raise ValueError(f"{len(out)} values for a family of {num_levels} levels")
    bad = [i for i, v in enumerate(out) if not _is_latency(v)]
    if bad:
        raise ValueError(f"level {bad[0]}: {out[bad[0]]!r} ms is not in (0, {MAX_LATENCY_MS:g}] ms")
    return out


OVERRUN_FIELDS = ("from_level", "limit_ms", "to_level")


def overrun_to_msg(fallback: tuple[int, float, int] | None) -> Float64MultiArray:
    """``dynofa/overrun_fallback``: ``(from_level, limit_ms, to_level)``, or None for "no instruction" (empty)."""
    msg = Float64MultiArray(data=[] if fallback is None else [float(v) for v in fallback])
    msg.layout.dim = [MultiArrayDimension(label=",".join(OVERRUN_FIELDS), size=len(msg.data), stride=len(msg.data))]
    return msg


def overrun_from_msg(msg: Float64MultiArray, num_levels: int) -> tuple[int, float, int] | None:
    """The instruction in ``msg`` (None: there is none); ValueError saying why it cannot be followed. It must
    move down: ``to_level`` below ``from_level``, both levels of the family, the limit a latency as above."""
    data = [float(v) for v in msg.data]
    if not data:
        return None
    if len(data) != len(OVERRUN_FIELDS):
        raise ValueError(f"expected {len(OVERRUN_FIELDS)} values [{', '.join(OVERRUN_FIELDS)}] or none, got "
                         f"{len(data)}")
    src, limit, dst = data
    _check_level("from_level", src, num_levels)
    _check_level("to_level", dst, num_levels)
    if not _is_latency(limit):
        raise ValueError(f"limit {limit!r} ms is not in (0, {MAX_LATENCY_MS:g}] ms")
    if dst >= src:
        raise ValueError(f"to_level {int(dst)} is not below from_level {int(src)} (a fallback only moves down)")
    return int(src), float(limit), int(dst)
