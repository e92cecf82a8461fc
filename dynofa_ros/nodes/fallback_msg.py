"""The ``dynofa/fallback`` message: the level the manager would drop to now, and the target it judges by.

The manager publishes it with every decision that changes it (latched); perception switches to that level
on its own after ``local_drop_frames`` late frames in a row (``dynofa_ros/perception/local_drop.py`` says
why). Both ends import this module, so the field order and the checks cannot drift apart. A standard
``std_msgs/Float64MultiArray`` like ``dynofa/inference_stats``, field names in ``layout.dim[0].label``::

    data = [level, target_ms]        # [] : disarmed (no target, or no level below the running one)
"""

from __future__ import annotations

import math

from std_msgs.msg import Float64MultiArray, MultiArrayDimension

FIELDS = ("level", "target_ms")


def to_msg(level: int | None, target_ms: float | None) -> Float64MultiArray:
    data = [] if level is None or target_ms is None else [float(level), float(target_ms)]
    msg = Float64MultiArray(data=data)
    msg.layout.dim = [MultiArrayDimension(label=",".join(FIELDS), size=len(data), stride=len(data))]
    return msg


def from_msg(msg: Float64MultiArray, num_levels: int) -> tuple[int | None, float | None]:
    """(level, target_ms), (None, None) when disarmed; ValueError saying why when it cannot be trusted."""
    data = list(msg.data)
    if not data:
        return None, None
    if len(data) < len(FIELDS):
        raise ValueError(f"expected [] or {len(FIELDS)} values [{', '.join(FIELDS)}], got {len(data)}")
    level, target = data[0], data[1]
    if not math.isfinite(level) or level != int(level) or not 0 <= level < num_levels:
        raise ValueError(f"level {level!r} is not a level of the family (0..{num_levels - 1})")
    if not math.isfinite(target) or target <= 0:
        raise ValueError(f"target {target!r} ms is not a positive number")
    return int(level), float(target)
