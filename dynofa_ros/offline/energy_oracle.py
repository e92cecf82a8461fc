"""The least energy any controller could use on a simulated trace while meeting its deadlines. **Simulated.**

Why: the energy table (``bench/policy_sim.py``) compares joint with the Linux governors, which save energy by
missing deadlines. Whether joint leaves energy on the table, or whether a goal is out of reach for any
controller that keeps the deadlines at a given accuracy, needs the best possible answer on the same trace.
This oracle is clairvoyant: it knows the platform truth (:class:`~dynofa_ros.offline.sim.PlatformTruth`)
and every segment of the trace in advance, so it never pays for learning, switching or a margin.

Per segment of the trace (conditions are constant within one), over every level that meets the segment's
accuracy floor and every pair of clocks the board lists:

* a pair *fits* when the level's latency quantile ``1 - miss_budget`` (the truth's log-normal noise around
  its median) is within the target, so the oracle misses at most ``miss_budget`` of the frames, as the
  joint policy plans to;
* its energy per frame cycle is the simulator's: busy power over the mean latency, then idle power until
  the next camera frame (``1 / fps``);
* *accuracy first*: the most accurate level with a fitting pair, at its cheapest pair; with
  ``accuracy_slack`` s: the cheapest fitting pair of any level within s points of that level.

Where nothing fits, the segment runs the lowest allowed level at the highest clocks (and misses), as every
controller must. Not modelled: the battery saver's clock cap and heat, which the policies obey and the
oracle does not (a policy in its saver mode can use less energy than the accuracy-first oracle).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from ..control.policy import LevelSpec
from .sim import PlatformTruth, Result, Segment, Trace


@dataclass(frozen=True)
class SegmentChoice:
    """The oracle's level and clocks for one segment of the trace, and what they cost."""

    start_s: float
    end_s: float
    level: int
    cpu_khz: int
    gpu_hz: int
    tail_ms: float      # the latency quantile 1 - miss_budget at these clocks
    frames: float       # camera frames in the segment (duration · fps)
    energy_j: float
    fits: bool          # False: no allowed level meets the target at any clocks


@dataclass(frozen=True)
class OracleResult:
    """Every segment's choice; totals over the trace."""

    choices: tuple[SegmentChoice, ...]
    accuracy: tuple[float, ...]  # per level, to weigh the choices
    miss_budget: float           # the latency quantile 1 - miss_budget fits each target

    @property
    def energy_j(self) -> float:
        return sum(c.energy_j for c in self.choices)

    @property
    def mean_accuracy(self) -> float:
        frames = sum(c.frames for c in self.choices)
        return sum(c.frames * self.accuracy[c.level] for c in self.choices) / frames if frames else 0.0

    @property
    def infeasible_s(self) -> float:
        return sum(c.end_s - c.start_s for c in self.choices if not c.fits)


def _cycle(truth: PlatformTruth, spec: LevelSpec, cpu: int, gpu: int, seg: Segment, z: float
           ) -> tuple[float, float]:
    """(latency quantile ms, mean energy J of one frame cycle) of ``spec`` at these clocks in ``seg``."""
    fixed, cpu_ms, gpu_ms = truth.parts_ms(spec, cpu, gpu, seg)
    median = fixed + cpu_ms + gpu_ms
    mean_s = median * math.exp(truth.noise_sigma ** 2 / 2.0) / 1000.0  # mean of the log-normal noise
    busy = truth.busy_power_w(cpu, gpu, seg, (fixed + gpu_ms) / median)
    period = 1.0 / seg.fps
    if mean_s >= period:  # busy through every cycle: frames queue and drop
        return median * math.exp(z * truth.noise_sigma), busy * period
    return median * math.exp(z * truth.noise_sigma), busy * mean_s + truth.idle_power_w(cpu, gpu, seg) * (
        period - mean_s)


