"""Newest-frame slots, one per camera stream, served fairly to one inference worker.

Why one slot and not a queue: a perception node must answer about the present. A queue of frames
behind a slower model makes every result older than the last (ros_deep_learning #134); a slot that
keeps only the newest frame bounds a result's age to about two inference times, and every frame it
replaces is counted as dropped.

Why "waiting longest first": with several cameras on one model, serving the newest frame overall
would starve a slow camera behind a fast one. Each stream remembers since when it has had an
unserved frame (kept when a newer frame replaces an older one), and the worker serves the stream
that has waited longest; each stream is therefore served at least once per round of all streams.

One ``Condition`` guards every slot: producers (subscription callbacks) never block on inference,
and the consumer waits with a timeout and a stop ``Event`` (STYLE.md #16). Pure: no rclpy.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Frame:
    """One received frame waiting for, or taken by, the worker."""

    stream: int
    payload: Any           # the message itself; decoded by the worker, not the callback
    received: float        # monotonic seconds when the callback stored it
    received_ns: int       # the node's clock when stored (same clock as the frame stamps), for age


@dataclass
class StreamStats:
    """Counters of one stream (a snapshot; see :meth:`FrameSlots.stats`)."""

    name: str
    received: int = 0
    dropped: int = 0       # replaced in the slot before the worker took them, or refused while paused
    processed: int = 0
    rejected: int = 0      # malformed frames the worker could not decode
    fps: float = 0.0       # processed frames per second over the recent window
    age_ms_p50: float | None = None
    age_ms_p90: float | None = None


class _Slot:
    def __init__(self, name: str, window: int):
        self.stats = StreamStats(name)
        self.frame: Frame | None = None
        self.waiting_since: float | None = None
        self.done_times: deque[float] = deque(maxlen=window)
        self.ages_ms: deque[float] = deque(maxlen=window)


class FrameSlots:
    """Per-stream one-slot holders with fair selection and drop counting."""

    def __init__(self, names: Sequence[str], *, window: int = 300, clock: Callable[[], float] = time.monotonic):
        if not names:
            raise ValueError("at least one stream is needed")
        self._slots = [_Slot(n, window) for n in names]
        self._cond = threading.Condition()
        self._clock = clock

    @property
    def names(self) -> list[str]:
        return [s.stats.name for s in self._slots]

    def put(self, stream: int, payload: Any, received_ns: int = 0) -> bool:
        """Store the newest frame of ``stream``; True when it replaced one the worker never took (a drop)."""
        now = self._clock()
        with self._cond:
            slot = self._slots[stream]
            slot.stats.received += 1
            dropped = slot.frame is not None
            if dropped:
                slot.stats.dropped += 1
            else:
                slot.waiting_since = now
            slot.frame = Frame(stream, payload, now, received_ns)
            self._cond.notify()
            return dropped

    def take(self, stop: threading.Event, timeout: float = 0.1) -> Frame | None:
        """The newest frame of the stream that has waited longest; None on timeout or when ``stop`` is set."""
        deadline = self._clock() + timeout
        with self._cond:
            while not stop.is_set():
                waiting = [s for s in self._slots if s.frame is not None]
                if waiting:
                    slot = min(waiting, key=lambda s: s.waiting_since)  # ties: lower stream index first
                    frame, slot.frame, slot.waiting_since = slot.frame, None, None
                    return frame
                left = deadline - self._clock()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return None

    def clear(self) -> int:
        """Forget every waiting frame (e.g. when results stop); they count as dropped. Returns how many."""
        with self._cond:
            n = 0
            for s in self._slots:
                if s.frame is not None:
                    s.frame, s.waiting_since = None, None
                    s.stats.dropped += 1
                    n += 1
            return n

    def mark_done(self, stream: int, age_ms: float | None) -> None:
        """A frame of ``stream`` produced a published result ``age_ms`` after its stamp."""
        with self._cond:
            slot = self._slots[stream]
            slot.stats.processed += 1
            slot.done_times.append(self._clock())
            if age_ms is not None:
                slot.ages_ms.append(age_ms)

    def mark_rejected(self, stream: int) -> None:
        with self._cond:
            self._slots[stream].stats.rejected += 1

    def stats(self) -> list[StreamStats]:
        """A consistent snapshot of every stream's counters, fps and frame-age percentiles."""
        with self._cond:
            out = []
            for s in self._slots:
                st = StreamStats(**vars(s.stats))
                st.fps = rate(s.done_times, self._clock())
                if s.ages_ms:
                    p50, p90 = np.percentile(np.fromiter(s.ages_ms, float), [50, 90])
                    st.age_ms_p50, st.age_ms_p90 = float(p50), float(p90)
                out.append(st)
            return out


def rate(times: Sequence[float], now: float, horizon_s: float = 5.0) -> float:
    """Events per second over the last ``horizon_s`` seconds of ``times`` (monotonic, ascending)."""
    recent = [t for t in times if now - t <= horizon_s]
    if len(recent) < 2:
        return 0.0
    span = max(now - recent[0], recent[-1] - recent[0])
    return (len(recent) - 1) / span if span > 0 else 0.0
