"""The perception node's own drop: when frames keep missing, switch to the manager's fallback at once.

Why: a latency burst is proven by late frames, and the manager's level command comes back over DDS after
the proving frame. On the 2-core bench that round trip took 4.6–36.8 ms (median 11–14 ms), while the
worker takes the next frame the moment it has published the last one: in 13 of 19 drops of one stop's
real runs, and 8 of 17 of the next, the frame after the proof still ran at the late level, one more late
frame per burst. No manager can beat that round trip, so the manager arms the node in advance with the
level it would drop to and its target (``dynofa/fallback``, recomputed every decision), and the node switches
itself after ``frames`` late frames in a row at one level, before it takes the next frame.

Three late frames in a row are proof on their own: at a 2 % miss budget a level within budget produces
them with probability 0.02³ ≈ 1e-5 per frame. The fallback stays armed: the manager publishes only when it
changes (a new level or target re-plans it), and at the fallback level itself nothing lower is armed, so
one burst moves the node once.
"""

from __future__ import annotations

#: Late frames in a row at one level that trigger the drop (0 turns the local drop off).
DEFAULT_FRAMES = 3


class LocalDrop:
    """Counts late frames in a row at the running level; says when to switch to the armed fallback."""

    def __init__(self, frames: int = DEFAULT_FRAMES):
        self.frames = frames
        self.target_ms: float | None = None
        self.fallback: int | None = None
        self._level: int | None = None
        self._late = 0

    def arm(self, fallback: int | None, target_ms: float | None) -> None:
        """The level the manager would drop to now and the target (ms) a frame is late against; None disarms.

        The target comes with the fallback, from the manager: it is the one in force there (from the topic or
        a parameter), and a frame is judged late here exactly as there.
        """
        ok = fallback is not None and target_ms is not None and target_ms > 0
        self.fallback, self.target_ms = (fallback, target_ms) if ok else (None, None)

    def observe(self, level: int, latency_ms: float) -> int | None:
        """One finished frame; the level to switch to now, or None."""
        if level != self._level:
            self._level, self._late = level, 0
        if self.target_ms is None or latency_ms <= self.target_ms:
            self._late = 0
            return None
        self._late += 1
        fallback = self.fallback
        if self.frames <= 0 or self._late < self.frames or fallback is None or fallback >= level:
            return None
        self._late = 0
        return fallback