@dataclass(frozen=True)
class _SegmentOptions:
    """What no accuracy slack changes in one segment: each allowed level's cheapest fitting pair, and the choice
    when none fits. Computed once per trace, so the frontier's sweep only picks among them."""

    start_s: float
    end_s: float
    frames: float
    cheapest: dict[int, tuple[float, int, int, float]]  # level -> (energy per cycle, cpu, gpu, tail)
    nothing_fits: SegmentChoice


def _segment_options(seg: Segment, start: float, end: float, levels: Sequence[LevelSpec], truth: PlatformTruth,
                     z: float) -> _SegmentOptions:
    b = truth.board
    acc = [lv.accuracy or 0.0 for lv in levels]
    allowed = [i for i in range(len(levels)) if not seg.min_accuracy or acc[i] >= seg.min_accuracy]
    if not allowed:  # no level reaches the floor: the most accurate one, as the policies do
        allowed = [len(levels) - 1]
    frames = (end - start) * seg.fps
    cheapest: dict[int, tuple[float, int, int, float]] = {}
    for i in allowed:
        for c in b.cpu_khz:
            for g in b.gpu_hz:
                tail, e = _cycle(truth, levels[i], c, g, seg, z)
                if tail <= seg.target_ms and (i not in cheapest or e < cheapest[i][0]):
                    cheapest[i] = (e, c, g, tail)
    i, c, g = allowed[0], b.cpu_khz[-1], b.gpu_hz[-1]
    tail, e = _cycle(truth, levels[i], c, g, seg, z)
    return _SegmentOptions(start, end, frames, cheapest, SegmentChoice(start, end, i, c, g, tail, frames,
                                                                       e * frames, False))


def _choose(opt: _SegmentOptions, acc: Sequence[float], accuracy_slack: float) -> SegmentChoice:
    if not opt.cheapest:
        return opt.nothing_fits
    top = max(opt.cheapest, key=lambda i: acc[i])
    pool = [i for i in opt.cheapest if acc[i] >= acc[top] - accuracy_slack]
    i = min(pool, key=lambda i: (opt.cheapest[i][0], -acc[i]))
    e, c, g, tail = opt.cheapest[i]
    return SegmentChoice(opt.start_s, opt.end_s, i, c, g, tail, opt.frames, e * opt.frames, True)


def _trace_options(trace: Trace, levels: Sequence[LevelSpec], truth: PlatformTruth | None,
                   miss_budget: float) -> list[_SegmentOptions]:
    if not 0.0 < miss_budget < 0.5:
        raise ValueError(f"miss_budget must be in (0, 0.5), got {miss_budget}")
    truth = truth or PlatformTruth()
    z = NormalDist().inv_cdf(1.0 - miss_budget)
    segs = trace.segments
    out = []
    for k, seg in enumerate(segs):
        end = min(segs[k + 1].start_s if k + 1 < len(segs) else trace.duration_s, trace.duration_s)
        if end > seg.start_s:
            out.append(_segment_options(seg, seg.start_s, end, levels, truth, z))
    return out


def _result(options: Sequence[_SegmentOptions], levels: Sequence[LevelSpec], accuracy_slack: float,
            miss_budget: float) -> OracleResult:
    acc = tuple(lv.accuracy or 0.0 for lv in levels)
    return OracleResult(tuple(_choose(o, acc, accuracy_slack) for o in options), acc, miss_budget)


def energy_oracle(trace: Trace, levels: Sequence[LevelSpec], truth: PlatformTruth | None = None,
                  accuracy_slack: float = 0.0, miss_budget: float = 0.02) -> OracleResult:
    """The clairvoyant choice per segment of ``trace`` (see the module doc) and its energy."""
    return _result(_trace_options(trace, levels, truth, miss_budget), levels, accuracy_slack, miss_budget)


