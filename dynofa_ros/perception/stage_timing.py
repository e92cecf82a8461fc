"""Per-stage latency of the perception path, as p50/p90 over a sliding window.

Why stages and not one number: "the node is slow" is only actionable when it says where the time
goes (docs/perception.md). The stages of one frame add up exactly to its age at publication:

    transport   frame stamp → the subscription callback stored it (camera, DDS, executor)
    wait        stored → the worker took it (time in the newest-frame slot)
    conversion  message → RGB array (image_codec)
    preprocess  crop, resize, normalise (model)
    inference   the active sub-network (model)
    postprocess softmax + top-k (model)
    publish     building and publishing the result messages

``age`` (publish done − stamp) is kept beside them; its percentiles are not the sum of the stages'
percentiles, but for every single frame ``age == sum(stages)``. Pure: numpy only.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping

import numpy as np

STAGES: tuple[str, ...] = ("transport", "wait", "conversion", "preprocess", "inference", "postprocess", "publish")
TOTAL = "age"


class StageTiming:
    """A window of per-frame stage durations (ms); thread-safe, cheap to add to."""

    def __init__(self, window: int = 300):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self._rows: deque[tuple[float, ...]] = deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, stages_ms: Mapping[str, float]) -> None:
        """One frame's durations; missing stages count as 0, ``age`` is their sum."""
        row = tuple(float(stages_ms.get(s, 0.0)) for s in STAGES)
        with self._lock:
            self._rows.append(row)

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def percentiles(self, qs: tuple[float, ...] = (50, 90)) -> dict[str, tuple[float, ...]]:
        """{stage: (p50, p90)} in ms over the window, ``age`` included; empty when nothing was added."""
        with self._lock:
            if not self._rows:
                return {}
            data = np.array(self._rows, dtype=np.float64)
        data = np.concatenate([data, data.sum(axis=1, keepdims=True)], axis=1)
        table = np.percentile(data, qs, axis=0)  # shape (len(qs), stages + 1)
        return {name: tuple(float(v) for v in table[:, i]) for i, name in enumerate((*STAGES, TOTAL))}

    def table(self) -> str:
        """A plain-text table (stage, p50, p90 in ms) for logs and benchmarks."""
        rows = self.percentiles()
        lines = [f"{'stage':<12} {'p50 ms':>9} {'p90 ms':>9}"]
        lines += [f"{name:<12} {p50:9.2f} {p90:9.2f}" for name, (p50, p90) in rows.items()]
        return "\n".join(lines)
