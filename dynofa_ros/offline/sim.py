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
* power per domain from :mod:`dynofa_ros.control.platforms` (``P = P_leak·V + P_dyn·u·f·V²``, assumed V-f line).
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
import functools
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..control.platforms import XAVIER_NX, Board
from ..control.policy import (
    LatencySample,
    LevelSpec,
    OverrunFallback,
    Policy,
    PolicyConfig,
    PolicyInputs,
    Reading,
    levels_from_family,
    make_policy,
)
from ..paths import config_dir
from ..series import step_value

GOVERNORS = ("performance", "powersave", "ondemand", "schedutil")
REFERENCE_FAMILY = config_dir() / "families" / "xavier_nx_six_levels.json"
#: The shipped params file of the board the energy table models: its manager block configures the joint rows.
REFERENCE_PARAMS = config_dir() / "xavier_nx.yaml"


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
    switch_factor: float = 1.0        # first frame after a level switch is this much slower (1.14 measured on CPU)

    def parts_ms(self, spec: LevelSpec, cpu_khz: int, gpu_hz: int, seg: Segment) -> tuple[float, float, float]:
        """(fixed, CPU, GPU) parts of one inference in ms, before noise."""
        b = self.board
        fixed = spec.latency_ms * (1.0 - self.cpu_fraction - self.gpu_fraction)
        cpu = spec.latency_ms * self.cpu_fraction * (b.cpu_khz[-1] / cpu_khz) * (1.0 + seg.cpu_contention)
        gpu = spec.latency_ms * self.gpu_fraction * (b.gpu_hz[-1] / gpu_hz) * (1.0 + seg.gpu_contention)
        return fixed, cpu, gpu

    def busy_power_w(self, cpu_khz: int, gpu_hz: int, seg: Segment, gpu_share: float) -> float:
        """CPU + GPU rails while an inference runs: its thread keeps ``inference_cpu_share`` of the CPU busy,
        the GPU is busy ``gpu_share`` of the inference, and other processes add half their contention."""
        b = self.board
        return (b.cpu.power_w(cpu_khz, min(self.inference_cpu_share + 0.5 * seg.cpu_contention, 1.0))
                + b.gpu.power_w(gpu_hz, min(gpu_share + 0.5 * seg.gpu_contention, 1.0)))

    def idle_power_w(self, cpu_khz: int, gpu_hz: int, seg: Segment) -> float:
        """CPU + GPU rails between inferences: leakage at the set clocks and half the other processes' load."""
        b = self.board
        return (b.cpu.power_w(cpu_khz, min(seg.cpu_contention, 1.0) * 0.5)
                + b.gpu.power_w(gpu_hz, min(seg.gpu_contention, 1.0) * 0.5))


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
    fixed_clocks: tuple[int, int] | None = None  # (CPU kHz, GPU Hz) without a policy or governor; else maximum


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
    cpu, gpu = controller.fixed_clocks or (b.cpu_khz[-1], b.gpu_hz[-1])
    temp = trace.segments[0].ambient_c
    next_decision = 0.0
    pending: list[LatencySample] = []
    last_util = (1.0, 1.0)
    prev_level: int | None = None
    t = arrival = last_temp_t = power_now = 0.0

    while arrival < trace.duration_s:
        seg = trace.at(arrival)
        if arrival > t:  # idle until the next frame; a frame that arrived during the last inference starts at once
            p_idle = truth.idle_power_w(cpu, gpu, seg)
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
        if prev_level is not None and level != prev_level:
            lat *= truth.switch_factor
        prev_level = level
        gpu_share = (fixed_ms + gpu_ms) / (fixed_ms + cpu_ms + gpu_ms)
        p_active = truth.busy_power_w(cpu, gpu, seg, gpu_share)
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
    from ..inference.family import load

    return levels_from_family(load(REFERENCE_FAMILY), "xavier_nx_gpu")


#: Accuracy slacks (points) of the extra joint rows: what energy a bounded accuracy loss buys.
SLACK_ROWS = (1.0, 2.0)
#: The battery-first end of the joint knobs (docs/manager.md, "What energy the manager saves"): any level within 5
#: points (beyond 5 nothing changes on the default trace) and a 2 % latency margin instead of 5 %. The margin is
#: insurance on top of the planned 98th percentile against a latency model that is wrong; at the model's 3 %
#: spread it costs 0.16 points of misses (0.20 -> 0.36 %) and buys 2 % of energy.
BATTERY_FIRST = {"accuracy_slack": 5.0, "latency_margin": 0.02}