def frontier(trace: Trace, levels: Sequence[LevelSpec], truth: PlatformTruth | None = None,
             miss_budget: float = 0.02) -> list[OracleResult]:
    """The oracle at every accuracy slack that can change a choice (each gap between two levels' accuracy, and
    0), most accurate first: the least energy a controller meeting the deadlines needs at each accuracy."""
    options = _trace_options(trace, levels, truth, miss_budget)
    acc = sorted({lv.accuracy or 0.0 for lv in levels})
    slacks = sorted({0.0} | {hi - lo for lo in acc for hi in acc if hi > lo})
    out: list[OracleResult] = []
    for s in slacks:
        r = _result(options, levels, s, miss_budget)
        if not out or r.energy_j < out[-1].energy_j - 1e-9:
            out.append(r)
    return out


def least_energy_at(points: Sequence[OracleResult], accuracy: float) -> OracleResult | None:
    """The frontier point with the least energy whose mean accuracy is at least ``accuracy``; None if none."""
    ok = [p for p in points if p.mean_accuracy >= accuracy - 1e-9]
    return min(ok, key=lambda p: p.energy_j) if ok else None


#: The issue's energy goals: the saving joint should reach against each row, at no more misses than step's.
GOALS: tuple[tuple[str, float], ...] = (("step + performance", 0.30), ("step + schedutil", 0.15))


def format_summary(results: Sequence[Result], points: Sequence[OracleResult],
                   goals: Sequence[tuple[str, float]] = GOALS) -> str:
    """How far each joint row is from the oracle at its accuracy, and what each energy goal costs in accuracy
    even for the oracle (a goal out of reach at an accuracy is out of reach for every controller there)."""
    if not points:
        return ""
    q = 100 * (1 - points[0].miss_budget)
    lines = [f"clairvoyant oracle (knows the platform and the whole trace; p{q:g} latency within every target; "
             f"SIMULATED): accuracy first {points[0].energy_j:.0f} J at "
             f"{points[0].mean_accuracy:.2f} %, least at any accuracy {points[-1].energy_j:.0f} J at "
             f"{points[-1].mean_accuracy:.2f} %"
             + (f"; {points[0].infeasible_s:.0f} s where nothing fits" if points[0].infeasible_s else "")]
    by = {r.name: r for r in results}
    for r in results:
        if not r.name.startswith("joint"):
            continue
        best = least_energy_at(points, r.mean_accuracy)
        if best is not None:
            lines.append(f"  {r.name}: {r.energy_j:.0f} J at {r.mean_accuracy:.2f} %, "
                         f"{100 * (r.energy_j / best.energy_j - 1):+.1f} % against the oracle at that accuracy or "
                         f"above ({best.energy_j:.0f} J at {best.mean_accuracy:.2f} %)")
        else:
            lines.append(f"  {r.name}: {r.energy_j:.0f} J at {r.mean_accuracy:.2f} %, more accurate than the "
                         "oracle's accuracy-first choice (a mode the oracle does not model: saver, heat)")
    for name, goal in goals:
        row = by.get(name)
        if row is None:
            continue
        same = least_energy_at(points, row.mean_accuracy)
        want = (1.0 - goal) * row.energy_j
        reach = [p for p in points if p.energy_j <= want]
        text = (f"  {name} ({row.energy_j:.0f} J at {row.mean_accuracy:.2f} %, {100 * row.miss_rate:.2f} % misses): "
                + (f"at its accuracy or above the least is {same.energy_j:.0f} J "
                   f"({100 * (1 - same.energy_j / row.energy_j):+.1f} %); " if same is not None else "")
                + f"{100 * goal:.0f} % below it ({want:.0f} J) ")
        if reach:
            text += f"needs the accuracy down to {reach[0].mean_accuracy:.2f} % ({reach[0].energy_j:.0f} J)"
        else:
            text += (f"is out of reach at every accuracy (the least, {points[-1].energy_j:.0f} J, is "
                     f"{100 * (1 - points[-1].energy_j / row.energy_j):+.1f} %)")
        lines.append(text)
    return "\n".join(lines)
