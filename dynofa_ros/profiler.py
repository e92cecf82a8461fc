"""Measure every level of a family on this device: warm-up, then median and p90, and memory.

Latency tables must come from the machine that runs them (once-for-all #16, #37, #46), so this is
what ``dynofa-profile`` runs on a robot before the manager trusts a family's latencies. Levels are
measured round-robin (an untimed and a timed frame each per round), so a load change on a shared
machine hits every level alike instead of skewing whichever level was being measured at that moment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from .model import DynamicOFA


@dataclass(frozen=True)
class LevelProfile:
    level: int
    resolution: int
    p50_ms: float
    p90_ms: float
    mean_ms: float
    runs: int


@dataclass(frozen=True)
class ProfileReport:
    levels: list[LevelProfile]
    backend: str
    device: str
    rss_mb: float
    model_mb: float
    clocks: str

    def table(self) -> str:
        rows = [f"{'level':>5} {'res':>4} {'p50 ms':>8} {'p90 ms':>8} {'mean ms':>8} {'runs':>5}"]
        rows += [f"{p.level:>5} {p.resolution:>4} {p.p50_ms:>8.2f} {p.p90_ms:>8.2f} {p.mean_ms:>8.2f} {p.runs:>5}"
                 for p in self.levels]
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
                           float(np.mean(s)), len(s)) for i, s in enumerate(samples)]
    return ProfileReport(levels, model.backend_label(), str(model.device), peak / 2**20,
                         model.memory_bytes() / 2**20, clock_state())
