"""Step series: time-ordered ``(t, value)`` points, each value holding until the next point.

Why one module: schedules (targets, busy processes), recorded runs and level histories are all read the same
way, in the runtime manager as in the tools, and the copies had drifted in what they return before the first
point. Top level, so every layer may import it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any, TypeVar

V = TypeVar("V")


def value_at(points: Sequence[tuple[float, V]], t: float, before: Any = None) -> Any:
    """The value of the last point at or before ``t``; ``before`` when ``t`` precedes every point."""
    i = bisect.bisect_right(points, t, key=lambda p: p[0])
    return points[i - 1][1] if i else before


def step_value(points: Sequence[tuple[float, V]], t: float) -> V:
    """A schedule's value at ``t``: the last point at or before ``t``, the first point's value before it."""
    return value_at(points, t, points[0][1])
