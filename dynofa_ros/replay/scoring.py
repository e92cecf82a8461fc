"""Scoring a recorded run: deadline misses against the target in force, accuracy delivered, switches, energy.

Pure (no rclpy, no rosbags, no matplotlib): the ``report`` tool turns a bag into :class:`RunData` (plain
time series) and this module scores it, so every rule here is unit-tested on hand-made series.

Rules, stated once:
- a frame is one ``dynofa/inference_latency_ms`` message; it *misses* when its latency exceeds the
  latency target in force at that moment (the last ``dynofa/target_latency_ms`` at or before it, else
  the default target given to the report); frames with no target at all are counted as "no target";
- the level of a frame is the last ``dynofa/active_level`` at or before it; accuracy delivered is the
  mean, over frames, of that level's top-1 from the family file, and its source (``measured`` /
  ``predicted``) is reported with it: predicted accuracy never passes for measured;
- a switch is a change of ``dynofa/active_level`` (what actually ran), not a command;
- energy is integrated (trapezoids) only from recorded power samples; with none, it is "not recorded";
- two runs are compared phase by phase on their miss counts: a run is *worse* only where chance alone would
  rarely give it that many more misses (one-sided Fisher exact test, :func:`excess_misses_p`). Two runs of
  the same level in two minutes of a shared machine differ by a frame or two either way; a percentage
  alone would call that a difference.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..series import value_at

Series = list[tuple[float, float]]  # (t_s since run start, value), sorted by time


@dataclass
class RunData:
    """The time series of one recorded run (times in seconds from the run's start)."""

    label: str = "run"
    latency_ms: Series = field(default_factory=list)
    target_ms: Series = field(default_factory=list)
    min_accuracy: Series = field(default_factory=list)
    active_level: Series = field(default_factory=list)
    subnet_cmd: Series = field(default_factory=list)
    cpu_freq_khz: Series = field(default_factory=list)
    gpu_freq_hz: Series = field(default_factory=list)
    battery_pct: Series = field(default_factory=list)
    load_cpu: Series = field(default_factory=list)
    load_gpu: Series = field(default_factory=list)
    temp_cpu: Series = field(default_factory=list)
    temp_gpu: Series = field(default_factory=list)
    power_w: Series = field(default_factory=list)
    results: int = 0
    duration_s: float = 0.0


@dataclass
class Score:
    label: str
    frames: int
    results: int
    misses: int
    no_target: int
    miss_rate: float | None
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    mean_accuracy: float | None
    accuracy_source: str
    switches: int
    level_counts: dict[int, int]
    commands: int
    cpu_freq_mhz: tuple[float, float] | None    # (min, max) commanded
    gpu_freq_mhz: tuple[float, float] | None
    cpu_freq_changes: int
    gpu_freq_changes: int
    energy_j: float | None
    phase_miss_rates: dict[str, float | None] = field(default_factory=dict)
    #: per phase (same keys): (misses, frames with a target)
    phase_misses: dict[str, tuple[int, int]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The report, one fact per line."""
        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.1f} %"

        def ms(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.1f} ms"

        out = [f"[{self.label}]",
               f"  frames processed        {self.frames} (results published: {self.results})",
               f"  deadline-miss rate      {pct(self.miss_rate)} ({self.misses} of {self.frames - self.no_target} "
               f"frames with a target" + (f"; {self.no_target} without one" if self.no_target else "") + ")"]
        for name, rate in self.phase_miss_rates.items():
            k, n = self.phase_misses.get(name, (0, 0))
            out.append(f"    {name}: {pct(rate)}" + (f" ({k} of {n})" if n else ""))
        out += [f"  latency p50 / p90       {ms(self.latency_p50_ms)} / {ms(self.latency_p90_ms)}",
                "  mean accuracy           " + ("n/a" if self.mean_accuracy is None
                                                else f"{self.mean_accuracy:.2f} % top-1 ({self.accuracy_source})"),
                f"  level switches          {self.switches} (commands received: {self.commands}); frames per "
                f"level: " + (", ".join(f"L{k}={v}" for k, v in sorted(self.level_counts.items())) or "n/a")]
        for name, rng, changes in (("CPU", self.cpu_freq_mhz, self.cpu_freq_changes),
                                   ("GPU", self.gpu_freq_mhz, self.gpu_freq_changes)):
            out.append(f"  {name} frequency commands  " + ("none recorded" if rng is None else
                                                            f"{rng[0]:.0f}-{rng[1]:.0f} MHz, {changes} changes"))
        out.append("  energy                  " + ("not recorded (no power samples)" if self.energy_j is None
                                                   else f"{self.energy_j:.1f} J"))
        return out


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def changes(series: Series) -> int:
    """How many times the value changes (the first value is not a change)."""
    return sum(1 for (_, a), (_, b) in itertools.pairwise(series) if a != b)


def energy_j(power_w: Series) -> float | None:
    if len(power_w) < 2:
        return None
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in itertools.pairwise(power_w))


def miss_flags(run: RunData, default_target_ms: float | None = None) -> list[bool | None]:
    """Per frame: True = missed, False = met, None = no target in force."""
    out: list[bool | None] = []
    for t, lat in run.latency_ms:
        target = value_at(run.target_ms, t)
        if target is None:
            target = default_target_ms
        out.append(None if target is None else lat > target)
    return out


def score(run: RunData, accuracies: Sequence[float | None] = (), accuracy_source: str = "unknown", *,
          default_target_ms: float | None = None, phases: Sequence[tuple[str, float, float]] = ()) -> Score:
    """Score one run. ``accuracies[level]`` from the family; ``phases``: (name, t_start, t_end) windows."""
    flags = miss_flags(run, default_target_ms)
    judged = [f for f in flags if f is not None]
    misses = sum(judged)
    lats = [v for _, v in run.latency_ms]

    level_counts: dict[int, int] = {}
    accs: list[float] = []
    for t, _ in run.latency_ms:
        lv = value_at(run.active_level, t)
        if lv is None:
            continue
        level_counts[int(lv)] = level_counts.get(int(lv), 0) + 1
        if 0 <= int(lv) < len(accuracies) and accuracies[int(lv)] is not None:
            accs.append(float(accuracies[int(lv)]))  # type: ignore[arg-type]

    phase_rates: dict[str, float | None] = {}
    phase_counts: dict[str, tuple[int, int]] = {}
    for name, a, b in phases:
        sel = [f for (t, _), f in zip(run.latency_ms, flags, strict=True) if a <= t < b and f is not None]
        key = f"{name} ({a:.0f}-{b:.0f} s)"
        k, n = sum(sel), len(sel)
        phase_counts[key] = (k, n)
        phase_rates[key] = k / n if n else None

    def mhz(series: Series, scale: float) -> tuple[float, float] | None:
        if not series:
            return None
        vals = [v / scale for _, v in series]
        return (min(vals), max(vals))

    return Score(label=run.label, frames=len(lats), results=run.results, misses=misses,
                 no_target=len(flags) - len(judged), miss_rate=(misses / len(judged)) if judged else None,
                 latency_p50_ms=percentile(lats, 0.5), latency_p90_ms=percentile(lats, 0.9),
                 mean_accuracy=(sum(accs) / len(accs)) if accs else None, accuracy_source=accuracy_source,
                 switches=changes(run.active_level), level_counts=level_counts, commands=len(run.subnet_cmd),
                 cpu_freq_mhz=mhz(run.cpu_freq_khz, 1e3), gpu_freq_mhz=mhz(run.gpu_freq_hz, 1e6),
                 cpu_freq_changes=changes(run.cpu_freq_khz), gpu_freq_changes=changes(run.gpu_freq_hz),
                 energy_j=energy_j(run.power_w), phase_miss_rates=phase_rates,
                 phase_misses=phase_counts)


def excess_misses_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """How likely chance alone gives run 1 at least ``k1`` of the ``k1 + k2`` misses, were both runs' frames
    equally likely to miss: the one-sided p-value of Fisher's exact test (hypergeometric upper tail).

    Exact sums of binomial coefficients rather than scipy.stats.fisher_exact: one sum does not justify a
    ~40 MB dependency on a robot, and Python's integers keep it exact at any frame count.
    """
    if min(k1, n1, k2, n2) < 0 or k1 > n1 or k2 > n2:
        raise ValueError(f"misses must lie in 0..frames: {k1} of {n1}, {k2} of {n2}")
    misses, total = k1 + k2, n1 + n2
    if total == 0:
        return 1.0
    tail = sum(math.comb(misses, k) * math.comb(total - misses, n1 - k) for k in range(k1, min(misses, n1) + 1))
    return tail / math.comb(total, n1)


def compare_phases(a: Score, b: Score, alpha: float = 0.05) -> list[str]:
    """Per phase (in order), whether run ``a`` missed more deadlines than run ``b`` beyond chance.

    Phases pair by position: their names match between runs, their end times need not (runs differ in length).
    """
    out = [f"[{a.label} vs {b.label}] misses per phase; worse = more misses than chance explains "
           f"(one-sided Fisher exact test, p < {alpha:g})"]
    for (name, (k1, n1)), (k2, n2) in zip(a.phase_misses.items(), b.phase_misses.values(), strict=False):
        counts = f"{k1} of {n1} vs {k2} of {n2}"
        if not n1 or not n2:
            verdict = "not compared (a run has no frames with a target here)"
        elif k1 * n2 <= k2 * n1:
            verdict = "no worse"
        else:
            p = excess_misses_p(k1, n1, k2, n2)
            verdict = (f"worse (p = {p:.3g})" if p < alpha
                       else f"more misses, within chance (p = {p:.2f})")
        out.append(f"  {name}: {counts}: {verdict}")
    return out


def accuracy_source(sources: Sequence[str]) -> str:
    """One label for a family's accuracy sources: 'measured', 'predicted', or 'mixed: ...'."""
    distinct = sorted(set(sources))
    if not distinct:
        return "unknown"
    return distinct[0] if len(distinct) == 1 else "mixed: " + "/".join(distinct)
