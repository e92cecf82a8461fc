"""How problems are reported, shared by every layer (no rclpy): the configuration error, one per-key throttle
for repeated warnings, and the one-line explanation of a QoS mismatch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class ConfigError(ValueError):
    """A parameter value, params file, family file, weights file or device that cannot work.

    The message names the parameter or file and what is allowed. ``nodes/common.run`` turns it into one line
    on stderr and the node's configuration exit status; it is never a traceback.
    """


class KeyedThrottle:
    """Log a given kind of problem at once, then at most once per period with how many were suppressed.

    rclpy's ``throttle_duration_sec`` throttles per call site, so one helper serving every topic would let
    a flood on one topic hide another; this keeps one clock per key.
    """

    def __init__(self, period_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.period_s = period_s
        self._clock = clock
        self._last: dict[Any, float] = {}
        self._suppressed: dict[Any, int] = {}
        self._lock = threading.Lock()

    def check(self, key: Any) -> int | None:
        """None: stay quiet. Otherwise log now; the number is how many were suppressed since last time."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)


def incompatible_qos_message(topic: str, policy: str, requested: str) -> str:
    """One line: which topic, which policy conflicts, and what the publisher should change."""
    fixes = {
        "RELIABILITY": "publish with reliability RELIABLE",
        "DURABILITY": "publish with durability TRANSIENT_LOCAL",
        "DEADLINE": "publish with a deadline no longer than the subscription's (default: none)",
        "LIVELINESS": "publish with AUTOMATIC liveliness and a lease no longer than the subscription's",
    }
    fix = fixes.get(policy.upper(), f"make the publisher's {policy} compatible")
    return (f"incompatible QoS on '{topic}': a publisher offers a {policy} policy this subscription "
            f"({requested}) cannot accept, so none of its messages arrive; {fix}")