def standard_controllers(levels: Sequence[LevelSpec], board: Board = XAVIER_NX,
                         make: Callable[[str], Policy] | None = None) -> list[Controller]:
    """joint (and joint with ``SLACK_ROWS`` accuracy slack, and ``BATTERY_FIRST``), step, and the governors with the
    largest level fixed and with step's level choice.

    The joint rows run the manager block of the board's shipped params file (``REFERENCE_PARAMS``): its
    latency-vs-clock split (CPU 0.2, GPU 0.7 of a frame) and GPU spread prior are what a user runs on that
    board. Dataclass defaults model a CPU-only board (the whole frame scales with the CPU clock), which
    on the GPU board of this table planned clocks against the wrong processor.
    """
    base, _rate = bench_policy_config(REFERENCE_PARAMS)

    def mk(name: str, config: PolicyConfig | None = None) -> Policy:
        if make is not None:
            return make(name)
        return make_policy(name, levels, board.cpu_khz, board.gpu_hz, config or base, cpu_power=board.cpu,
                           gpu_power=board.gpu)

    top = len(levels) - 1
    rows = [Controller("joint (ours)", mk("joint"))]
    if make is None:
        rows += [Controller(f"joint, {s:g}-point slack", mk("joint", replace(base, accuracy_slack=s)))
                 for s in SLACK_ROWS]
        rows += [Controller("joint, battery first", mk("joint", replace(base, **BATTERY_FIRST)))]
    rows += [Controller("step + performance", mk("step"))]
    rows += [Controller(f"step + {g}", mk("step"), governor=g) for g in ("ondemand", "schedutil")]
    rows += [Controller(f"level {top} fixed + {g}", governor=g, fixed_level=top) for g in GOVERNORS]
    return rows


def run_table(trace: Trace | None = None, levels: Sequence[LevelSpec] | None = None,
              truth: PlatformTruth | None = None) -> list[Result]:
    trace = trace or default_trace()
    levels = levels if levels is not None else reference_levels()
    truth = truth or PlatformTruth()
    return [simulate(trace, levels, c, truth) for c in standard_controllers(levels, truth.board)]


def energy_summary(results: Sequence[Result], reference: str = "joint (ours)",
                   against: Sequence[tuple[str, float]] = (("step + performance", 0.30),
                                                           ("step + schedutil", 0.15))) -> str:
    """The issue's energy goals, one line each: saving of ``reference`` against a row, and the miss rates
    side by side (a saving bought with more missed deadlines does not count)."""
    by = {r.name: r for r in results}
    step = by.get("step + performance")
    lines = []
    refs = [reference] + [n for n in by if n.startswith("joint, ")]  # the slack rows, with their accuracy
    for ref_name in refs:
        ref = by[ref_name]
        for name, goal in against:
            r = by.get(name)
            if r is None:
                continue
            saving = 1.0 - ref.energy_j / r.energy_j
            ok = saving >= goal and (step is None or ref.miss_rate <= step.miss_rate)
            lines.append(f"{ref_name} vs {name}: energy {ref.energy_j:.0f} J vs {r.energy_j:.0f} J "
                         f"({100 * saving:+.1f} %, goal ≥ {100 * goal:.0f} %), misses {100 * ref.miss_rate:.2f} % vs "
                         f"{100 * r.miss_rate:.2f} % (step + performance: "
                         f"{100 * step.miss_rate if step else float('nan'):.2f} %), accuracy {ref.mean_accuracy:.2f} "
                         f"vs {r.mean_accuracy:.2f} % → {'met' if ok else 'NOT met'}")
    return "\n".join(lines)


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


# ================================================================================================ this machine
# A simulator that reproduces the real graph (issue 16). The Xavier NX model above is a parametric platform
# for energy; the part below learns its plant from a recorded real run of ``bench/contention.py`` and feeds
# the policy the way the nodes do, so that what the simulator says about a controller's deadline misses
# can be checked against the machine (``test/test_sim_realism.py``).
#
# What the real graph does, and this reproduces:
# * latency is not 3 % noise around a profile: per frame it spreads log-normally with σ ≈ 0.3 here, has
#   runs of slow frames (other processes, the scheduler), and depends on the level in a way the profile
#   does not predict (fixed pre/post-processing is a larger share of small levels). So each level's
#   latencies are *recorded sequences* per number of competing busy processes, replayed by a block
#   bootstrap (runs of consecutive recorded frames, ``block`` long on average), which keeps both the
#   spread and the autocorrelation; a condition with no recording is transferred from the level's idle
#   sequence through the learned contention slowdown;
# * a slow stretch is the machine's, not the level's: the fixed columns were recorded minutes apart, each with
#   its own slow minutes and stalls, and replaying each level's own column let a slowdown end the moment the
#   manager left that level (so a drop always "worked", and a controller that flaps between levels, step, met
#   slow stretches it could escape). Each recorded sequence is split into a running median over
#   ``MACHINE_WINDOW`` frames (the machine's) and the rest (the level's); the simulator draws one machine
#   factor per frame from all levels' factors, whatever level runs, times the running level's median and its own
#   residual. Step's mean |sim − real| miss rate fell from 7.4 to 4.8 points on the recorded sets;
# * the perception node runs one frame at a time; a frame arriving while it is busy waits in a one-frame
#   slot (a newer one replaces it): frames are in flight, a sample reaches the manager only after its
#   frame's latency (plus a DDS delay);
# * the manager decides on a timer (``decision_rate_hz``, its own phase) from the samples received since
#   the previous decision, each tagged with the level that produced it (``dynofa/inference_stats``), or,
#   with ``tagging="active_level"``, with the last ``dynofa/active_level`` heard (the old pairing, which
#   is one frame late after every switch); ``joint`` also decides at once when a late frame's sample or a new
#   target arrives (``decides_on_miss``, ``decides_on_target``);
# * a command takes effect at the next frame that starts after it arrives, and that first frame is slower
#   (``switch_factor``, learned from the recorded switches, ~1.14 here);
# * ``load/cpu`` arrives at 2 Hz as the share of both cores busy over the last 0.5 s.

