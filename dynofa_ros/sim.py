"""Trace-driven platform simulation: score runtime policies where there is no Jetson. **Simulated figures.**

Why: the joint policy's claim (same deadlines, less energy than the Linux governors) needs the same
workload replayed under every controller. A real board cannot replay contention, heat and battery
exactly; this model can, deterministically (seeded noise), in about a second.

Platform truth (deliberately *not* the policy's own model, so the policy has something to learn):

* camera frames at the segment's ``fps``; the perception pipeline takes the newest frame when it is free,
  so a frame that arrives while an inference is still running waits in a one-frame slot, and an older
  waiting frame is dropped (drops are counted apart from deadline misses);
* latency of level ``l`` at clocks ``(f_c, f_g)`` with external CPU/GPU contention ``(x_c, x_g)``::

      L = L_prof(l) · (fixed + cpu · (f_c,max/f_c) · (1 + x_c) + gpu · (f_g,max/f_g) · (1 + x_g)) · noise

  with ``cpu = 0.25``, ``gpu = 0.62``, ``fixed = 0.13`` (the policy assumes 0.2 / 0.7) and log-normal noise
  (σ = 3 %); ``L_prof`` is the family's reference profile (Xavier NX GPU, batch 1);
* power per domain from :mod:`dynofa_ros.platforms` (``P = P_leak·V + P_dyn·u·f·V²``, assumed V-f line).
  During an inference the inference thread keeps one of the two online Carmel cores busy (computing, or
  spin-waiting on the GPU as CUDA does by default) and the GPU is busy while its kernels run (memory-bound
  parts included); other processes add half their contention as load. Energy is the integral over the
  whole trace of the CPU + GPU rails (``VDD_CPU_GPU_CV`` on Xavier NX). Board base power (SoC, DDR, I/O)
  is the same under every controller and is left out, so savings are of the rails DVFS controls;
* temperature: first-order ``T = ambient + R·P`` with time constant ``tau``; only policies read it, the
  kernel's own throttling is not modelled; battery state of charge comes from the trace.

Governors (Linux cpufreq / Jetson devfreq, simplified): ``performance`` (maximum), ``powersave``
(minimum), ``ondemand``-like (load > 80 % → maximum, else ``f_min + load·(f_max - f_min)``) and
``schedutil``-like (``1.25 · f_cur · util``), updated at every frame from the previous frame cycle's busy
share (the busiest CPU of the policy, the GPU load counter), with the most accurate level fixed, or with
the level the ``step`` policy chooses.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .platforms import XAVIER_NX, Board
from .policy import LatencySample, LevelSpec, Policy, PolicyInputs, Reading, levels_from_family, make_policy

GOVERNORS = ("performance", "powersave", "ondemand", "schedutil")
REFERENCE_FAMILY = Path(__file__).resolve().parents[1] / "config" / "families" / "xavier_nx_six_levels.json"


# ---------------------------------------------------------------------------------------------- trace
@dataclass(frozen=True)
class Segment:
    """Conditions from ``start_s`` until the next segment."""

    start_s: float
    target_ms: float
    min_accuracy: float = 0.0
    cpu_contention: float = 0.0   # slowdown of the CPU part from other processes (0 = none)
    gpu_contention: float = 0.0
    ambient_c: float = 30.0
    battery_soc: float = 0.9
    fps: float = 15.0             # rate at which the application wants results


@dataclass(frozen=True)
class Trace:
    name: str
    duration_s: float
    segments: tuple[Segment, ...]

    def at(self, t: float) -> Segment:
        starts = [s.start_s for s in self.segments]
        return self.segments[max(bisect.bisect_right(starts, t) - 1, 0)]


def default_trace() -> Trace:
    """A robot's 240 s: tight and relaxed phases, load steps, a flapping load, heat, a low battery.

    Tight phases ask for 50-60 ms at 15 fps (close to the largest level's 61.7 ms: little room for DVFS);
    relaxed phases ask for a result per frame at 10 fps (100 ms), where slower clocks still meet it.
    """
    segs = [
        Segment(0, 60.0),
        Segment(30, 60.0, cpu_contention=0.3, gpu_contention=0.35),    # another app shares CPU and GPU
        Segment(60, 50.0),                                             # tighter target
        Segment(90, 100.0, min_accuracy=77.0, fps=10.0),               # relaxed, with an accuracy floor
    ]
    segs += [Segment(120 + 2 * i, 60.0, gpu_contention=0.5 if i % 2 else 0.0) for i in range(20)]  # flapping
    segs += [
        Segment(160, 90.0, ambient_c=50.0, fps=10.0),                  # hot enclosure
        Segment(200, 100.0, battery_soc=0.15, fps=10.0),               # battery low
    ]
    return Trace("xavier_nx_default", 240.0, tuple(segs))


def tight_trace() -> Trace:
    """Only tight targets (50-60 ms at 15 fps): shows how little DVFS can save without slack."""
    segs = (Segment(0, 60.0), Segment(30, 60.0, cpu_contention=0.3, gpu_contention=0.35), Segment(60, 50.0),
            Segment(90, 60.0, min_accuracy=77.0))
    return Trace("xavier_nx_tight", 120.0, segs)


TRACES: dict[str, Callable[[], Trace]] = {"default": default_trace, "tight": tight_trace}


# ---------------------------------------------------------------------------------------------- platform
@dataclass(frozen=True)
class PlatformTruth:
    board: Board = XAVIER_NX
    cpu_fraction: float = 0.25
    gpu_fraction: float = 0.62
    noise_sigma: float = 0.03
    thermal_r_c_per_w: float = 4.0
    thermal_tau_s: float = 20.0
    inference_cpu_share: float = 0.5  # one of the two online Carmel cores (15 W 2-core mode)
    seed: int = 7

    def parts_ms(self, spec: LevelSpec, cpu_khz: int, gpu_hz: int, seg: Segment) -> tuple[float, float, float]:
        """(fixed, CPU, GPU) parts of one inference in ms, before noise."""
        b = self.board
        fixed = spec.latency_ms * (1.0 - self.cpu_fraction - self.gpu_fraction)
        cpu = spec.latency_ms * self.cpu_fraction * (b.cpu_khz[-1] / cpu_khz) * (1.0 + seg.cpu_contention)
        gpu = spec.latency_ms * self.gpu_fraction * (b.gpu_hz[-1] / gpu_hz) * (1.0 + seg.gpu_contention)
        return fixed, cpu, gpu


def _snap_up(freqs: Sequence[int], f: float) -> int:
    i = bisect.bisect_left(freqs, f - 1e-6)
    return freqs[min(i, len(freqs) - 1)]


def governor_freq(name: str, freqs: Sequence[int], current: int, util: float) -> int:
    """Next frequency of a Linux-like governor given the busy share (0..1) at the current frequency."""
    util = min(max(util, 0.0), 1.0)
    if name == "performance":
        return freqs[-1]
    if name == "powersave":
        return freqs[0]
    if name == "ondemand":
        if util > 0.8:
            return freqs[-1]
        return _snap_up(freqs, freqs[0] + util * (freqs[-1] - freqs[0]))
    if name == "schedutil":
        return _snap_up(freqs, 1.25 * current * util)
    raise ValueError(f"governor {name!r} is unknown; allowed: {list(GOVERNORS)}")


# ---------------------------------------------------------------------------------------------- controllers
@dataclass
class Controller:
    """How one row of the table picks levels and clocks. ``policy`` decides every ``decision_period_s``."""

    name: str
    policy: Policy | None = None
    governor: str | None = None
    fixed_level: int | None = None
    decision_period_s: float = 0.2


@dataclass
class Result:
    name: str
    processed: int = 0
    misses: int = 0
    dropped: int = 0
    accuracy_sum: float = 0.0
    energy_j: float = 0.0
    switches: int = 0
    freq_changes: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def miss_rate(self) -> float:
        """Share of processed frames whose latency exceeded the target."""
        return self.misses / self.processed if self.processed else 0.0

    @property
    def drop_rate(self) -> float:
        total = self.processed + self.dropped
        return self.dropped / total if total else 0.0

    @property
    def mean_accuracy(self) -> float:
        return self.accuracy_sum / self.processed if self.processed else 0.0

    @property
    def mean_latency_ms(self) -> float:
        return sum(self.latencies) / len(self.latencies) if self.latencies else 0.0

    @property
    def p95_latency_ms(self) -> float:
        if not self.latencies:
            return 0.0
        s = sorted(self.latencies)
        return s[min(int(0.95 * len(s)), len(s) - 1)]

    @property
    def mj_per_frame(self) -> float:
        return 1000.0 * self.energy_j / self.processed if self.processed else 0.0


def simulate(trace: Trace, levels: Sequence[LevelSpec], controller: Controller,
             truth: PlatformTruth | None = None, trace_log: list | None = None) -> Result:
    """Run one trace under one controller; deterministic for a given seed.

    ``trace_log`` collects ``(t, level, cpu_khz, gpu_hz, latency_ms, target_ms, temp_c)`` per inference.
    """
    truth = truth or PlatformTruth()
    rng = random.Random(truth.seed)
    b = truth.board
    res = Result(controller.name)
    level = controller.fixed_level if controller.fixed_level is not None else len(levels) - 1
    cpu, gpu = b.cpu_khz[-1], b.gpu_hz[-1]
    temp = trace.segments[0].ambient_c
    next_decision = 0.0
    pending: list[LatencySample] = []
    last_util = (1.0, 1.0)
    t = arrival = last_temp_t = power_now = 0.0

    def power(u_c: float, u_g: float) -> float:
        return b.cpu.power_w(cpu, u_c) + b.gpu.power_w(gpu, u_g)

    while arrival < trace.duration_s:
        seg = trace.at(arrival)
        if arrival > t:  # idle until the next frame; a frame that arrived during the last inference starts at once
            p_idle = power(min(seg.cpu_contention, 1.0) * 0.5, min(seg.gpu_contention, 1.0) * 0.5)
            res.energy_j += p_idle * (arrival - t)
            power_now, t = p_idle, arrival
        if t > last_temp_t:  # thermal: first-order lag toward ambient + R·P
            goal = seg.ambient_c + truth.thermal_r_c_per_w * power_now
            temp = goal + (temp - goal) * math.exp(-(t - last_temp_t) / truth.thermal_tau_s)
            last_temp_t = t
        if controller.policy is not None and t >= next_decision:
            d = controller.policy.decide(PolicyInputs(
                now=t, target_latency_ms=seg.target_ms, min_accuracy=seg.min_accuracy or None,
                latencies=tuple(pending), active_level=level,
                cpu_load=Reading(100 * last_util[0], t), gpu_load=Reading(100 * last_util[1], t),
                cpu_temp_c=Reading(temp, t), gpu_temp_c=Reading(temp, t), battery_soc=Reading(seg.battery_soc, t)))
            pending = []
            next_decision = t + controller.decision_period_s
            if d.level != level:
                res.switches += 1
                level = d.level
            if controller.governor is None:
                new = (d.cpu_freq_khz or b.cpu_khz[-1], d.gpu_freq_hz or b.gpu_hz[-1])
                res.freq_changes += new != (cpu, gpu)
                cpu, gpu = new
        if controller.governor is not None:
            new = (governor_freq(controller.governor, b.cpu_khz, cpu, last_util[0]),
                   governor_freq(controller.governor, b.gpu_hz, gpu, last_util[1]))
            res.freq_changes += new != (cpu, gpu)
            cpu, gpu = new
        # one inference
        spec = levels[level]
        fixed_ms, cpu_ms, gpu_ms = truth.parts_ms(spec, cpu, gpu, seg)
        lat = (fixed_ms + cpu_ms + gpu_ms) * math.exp(rng.gauss(0.0, truth.noise_sigma))
        gpu_share = (fixed_ms + gpu_ms) / (fixed_ms + cpu_ms + gpu_ms)
        p_active = power(min(truth.inference_cpu_share + 0.5 * seg.cpu_contention, 1.0),
                         min(gpu_share + 0.5 * seg.gpu_contention, 1.0))
        res.energy_j += p_active * lat / 1000.0
        power_now = p_active
        end = t + lat / 1000.0
        res.processed += 1
        res.accuracy_sum += spec.accuracy or 0.0
        res.latencies.append(lat)
        res.misses += lat > seg.target_ms
        if trace_log is not None:
            trace_log.append((t, level, cpu, gpu, lat, seg.target_ms, temp))
        pending.append(LatencySample(lat, level, end))
        # frames arriving while busy: the newest waits and starts when this inference ends, older ones drop
        period = 1.0 / seg.fps
        nxt = arrival + period
        while nxt + period <= end + 1e-9:
            res.dropped += 1
            nxt += period
        # busy share of this cycle as a governor samples it, other processes' load included
        busy = (lat / 1000.0) / (max(nxt, end) - t)
        last_util = (min(busy + 0.5 * seg.cpu_contention, 1.0), min(gpu_share * busy + 0.5 * seg.gpu_contention, 1.0))
        t, arrival = end, nxt
    return res


# ---------------------------------------------------------------------------------------------- table
def reference_levels() -> list[LevelSpec]:
    """The Xavier NX reference family (six levels, profile ``xavier_nx_gpu``)."""
    from .family import load

    return levels_from_family(load(REFERENCE_FAMILY), "xavier_nx_gpu")


def standard_controllers(levels: Sequence[LevelSpec], board: Board = XAVIER_NX,
                         make: Callable[[str], Policy] | None = None) -> list[Controller]:
    """joint, step, and the governors with the largest level fixed and with step's level choice."""
    def mk(name: str) -> Policy:
        if make is not None:
            return make(name)
        return make_policy(name, levels, board.cpu_khz, board.gpu_hz, cpu_power=board.cpu, gpu_power=board.gpu)

    top = len(levels) - 1
    rows = [Controller("joint (ours)", mk("joint")), Controller("step + performance", mk("step"))]
    rows += [Controller(f"step + {g}", mk("step"), governor=g) for g in ("ondemand", "schedutil")]
    rows += [Controller(f"level {top} fixed + {g}", governor=g, fixed_level=top) for g in GOVERNORS]
    return rows


def run_table(trace: Trace | None = None, levels: Sequence[LevelSpec] | None = None,
              truth: PlatformTruth | None = None) -> list[Result]:
    trace = trace or default_trace()
    levels = levels if levels is not None else reference_levels()
    truth = truth or PlatformTruth()
    return [simulate(trace, levels, c, truth) for c in standard_controllers(levels, truth.board)]


def format_table(results: Sequence[Result], reference: str = "joint (ours)") -> str:
    """A plain-text table; energy saving of the reference row against every other row."""
    ref = next((r for r in results if r.name == reference), results[0])
    head = (f"{'controller (SIMULATED)':<28} {'miss %':>7} {'drop %':>7} {'acc %':>6} {'mean ms':>8} {'p95 ms':>7} "
            f"{'energy J':>9} {'mJ/frame':>9} {'switch':>6} {'f chg':>6} {'joint saves':>11}")
    lines = [head, "-" * len(head)]
    for r in results:
        saving = "" if r is ref else f"{100 * (1 - ref.energy_j / r.energy_j):+.1f} %"
        lines.append(f"{r.name:<28} {100 * r.miss_rate:7.2f} {100 * r.drop_rate:7.2f} {r.mean_accuracy:6.2f} "
                     f"{r.mean_latency_ms:8.1f} {r.p95_latency_ms:7.1f} {r.energy_j:9.1f} {r.mj_per_frame:9.1f} "
                     f"{r.switches:6d} {r.freq_changes:6d} {saving:>11}")
    return "\n".join(lines)
