"""Every level's latency measured on this machine at start-up: the relative level costs the manager plans with.

Why: the family file's per-level latencies were profiled on one machine (``generic_cpu``: one CPU; the Jetson
families: one board at one clock), and the ratios between levels differ by machine. On an AMD EPYC VM the
levels measured 1.24-1.34x the file, level 3 more than level 6, so a latency tail measured at one level and
carried to another through the file's ratios mispredicted it by 6-12 %, and the manager's climb after a cold
start stopped one or two levels short: four switches where one does (docs/manager.md, "A family profiled on
this machine"). Timing every level for a few seconds when the node starts, on the path a frame takes
(preprocess, network, postprocess: the ``model_ms`` the manager receives), gives it this machine's ratios on
any machine, without a profiling step before deployment.

The runs are interleaved by rounds (every level a few frames, then the next round) so that a burst of load
while the robot starts up (other nodes importing, a camera driver settling, the previous run's processes
ending) falls on every level alike and not on one; the first frame after each switch is discarded (it is
~1.14x slower: caches, arenas). Each level keeps the *lower quartile* of its frames, not the median: load
only ever adds time, so the lower part of a level's frames is the machine's own cost even when a burst hit
up to three quarters of them. With the median, 5 rounds of 4 frames and the bench's graph starting beside
the previous run's processes, 2 of 5 start-ups on an Intel Xeon VM read one or two levels 1.3-1.7x too slow
against their neighbours (level 3 at 2.93x the file where the others read 2.1-2.2x), and the manager planned
with that distorted shape; rounds of 3 frames spread a burst over more rounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .pipeline import PipelineModel

#: The synthetic frame timed: the size of a VGA camera, so that preprocessing (crop and resize to the level's
#: resolution) costs what a camera frame costs. Its pixels are noise, not zeros: a constant image could take
#: a faster path through a backend's kernels.
FRAME_SHAPE = (480, 640, 3)
#: Frames per level per round after the discarded first one, and the fewest rounds: at least three rounds
#: spread a start-up burst over the levels.
PER_ROUND = 3
MIN_ROUNDS = 5
#: The percentile of each level's frames kept (see the module docstring: load only adds time).
KEPT_PERCENTILE = 25.0


def measure(model: PipelineModel, runs: int, frame_shape: Sequence[int] = FRAME_SHAPE,
            seed: int = 0) -> list[float]:
    """Lower quartile of ``total_ms`` over about ``runs`` timed frames per level (at least ``MIN_ROUNDS *
    PER_ROUND``); the model is left at the level it was at."""
    frame = np.random.default_rng(seed).integers(0, 256, size=tuple(frame_shape), dtype=np.uint8)
    rounds = max(MIN_ROUNDS, math.ceil(runs / PER_ROUND))
    start = model.level
    times: list[list[float]] = [[] for _ in range(model.num_levels)]
    try:
        for _ in range(rounds):
            for level in range(model.num_levels):
                model.switch(level)
                model.infer(frame)  # the first frame after a switch: not timed
                times[level].extend(float(model.infer(frame).total_ms) for _ in range(PER_ROUND))
    finally:
        model.switch(start)
    return [float(np.percentile(t, KEPT_PERCENTILE)) for t in times]


def describe(values: Sequence[float], reference: Sequence[float | None]) -> str:
    """One log line: each level's measured ms and its ratio to the family file's."""
    parts = []
    for i, (v, ref) in enumerate(zip(values, reference, strict=True)):
        parts.append(f"L{i} {v:.1f} ms" + (f" ({v / ref:.2f}x)" if ref else ""))
    return ", ".join(parts)