#: Seconds from a late frame's end to the perception node holding the manager's command, measured in the bags of
#: the real bursty runs (18 drops: 1.5-20 ms, median 10 ms; the busy processes delay both nodes' wake-ups). With
#: 2 ms the simulator let the next frame start at the new level more often than the machine does.
CMD_DELAY_S = 0.010
BENCH_FAMILY = config_dir() / "families" / "generic_cpu.json"
BENCH_PARAMS = config_dir() / "generic_cpu.yaml"
DEFAULT_SWITCH_FACTOR = 1.14
#: Frames over which a recorded slow stretch counts as the machine's, not the level's (:meth:`LearnedPlant.
#: machine_factor`): about 0.4 s at the bench's 20-25 fps, so a neighbour's stall of a few frames or a slow
#: minute slows whichever level runs, and a one- or two-frame spike stays with the level that ran it. Chosen on
#: the five recorded sets of stops 45-48 and the AMD one (25 pattern runs, 8 seeds): 5 to 15 frames agree alike
#: (step's mean |sim − real| miss rate 4.8-5.1 points, against 7.4 with none; joint 0.5-0.7 either way); 3 and
#: 25 frames do worse for step (5.7, 5.4).
MACHINE_WINDOW = 9


@dataclass(frozen=True)
class GraphScenario:
    """A bench pattern as the simulator replays it: frames, latency targets, competing busy processes."""

    name: str
    duration_s: float
    fps: float
    busy: tuple[tuple[float, int], ...]        # (t_s, busy processes from t on)
    targets: tuple[tuple[float, float], ...]   # (t_s, target ms from t on)

    def busy_at(self, t: float) -> int:
        return int(step_value(self.busy, t)) if self.busy else 0

    def target_at(self, t: float) -> float:
        return float(step_value(self.targets, t))

    def busy_mean(self, t0: float, t1: float) -> float:
        """Mean number of busy processes over [t0, t1]: what a load reading averaged over that span saw."""
        if t1 <= t0:
            return float(self.busy_at(t1))
        edges = [t0, *sorted(t for t, _ in self.busy if t0 < t < t1), t1]
        return sum(self.busy_at(a) * (b - a) for a, b in itertools.pairwise(edges)) / (t1 - t0)


