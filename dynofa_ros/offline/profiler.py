"""Measure every level of a family on this device: warm-up, then median and p90, and memory.

Latency tables must come from the machine that runs them (once-for-all #16, #37, #46), so this is
what ``dynofa-profile`` runs on a robot before the manager trusts a family's latencies. Levels are
measured round-robin (an untimed and a timed frame each per round), so a load change on a shared
machine hits every level alike instead of skewing whichever level was being measured at that moment.

Besides the median, each level's *spread* is recorded (:func:`latency_spread`): the runtime manager plans
on a latency tail (the ``1 - miss_budget`` quantile, 98th percentile by default), so how far one frame's
latency strays from the median decides both the margin a level needs and which levels it can tell apart.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import psutil

from ..inference.model import DynamicOFA

#: Standard normal quantiles of the 90th and 98th percentiles (1.2816, 2.0537).
Z90 = NormalDist().inv_cdf(0.90)
Z98 = NormalDist().inv_cdf(0.98)
#: Runs below which an empirical 98th percentile is not used: it would rest on the single largest sample.
EMPIRICAL_P98_MIN_RUNS = 50


@dataclass(frozen=True)
class LatencySpread:
    """How much one frame's latency of a level varies: quantiles over the median, both >= 1.

    Ratios rather than milliseconds because load on a shared machine scales latency multiplicatively,
    and a ratio compares directly with the ratio between adjacent levels (``search.select_levels``).
    """

    p90_over_p50: float
    p98_over_p50: float
    runs: int

    def to_json(self) -> dict[str, float]:
        """The family file's ``latency_spread`` entry (``family.SPREAD_KEYS``)."""
        return {"p90_over_p50": round(self.p90_over_p50, 3), "p98_over_p50": round(self.p98_over_p50, 3),
                "runs": int(self.runs)}


def spread_from_quantiles(p50: float, p90: float, runs: int, p98: float | None = None) -> LatencySpread:
    """The spread from a level's median and 90th percentile (and 98th, where enough runs back it).

    Robust by construction: the 90th percentile of 10-30 runs rests on the top 1-3 samples, so one burst
    of load does not move it, while an empirical 98th percentile of 30 runs is the largest sample. So
    ``p98_over_p50`` is extrapolated from ``p90_over_p50`` with a log-normal (per-frame latency here is
    close to one: σ = ln(p90/p50) / z90, p98/p50 = exp(z98·σ) = (p90/p50)^1.60); with at least
    ``EMPIRICAL_P98_MIN_RUNS`` runs the empirical ratio is used where it is larger, because real tails are
    heavier than a log-normal (the same rule as ``tail_estimate.TailEstimator.tail``).
    """
    if not (p50 > 0 and p90 > 0):
        raise ValueError(f"latency quantiles must be positive, got p50 {p50!r}, p90 {p90!r}")
    r90 = max(1.0, p90 / p50)
    r98 = r90 ** (Z98 / Z90)
    if p98 is not None and runs >= EMPIRICAL_P98_MIN_RUNS:
        r98 = max(r98, p98 / p50)
    return LatencySpread(r90, r98, runs)


def latency_spread(samples_ms: Sequence[float]) -> LatencySpread:
    """The spread of one level's timed samples (see :func:`spread_from_quantiles`)."""
    if len(samples_ms) == 0:
        raise ValueError("no latency samples")
    p50, p90, p98 = (float(x) for x in np.percentile(np.asarray(samples_ms, dtype=float), [50, 90, 98]))
    return spread_from_quantiles(p50, p90, len(samples_ms), p98)


@dataclass(frozen=True)
class LevelProfile:
    level: int
    resolution: int
    p50_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    spread: LatencySpread | None = None


@dataclass(frozen=True)
class ProfileReport:
    levels: list[LevelProfile]
    backend: str
    device: str
    rss_mb: float
    model_mb: float
    clocks: str

    def table(self) -> str:
        rows = [f"{'level':>5} {'res':>4} {'p50 ms':>8} {'p90 ms':>8} {'mean ms':>8} {'runs':>5} "
                f"{'p90/p50':>8} {'p98/p50':>8}"]
        for p in self.levels:
            spread = (f" {p.spread.p90_over_p50:>8.2f} {p.spread.p98_over_p50:>8.2f}" if p.spread
                      else f" {'-':>8} {'-':>8}")
            rows.append(f"{p.level:>5} {p.resolution:>4} {p.p50_ms:>8.2f} {p.p90_ms:>8.2f} {p.mean_ms:>8.2f} "
                        f"{p.runs:>5}{spread}")
        rows.append(f"backend {self.backend}, device {self.device}, model {self.model_mb:.0f} MB, "
                    f"peak RSS {self.rss_mb:.0f} MB, clocks: {self.clocks}")
        return "\n".join(rows)


def clock_state(sysfs_root: str = "/sys") -> str:
    """Whether CPU clocks were pinned while measuring; timings under ondemand-style governors drift."""
    gov = Path(sysfs_root, "devices/system/cpu/cpu0/cpufreq/scaling_governor")
    try:
        governor = gov.read_text().strip()
    except OSError:
        return "unknown (no cpufreq on this machine)"
    fixed = governor in ("performance", "userspace")
    return f"governor {governor} ({'fixed' if fixed else 'NOT fixed: expect variance'})"


def sample_frame(height: int = 480, width: int = 640, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def profile_model(model: DynamicOFA, *, warmup: int = 5, runs: int = 30, frame: np.ndarray | None = None
                  ) -> ProfileReport:
    """Time ``model.infer`` (pre-processing + inference + top-k: what the perception node reports) per level."""
    frame = sample_frame() if frame is None else frame
    n = model.num_levels
    for level in range(n):
        model.switch(level)
        for _ in range(warmup):
            model.infer(frame)
    samples: list[list[float]] = [[] for _ in range(n)]
    proc = psutil.Process()
    peak = proc.memory_info().rss
    for _ in range(runs):
        for level in range(n):
            model.switch(level)
            model.infer(frame)  # untimed: refills caches after the previous level, as in steady running
            t0 = time.perf_counter()
            model.infer(frame)
            samples[level].append((time.perf_counter() - t0) * 1e3)
        peak = max(peak, proc.memory_info().rss)
    levels = [LevelProfile(i, model.family[i].r, float(np.percentile(s, 50)), float(np.percentile(s, 90)),
                           float(np.mean(s)), len(s), latency_spread(s)) for i, s in enumerate(samples)]
    return ProfileReport(levels, model.backend_label(), str(model.device), peak / 2**20,
                         model.memory_bytes() / 2**20, clock_state())
