"""Per-level latency memory and tail quantiles: what the joint policy plans deadlines with.

Why a tail and not a mean: a deadline-miss rate is the share of frames above the target, i.e. a tail.
On a shared 2-core machine one frame's latency varies by ±25 % (p90/p50 ≈ 1.2–1.5), more than the gap
between adjacent levels, so a controller planning on a smoothed mean misses 10–15 % of frames by
construction and flaps on single slow frames. Planning on the ``1 − miss_budget`` quantile of what each
level measured recently meets the budget when the near future resembles the recent past, and a
single slow frame in a window of a hundred does not move a 98th percentile.

Samples are kept as *ratios* to the profile, ``measured / ((L_prof + overhead) · clock factor)``, per level:

* a level with its own recent samples is predicted from them (no sample measured at one level is ever
  evidence about another level's own ratios);
* a level without them is predicted from the ratios of the level that ran last (the *reference*), scaled
  by the profile: ``tail_j = Q(ratios_ref) · (L_j + overhead) · clock factor``. ``overhead`` is the
  per-frame time that does not grow with the network (decoding, pre- and post-processing), so a small
  level's ratio is not mistaken for a big one's;
* the first sample after a switch is kept apart (a switch costs one slower frame: caches, arenas), so it
  counts as a miss when it is one but does not inflate the level's estimate.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

#: Values needed before a log-normal fit backs the empirical tail.
FIT_MIN = 10


@dataclass(frozen=True)
class RatioSample:
    stamp: float          # s, when the sample arrived
    latency_ms: float
    clock_factor: float   # the latency model's factor for the clocks it ran under (1 at maximum clocks)


class TailEstimator:
    """Recent latency ratios per level, windowed in time; quantiles and transfers between levels."""

    def __init__(self, profile_ms: Sequence[float], window_s: float, overhead_ms: float = 0.0,
                 max_samples: int = 1024):
        self.profile_ms = list(profile_ms)
        self.window_s = window_s
        self.overhead_ms = overhead_ms
        self.samples: list[deque[RatioSample]] = [deque(maxlen=max_samples) for _ in self.profile_ms]
        self.last_level: int | None = None   # level of the newest sample
        self.last_stamp: float | None = None
        self.version = 0  # changes whenever a level's samples change: estimates computed before are stale

    def set_profile(self, profile_ms: Sequence[float]) -> None:
        """Read every sample against new per-level costs (they are stored in ms): estimates made before are stale."""
        self.profile_ms = list(profile_ms)
        self.version += 1

    def base_ms(self, level: int) -> float:
        return self.profile_ms[level] + self.overhead_ms

    def add(self, level: int, latency_ms: float, stamp: float, clock_factor: float = 1.0) -> bool:
        """Store one sample; False when it is the first after a switch (kept out of the estimates)."""
        first_after_switch = self.last_level is not None and level != self.last_level
        self.last_level, self.last_stamp = level, stamp
        if first_after_switch:
            return False
        self.samples[level].append(RatioSample(stamp, latency_ms, clock_factor))
        self.version += 1
        return True

    def forget_before(self, now: float) -> None:
        self.forget_older_than(now - self.window_s)

    def forget_older_than(self, stamp: float) -> None:
        """Drop every level's samples from before ``stamp`` (conditions changed then: they describe the past)."""
        for dq in self.samples:
            while dq and dq[0].stamp < stamp:
                dq.popleft()
                self.version += 1

    def forget_between(self, start: float, end: float) -> None:
        """Drop every level's samples that arrived in [start, end): a slowdown that has ended, whose frames would
        otherwise keep the levels that held before it looking slow for a whole window."""
        for i, dq in enumerate(self.samples):
            kept = [s for s in dq if not start <= s.stamp < end]
            if len(kept) != len(dq):
                self.samples[i] = deque(kept, maxlen=dq.maxlen)
                self.version += 1

    def ratios(self, level: int, since: float = -math.inf, until: float = math.inf) -> list[float]:
        """Windowed ratios of one level that arrived in [since, until) (computed now, so a changed
        ``overhead_ms`` applies to old samples)."""
        base = self.base_ms(level)
        return [s.latency_ms / (base * s.clock_factor) for s in self.samples[level] if since <= s.stamp < until]

    def newest_late_ratios(self, level: int, target_ms: float, since: float = -math.inf) -> list[float]:
        """Ratios of ``level``'s newest samples that arrived at or after ``since`` and all took longer than
        ``target_ms`` (the run of late frames that ends the window; newest first)."""
        base = self.base_ms(level)
        out: list[float] = []
        for s in reversed(self.samples[level]):
            if s.stamp < since or s.latency_ms <= target_ms:
                break
            out.append(s.latency_ms / (base * s.clock_factor))
        return out

    def all_ratios(self, since: float = -math.inf, until: float = math.inf) -> list[float]:
        return [r for lvl in range(len(self.samples)) for r in self.ratios(lvl, since, until)]

    def latencies(self, level: int, since: float = -math.inf, until: float = math.inf) -> list[float]:
        return [s.latency_ms for s in self.samples[level] if since <= s.stamp < until]

    def count(self, level: int) -> int:
        return len(self.samples[level])

    @staticmethod
    def quantile(values: Sequence[float], q: float) -> float | None:
        """The q-quantile (linear interpolation, numpy's default); None for no values."""
        if not values:
            return None
        return float(np.quantile(np.asarray(values, dtype=float), q))

    def tail_ratio(self, level: int, q: float, prior_log_spread: float = 0.0) -> float | None:
        return self.tail(self.ratios(level), q, prior_log_spread)

    @classmethod
    def tail(cls, values: Sequence[float], q: float, prior_log_spread: float = 0.0) -> float | None:
        """The q-quantile, never below a log-normal fit's once there are ``FIT_MIN`` values.

        An empirical 98th percentile of 150 values moves by ±7 % from one window to the next (it rests
        on the 3 largest); a log-normal fitted to the mean and spread of the logs uses every value and
        moves far less. Real latencies have heavier tails than a log-normal (bursts), which the empirical
        quantile keeps: the larger of the two is planned with.
        """
        emp = cls.quantile(values, q)
        if emp is None or not 0.5 < q < 1.0:
            return emp
        if len(values) < FIT_MIN:  # too few to see the spread: the median with the spread assumed a priori
            return max(emp, float(np.median(values)) * math.exp(NormalDist().inv_cdf(q) * prior_log_spread))
        logs = np.log(np.asarray(values, dtype=float))
        fit = float(np.exp(logs.mean() + NormalDist().inv_cdf(q) * logs.std(ddof=1)))
        return max(emp, fit)