@dataclass
class LearnedPlant:
    """Per level, recorded latency sequences (ms, in recorded order) per number of busy processes."""

    sequences: dict[int, dict[int, np.ndarray]]   # busy processes -> level -> latencies
    num_levels: int
    switch_factor: float = DEFAULT_SWITCH_FACTOR
    block: float = 20.0                           # mean length of a replayed run of consecutive frames
    frame_delivery: float = 1.0                   # share of camera frames that reach the node
    #: perception's start-up timing of each level (``dynofa/level_profile_ms``) as the graph measured it; None:
    #: the recorded graph had none, and the policy plans with the family file's ratios only
    level_profile_ms: list[float] | None = None
    #: > 1: latency = the level's median × one machine-wide slow factor × the level's own residual (see
    #: :meth:`machine_factor`); 0: each level replays its own recorded column, slow stretches included
    machine_window: int = 0

    @classmethod
    def from_json(cls, d: dict, block: float = 20.0, machine_window: int = MACHINE_WINDOW) -> LearnedPlant:
        seqs = {int(b): {int(lv): np.asarray(v, dtype=float) for lv, v in cells.items() if len(v)}
                for b, cells in d["busy"].items()}
        profile = d.get("level_profile_ms")
        return cls(seqs, int(d["num_levels"]), float(d.get("switch_factor", DEFAULT_SWITCH_FACTOR)), block,
                   float(d.get("frame_delivery", 1.0)), [float(x) for x in profile] if profile else None,
                   machine_window)

    @classmethod
    def lognormal(cls, profile_ms: Sequence[float], sigma: float, slowdown: dict[int, float],
                  n: int = 2000, seed: int = 0, switch_factor: float = 1.0) -> LearnedPlant:
        """A parametric plant (profile × slowdown × log-normal noise): what the simulator assumed before."""
        rng = np.random.default_rng(seed)
        seqs = {b: {lv: ms * s * np.exp(rng.normal(0.0, sigma, n)) for lv, ms in enumerate(profile_ms)}
                for b, s in slowdown.items()}
        return cls(seqs, len(profile_ms), switch_factor, block=1.0)

    def slowdown(self, busy: int) -> float:
        """Median over levels of median latency with ``busy`` competing processes / median idle."""
        base, here = self.sequences.get(0, {}), self.sequences.get(busy, {})
        r = [np.median(here[lv]) / np.median(base[lv]) for lv in here if lv in base]
        if r:
            return float(np.median(r))
        known = sorted(b for b in self.sequences if b != 0 and b < busy)
        return self.slowdown(known[-1]) if known else 1.0

    def cell(self, level: int, busy: int) -> np.ndarray:
        """The sequence to draw from: recorded, else the idle one scaled by the learned slowdown."""
        here = self.sequences.get(busy, {})
        if level in here and len(here[level]) >= 30:
            return here[level]
        for b in sorted(self.sequences, key=lambda x: abs(x - busy)):
            if level in self.sequences[b] and len(self.sequences[b][level]) >= 30:
                return self.sequences[b][level] * (self.slowdown(busy) / max(self.slowdown(b), 1e-9))
        raise ValueError(f"no recorded latencies of level {level} in the plant")

    def sampler(self, seed: int) -> Callable[[int, int], float]:
        """draw(level, busy) -> ms: a block bootstrap over each cell (runs of consecutive recorded frames)."""
        if self.machine_window > 1:
            return self._machine_sampler(seed)
        rng = np.random.default_rng(seed)
        cursor: dict[tuple[int, int], int] = {}
        cells: dict[tuple[int, int], np.ndarray] = {}

        def draw(level: int, busy: int) -> float:
            key = (level, busy)
            if key not in cells:
                cells[key] = self.cell(level, busy)
            seq = cells[key]
            i = _next_index(rng, cursor.get(key), len(seq), self.block)
            cursor[key] = i
            return float(seq[i])

        return draw

    def machine_factor(self, seq: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """``seq`` split into its median, the machine's slow factor and the level's own residual (log).

        The factor is the centred running median of log(latency / median) over ``machine_window`` frames:
        episodes that last that long (a stall of a few frames, a slow minute) are the machine's, whatever level
        ran them; shorter ones stay with the level."""
        log = np.log(seq)
        med = float(np.median(log))
        x = log - med
        w = self.machine_window
        padded = np.pad(x, (w // 2, w - 1 - w // 2), mode="edge")
        slow = np.median(np.lib.stride_tricks.sliding_window_view(padded, w), axis=1)
        return math.exp(med), slow, x - slow

    def _machine_sampler(self, seed: int) -> Callable[[int, int], float]:
        """One slow factor for the whole machine (drawn per frame from every level's factors under that number
        of busy processes), times the running level's median and its own residual: a slow stretch then slows
        whichever level runs, as on a real machine, instead of ending when the manager leaves the level."""
        rng = np.random.default_rng(seed)
        cursor: dict[object, int] = {}
        parts: dict[tuple[int, int], tuple[float, np.ndarray, np.ndarray]] = {}
        factors: dict[int, np.ndarray] = {}

        def split(level: int, busy: int) -> tuple[float, np.ndarray, np.ndarray]:
            if (level, busy) not in parts:
                parts[level, busy] = self.machine_factor(self.cell(level, busy))
            return parts[level, busy]

        def draw(level: int, busy: int) -> float:
            if busy not in factors:
                factors[busy] = np.concatenate([split(lv, busy)[1] for lv in range(self.num_levels)])
            slow = factors[busy]
            med, _, own = split(level, busy)
            i = cursor["machine", busy] = _next_index(rng, cursor.get(("machine", busy)), len(slow), self.block)
            j = cursor[level, busy] = _next_index(rng, cursor.get((level, busy)), len(own), self.block)
            return med * math.exp(float(slow[i]) + float(own[j]))

        return draw


def _next_index(rng: np.random.Generator, i: int | None, n: int, block: float) -> int:
    """The block bootstrap's step: the next recorded frame, or (1 time in ``block``) a random one."""
    if i is None or rng.random() < 1.0 / max(block, 1.0):
        return int(rng.integers(n))
    return (i + 1) % n


@dataclass
class GraphRun:
    """One simulated run, per processed frame (arrays), as the bench scores a real one."""

    name: str
    t_s: np.ndarray          # when the manager received the sample
    level: np.ndarray
    latency_ms: np.ndarray
    target_ms: np.ndarray    # at the frame's stamp
    dropped: int
    duration_s: float
    overruns: int = 0        # frames after which perception followed the manager's overrun fallback

    @property
    def miss_rate(self) -> float:
        return float(np.mean(self.latency_ms > self.target_ms)) if len(self.latency_ms) else 0.0

    @property
    def switches(self) -> int:
        return int(np.sum(self.level[1:] != self.level[:-1]))

    @property
    def switches_per_min(self) -> float:
        return 60.0 * self.switches / self.duration_s

    def mean_accuracy(self, accuracy: Sequence[float]) -> float:
        return float(np.mean(np.asarray(accuracy)[self.level]))


def bench_levels(family_path: str | Path = BENCH_FAMILY) -> list[LevelSpec]:
    from ..inference.family import load

    return levels_from_family(load(family_path))


def bench_policy_config(params_path: str | Path = BENCH_PARAMS) -> tuple[PolicyConfig, float]:
    """The manager block of a params file as a PolicyConfig (fields it does not know are left at their
    defaults, keys the config does not have are ignored) and its ``decision_rate_hz``."""
    import dataclasses

    import yaml

    data = yaml.safe_load(Path(params_path).read_text(encoding="utf-8"))
    block = next((v["ros__parameters"] for k, v in data.items() if k.rstrip("/").endswith("manager_node")), {})
    names = {f.name for f in dataclasses.fields(PolicyConfig)}
    cfg = PolicyConfig(**{k: v for k, v in block.items() if k in names})
    return cfg, float(block.get("decision_rate_hz", 5.0))


def simulate_graph(scn: GraphScenario, plant: LearnedPlant, policy: Policy | None = None, *,
                   fixed_level: int = 0, initial_level: int = 0, decision_rate_hz: float = 5.0, seed: int = 0,
                   tagging: str = "true", msg_delay_s: float = 0.001, cmd_delay_s: float = CMD_DELAY_S,
                   cores: int = 2, lead_s: float = 3.0, overrun_fallback: bool = True) -> GraphRun:
    """Replay ``scn`` through the perception → manager loop of the real graph (see the block comment above).

    ``policy`` None: perception alone at ``fixed_level``. Deterministic for a given seed. The manager runs
    ``lead_s`` before the first frame with no target and no samples, as in the bench and the demo (the graph
    starts, then the camera and the application's target): what it commands then is what the first frames run.
    ``overrun_fallback``: the manager issues the policy's :class:`~dynofa_ros.control.policy.OverrunFallback`
    (it reaches perception ``cmd_delay_s`` later, as a command does) and perception follows it at the end of the
    frame that overran, one-shot (the manager's parameter of the same name).
    """
    if tagging not in ("true", "active_level"):
        raise ValueError(f"tagging {tagging!r}; allowed: 'true', 'active_level'")
    rng = random.Random(seed)
    draw = plant.sampler(seed)
    period = 1.0 / scn.fps
    n_frames = math.floor(scn.duration_s * scn.fps + 1e-9)
    level = initial_level if policy is not None else fixed_level
    commanded = [(-math.inf, level)]     # (effective from, level)
    tick_period = 1.0 / decision_rate_hz
    next_tick = rng.uniform(0.0, tick_period) - lead_s
    next_load = rng.uniform(0.0, 0.5) - lead_s
    load: Reading | None = None
    inbox: list[tuple[float, LatencySample]] = []   # (delivered at, sample), in delivery order
    busy_log: list[tuple[float, float]] = []        # (start, end) of each inference, for load/cpu
    heard_level: int | None = None                  # last active_level the manager heard
    out_t, out_lvl, out_lat, out_tgt = [], [], [], []
    t_free, k, dropped, prev_level = 0.0, 0, 0, None
    ends: list[tuple[float, int]] = []              # (published at, level) for active_level tagging
    urgent: list[float] = []                        # delivery times of missed deadlines (decided at once)
    if policy is not None and policy.decides_on_target:  # and of target changes (ManagerNode._on_target)
        urgent = sorted(t + msg_delay_s for t, _ in scn.targets)
    issued: list[tuple[float, OverrunFallback | None]] = []  # (held by perception from, instruction)
    sent: OverrunFallback | str | None = "used"  # what the manager issued last (ManagerNode._overrun_sent)
    followed: list[float] = []              # every frame end after which perception followed one
    heard = 0                               # how many of them the manager has heard of (dynofa/active_level)
    used_at = -math.inf                     # perception forgets the instruction it followed
    published: int | None = None            # the level the manager commanded last (ManagerNode._published)

    def manager_until(t: float) -> None:
        nonlocal next_tick, next_load, load
        while policy is not None and min(next_tick, next_load, urgent[0] if urgent else math.inf) <= t:
            if urgent and urgent[0] <= min(next_tick, next_load):
                decide(urgent.pop(0))  # a miss reached the manager: it decides at once (ManagerNode._queue_sample)
                continue
            if next_load <= next_tick:
                w0 = next_load - 0.5
                own = sum(max(0.0, min(e, next_load) - max(s, w0)) for s, e in busy_log[-40:])
                # the monitor's reading is the mean of the half second before it (psutil.cpu_percent between calls)
                share = min(1.0, (scn.busy_mean(w0, next_load) + own / 0.5) / cores)
                load = Reading(100.0 * share, next_load)
                next_load += 0.5
                continue
            decide(next_tick)
            next_tick += tick_period

    def decide(now: float) -> None:
        nonlocal heard_level, sent, published, heard
        got = [s for d, s in inbox if d <= now]
        del inbox[:len(got)]
        for pub, lv in ends:
            if pub <= now:
                heard_level = lv
        while heard < len(followed) and followed[heard] + 2 * msg_delay_s <= now:  # ManagerNode._on_active_level:
            heard += 1                                                            # the instruction is used up
            sent, published = "used", None
        d = policy.decide(PolicyInputs(now=now, target_latency_ms=scn.target_at(now) if now >= 0 else None,
                                       latencies=tuple(got), active_level=heard_level, cpu_load=load))
        if d.level != published:  # what the manager last sent, not what perception runs: a decision processed
            bisect.insort(commanded, (now + cmd_delay_s, d.level))  # here after a frame may predate its end
            published = d.level
        fb = policy.overrun if overrun_fallback else None
        if fb != sent:
            issued.append((now + cmd_delay_s, fb))
            sent = fb

    def follow_overrun(level: int, lat: float, end: float) -> None:
        """Pipeline._catch_overrun at the end of a frame: the instruction perception holds, if unused."""
        nonlocal used_at
        held = next(((when, fb) for when, fb in reversed(issued) if when <= end), None)
        if held is None or held[1] is None or held[0] <= used_at:
            return
        fb = held[1]
        in_force = next(lv for when, lv in reversed(commanded) if when <= end)
        if level != fb.from_level or lat <= fb.limit_ms or in_force != fb.from_level:
            return
        used_at = end
        bisect.insort(commanded, (end, fb.to_level))
        followed.append(end)

    # frames lost before the node (plant.frame_delivery < 1: large frames on a loaded machine)
    keep = np.random.default_rng(seed + 7919).random(n_frames) < plant.frame_delivery
    arrived = [int(i) for i in np.flatnonzero(keep)]
    while k < n_frames:
        i0 = bisect.bisect_left(arrived, k)
        if i0 >= len(arrived):
            break
        i_new = bisect.bisect_right(arrived, math.floor(t_free * scn.fps + 1e-9)) - 1
        if i_new >= i0 and arrived[i_new] * period <= t_free:
            dropped += i_new - i0
            j, start = arrived[i_new], t_free
        else:
            j = arrived[i0]
            start = max(j * period, t_free)
        manager_until(start)
        level = next(lv for when, lv in reversed(commanded) if when <= start)
        lat = draw(level, scn.busy_at(start))
        if prev_level is not None and level != prev_level:
            lat *= plant.switch_factor
        end = start + lat / 1000.0
        busy_log.append((start, end))
        # "active_level": the latency is published before the level, so the manager pairs it with the level
        # of the previous frame (the last one it heard)
        tag = level if tagging == "true" or not ends else ends[-1][1]
        inbox.append((end + msg_delay_s, LatencySample(lat, tag, end + msg_delay_s)))
        target = scn.target_at(end)
        if policy is not None and policy.decides_on_miss and target and lat > target:
            bisect.insort(urgent, end + msg_delay_s)
        if policy is not None:
            follow_overrun(level, lat, end)
        ends.append((end + 2 * msg_delay_s, level))
        del ends[:-8]
        out_t.append(end + msg_delay_s)
        out_lvl.append(level)
        out_lat.append(lat)
        out_tgt.append(scn.target_at(j * period))
        prev_level, t_free, k = level, end, j + 1
    return GraphRun(scn.name, np.asarray(out_t), np.asarray(out_lvl, dtype=int), np.asarray(out_lat),
                    np.asarray(out_tgt), dropped, scn.duration_s, len(followed))


# ---------------------------------------------------------------------------------------------- extraction
def _run_busy(run: dict, t_start: np.ndarray) -> np.ndarray:
    busy = np.zeros(len(t_start), dtype=int)
    for tc, n in run.get("busy_changes") or []:
        busy[t_start >= tc] = n
    return busy


def _target(pattern: dict, frame_t: np.ndarray) -> np.ndarray:
    pts = [tuple(p) for p in pattern["targets"]]
    return np.array([step_value(pts, float(x)) for x in frame_t])


def policy_fingerprint(name: str) -> str:
    """What the controller *does*, hashed: a recorded real run describes the controller with this fingerprint.

    Why behaviour and not source: a refactor, a comment or a feature the bench never exercises (clocks, which
    this machine has none of; ``accuracy_slack`` at its default 0) must not orphan a 30-minute recording,
    while any change in the levels chosen must. The workload is fixed and synthetic (log-normal latencies
    around 1.8x the bench family's profile, each level a few % off, as the bench machines run it, with the graph's
    start-up profile of them, at the bench's 20 fps: so the cold
    start waits for measured frames as on the machine; 0→2→0→1→2→0 busy processes, target steps 30→18→30 ms,
    two seeds), run with the bench's family and params (``config/generic_cpu.yaml``); the hash covers every
    frame's level. A controller that issues overrun fallbacks (``joint``) is also run on bursts of 3 s on, 3 s
    off, where perception follows them, and those frames' levels are hashed too.
    """
    return _behaviour_hash(name) + f":{name}"


@functools.cache
def _behaviour_hash(name: str) -> str:
    import hashlib

    levels = bench_levels()
    # the machine's levels cost 1.8x the profile, not all alike (as measured on the bench machines: 1.24-1.34x
    # on one CPU), and perception's start-up profile says so: a change in how that profile is used shows here
    machine = [1.8 * (1.0 + 0.04 * ((3 * i) % 5 - 2)) * lv.latency_ms for i, lv in enumerate(levels)]
    plant = LearnedPlant.lognormal(machine, 0.25, {0: 1.0, 1: 1.6, 2: 2.6}, n=600, switch_factor=1.14)
    plant.level_profile_ms = machine
    scn = GraphScenario("fingerprint", 90.0, 20.0, ((0.0, 0), (20.0, 2), (40.0, 0), (50.0, 1), (60.0, 2), (75.0, 0)),
                        ((0.0, 30.0), (30.0, 18.0), (45.0, 30.0)))
    h = hashlib.sha256()
    for run in simulate_controller(scn, plant, name, seeds=(0, 1), levels=levels):
        h.update(np.asarray(run.level, dtype=np.int16).tobytes())
    # bursts 3 s on, 3 s off: what perception does on the manager's overrun fallback (the scenario above has no
    # burst within a window of the end of another). Hashed only for a controller that issues one, so that a
    # recording of one that does not (step) keeps its fingerprint
    bursts = GraphScenario("fingerprint_bursts", 30.0, 20.0, ((0.0, 0), *((6.0 + 3.0 * i, 2 * (1 - i % 2))
                                                                          for i in range(7))), ((0.0, 30.0),))
    runs = simulate_controller(bursts, plant, name, seeds=(0, 1), levels=levels)
    if any(run.overruns for run in runs):
        for run in runs:
            h.update(np.asarray(run.level, dtype=np.int16).tobytes())
    return h.hexdigest()[:16]


def _recorded_fingerprint(runs_json: dict, name: str) -> str:
    """The fingerprint every ``name`` column was recorded under; 'mixed' when the code changed between them."""
    seen = {r.get("fingerprint") or "unknown" for cols in runs_json["runs"].values()
            for c, r in cols.items() if c == name and r.get("ok")}
    return seen.pop() if len(seen) == 1 else "mixed"


def _rounds(runs_json: dict) -> list[dict]:
    """Every round of a recording: ``runs`` (the first) and ``rounds`` (``bench/contention.py --rounds``)."""
    return [runs_json["runs"], *runs_json.get("rounds", [])]


def _frame_delivery(runs_json: dict, patterns: dict, cam: str) -> float:
    """Share of camera frames that reach the perception node at all (large frames over a loaded machine get
    lost between replay and node): processed / offered, the largest over the fixed-level runs (the fastest
    level loses the fewest frames to its own latency)."""
    shares = []
    for pname, cols in ((pn, c) for rnd in _rounds(runs_json) for pn, c in rnd.items()):
        p = patterns[pname]
        if f"{p['width']}x{p['height']}" != cam:
            continue
        for col, run in cols.items():
            if not run.get("ok") or not col.startswith("L") or len(run["t_s"]) < 2:
                continue
            lat = np.asarray(run["latency_ms"])
            offered = (run["t_s"][-1] - run["t_s"][0]) * p["fps"]
            if offered > 0:
                shares.append(min(1.0, len(lat) / offered))
    return round(float(np.max(shares)), 3) if shares else 1.0


def extract_realism_data(runs_json: dict, cap: int = 900, switch_default: float = DEFAULT_SWITCH_FACTOR) -> dict:
    """The compact extract of a ``bench/contention.py`` recording that :func:`realism_setup` learns from.

    From the fixed-level columns: each level's latencies (ms, 0.01 ms, in recorded order) per number of busy
    processes in force when the frame started, pooled per camera size, at most ``cap`` per cell and round (the
    first ones of each run, so runs of consecutive frames survive). From the managed columns: the first-frame-
    after-a-switch factor (median of that frame's latency over its cell's median) and the *real* scores
    the simulator is checked against (miss rate, switches per minute, accuracy), never used for learning.
    A recording of several rounds (``--rounds``) gives all of them: its fixed columns all teach the plant (one
    round's slow minutes made a plant slower than what the managed runs of the same hour met), and each real
    score is over every round of its column (frames and seconds pooled).
    """
    patterns = {p["name"]: p for p in runs_json["patterns"]}
    plants: dict[str, dict] = {}
    out_patterns: dict[str, dict] = {}
    raw: dict[str, dict[int, dict[int, list[np.ndarray]]]] = {}
    num_levels = 0
    rounds = _rounds(runs_json)
    # pattern by pattern, its rounds side by side: the cap then keeps every round of the first patterns
    by_pattern = [(pn, rnd[pn]) for pn in runs_json["runs"] for rnd in rounds if pn in rnd]
    cap *= len(rounds)
    for pname, cols in by_pattern:
        p = patterns[pname]
        cam = f"{p['width']}x{p['height']}"
        cells = raw.setdefault(cam, {})
        for col, run in cols.items():
            if not run.get("ok") or not col.startswith("L"):
                continue
            lat = np.asarray(run["latency_ms"])
            lvl = np.asarray(run["level"])
            start = np.asarray(run["t_s"]) - lat / 1000.0
            busy = _run_busy(run, start)
            num_levels = max(num_levels, int(lvl.max()) + 1)
            for b in np.unique(busy):
                m = (busy == b)
                m[0] = False  # the node's very first frame (cold caches) is not the level's behaviour
                cells.setdefault(int(b), {}).setdefault(int(col[1:]), []).append(lat[m])
    for cam, cells in raw.items():
        plants[cam] = {"num_levels": num_levels, "busy": {
            str(b): {str(lv): [round(float(x), 2) for x in np.concatenate(parts)[:cap]]
                     for lv, parts in sorted(levels.items())} for b, levels in sorted(cells.items())}}
    for cam, plant_d in plants.items():
        plant = LearnedPlant.from_json(plant_d)
        ratios = []
        for pname, cols in by_pattern:
            p = patterns[pname]
            if f"{p['width']}x{p['height']}" != cam:
                continue
            for col in ("joint", "step"):
                run = cols.get(col)
                if not run or not run.get("ok"):
                    continue
                lat, lvl = np.asarray(run["latency_ms"]), np.asarray(run["level"])
                busy = _run_busy(run, np.asarray(run["t_s"]) - lat / 1000.0)
                for i in np.flatnonzero(lvl[1:] != lvl[:-1]) + 1:
                    ratios.append(lat[i] / float(np.median(plant.cell(int(lvl[i]), int(busy[i])))))
        plant_d["switch_factor"] = round(float(np.median(ratios)), 3) if len(ratios) >= 5 else switch_default
        plant_d["switches_seen"] = len(ratios)
        plant_d["frame_delivery"] = _frame_delivery(runs_json, patterns, cam)
        # what perception measured at start-up in the managed runs (the same machine: the median of each level)
        profiles = [run["level_profile_ms"] for pname, cols in by_pattern for col, run in cols.items()
                    if col in ("joint", "step") and run.get("ok") and run.get("level_profile_ms")
                    and f"{patterns[pname]['width']}x{patterns[pname]['height']}" == cam
                    and len(run["level_profile_ms"]) == num_levels]
        if profiles:
            plant_d["level_profile_ms"] = [round(float(x), 3) for x in np.median(np.asarray(profiles), axis=0)]
    for pname, cols in runs_json["runs"].items():
        p = patterns[pname]
        real = {}
        for col in cols:
            runs = [rnd[pname][col] for rnd in rounds if col in rnd.get(pname, {}) and rnd[pname][col].get("ok")]
            if not runs:
                continue
            misses = frames = switches = 0
            dur = level_sum = 0.0
            for run in runs:
                lat, lvl = np.asarray(run["latency_ms"]), np.asarray(run["level"])
                misses += int(np.sum(lat > _target(p, np.asarray(run["frame_t_s"]))))
                frames += len(lat)
                switches += int(np.sum(lvl[1:] != lvl[:-1]))
                dur += float(run["t_s"][-1] - run["t_s"][0])
                level_sum += float(np.sum(lvl))
            real[col] = {"miss_rate": round(misses / frames, 4), "frames": frames,
                         "switches_per_min": round(60.0 * switches / dur, 2),
                         "mean_level": round(level_sum / frames, 3), "rounds": len(runs),
                         "loadavg": [runs[0].get("loadavg_before"), runs[-1].get("loadavg_after")]}
        ok = [cols[c] for c in ("joint", "step", *sorted(cols)) if c in cols and cols[c].get("ok")]
        if not ok:
            continue
        ref = ok[0]
        out_patterns[pname] = {"camera": f"{p['width']}x{p['height']}", "duration_s": p["duration_s"], "fps": p["fps"],
                               "busy": ref.get("busy_changes") or [[0.0, 0]], "targets": p["targets"], "real": real}
    return {"format": 1, "what": "per-level latency samples per number of busy processes, and real scores, "
                                 "extracted by offline.sim.extract_realism_data from a bench/contention.py run",
            "family": runs_json.get("family"),
            "policy_fingerprint": {n: _recorded_fingerprint(runs_json, n) for n in ("joint", "step")},
            "plants": plants, "patterns": out_patterns}


def realism_scenarios(data: dict) -> dict[str, tuple[GraphScenario, LearnedPlant]]:
    """Each recorded pattern as a scenario, with the plant of its camera size."""
    plants = {cam: LearnedPlant.from_json(d) for cam, d in data["plants"].items()}
    out = {}
    for name, p in data["patterns"].items():
        out[name] = (GraphScenario(name, float(p["duration_s"]), float(p["fps"]),
                                   tuple((float(t), int(n)) for t, n in p["busy"]),
                                   tuple((float(t), float(v)) for t, v in p["targets"])), plants[p["camera"]])
    return out


def simulate_controller(scn: GraphScenario, plant: LearnedPlant, controller: str, seeds: Sequence[int] = (0, 1, 2, 3),
                        levels: Sequence[LevelSpec] | None = None, tagging: str = "true") -> list[GraphRun]:
    """``controller``: ``joint`` / ``step`` (the manager's policy with the generic_cpu params) or ``L<n>``."""
    levels = list(levels) if levels is not None else bench_levels()
    runs = []
    for s in seeds:
        if controller.startswith("L"):
            runs.append(simulate_graph(scn, plant, None, fixed_level=int(controller[1:]), seed=s))
            continue
        cfg, rate = bench_policy_config()
        pol = make_policy(controller, levels, config=cfg)
        if plant.level_profile_ms is not None:  # the graph's start-up profile (ManagerNode._on_level_profile)
            pol.use_measured_profile(plant.level_profile_ms)
        runs.append(simulate_graph(scn, plant, pol, decision_rate_hz=rate, seed=s, tagging=tagging))
    return runs


def agreement(data: dict, controllers: Sequence[str] = ("joint", "step"), seeds: Sequence[int] = tuple(range(6)),
              tagging: str = "true") -> list[dict]:
    """Sim vs real per pattern and controller: the realism figure (miss rate, switches/min, mean level)."""
    rows = []
    for name, (scn, plant) in realism_scenarios(data).items():
        for col in controllers:
            real = data["patterns"][name]["real"].get(col)
            if real is None:
                continue
            runs = simulate_controller(scn, plant, col, seeds=seeds, tagging=tagging)
            rows.append({"pattern": name, "controller": col, "real_miss": real["miss_rate"],
                         "sim_miss": float(np.mean([r.miss_rate for r in runs])),
                         "sim_miss_sd": float(np.std([r.miss_rate for r in runs])),
                         "real_sw_min": real["switches_per_min"],
                         "sim_sw_min": float(np.mean([r.switches_per_min for r in runs])),
                         "real_level": real["mean_level"], "sim_level": float(np.mean([r.level.mean() for r in runs]))})
    return rows


def format_agreement(rows: Sequence[dict]) -> str:
    head = (f"{'pattern':<14} {'controller':<10} {'real miss %':>11} {'sim miss %':>14} {'real sw/min':>11} "
            f"{'sim sw/min':>10} {'real lvl':>8} {'sim lvl':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['pattern']:<14} {r['controller']:<10} {100 * r['real_miss']:11.1f} "
                     f"{100 * r['sim_miss']:8.1f} ±{100 * r['sim_miss_sd']:4.1f} {r['real_sw_min']:11.1f} "
                     f"{r['sim_sw_min']:10.1f} {r['real_level']:8.2f} {r['sim_level']:7.2f}")
    if rows:
        err = [abs(r["real_miss"] - r["sim_miss"]) for r in rows]
        lines.append(f"|sim − real| miss rate: mean {100 * float(np.mean(err)):.1f} points, "
                     f"max {100 * float(np.max(err)):.1f} points over {len(rows)} runs (sim: mean over seeds)")
    return "\n".join(lines)
