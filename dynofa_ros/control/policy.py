"""Runtime manager decisions: which sub-network level runs, and at which CPU/GPU frequency.

This is the one file that answers "where is the level chosen". It is pure Python (no rclpy), and
deterministic: the same sequence of :class:`PolicyInputs` always gives the same decisions, so every rule
is unit-tested without ROS and the simulator (``sim.py``) scores exactly what the manager node runs.

Two policies share one interface, ``policy.decide(inputs) -> Decision``:

``step``
    The Dynamic-OFA paper's runtime manager: one level down when the measured latency misses the target,
    one level up when the measured latency, scaled by the profiled ratio of the next level, still meets
    it; frequencies stay at maximum.
``joint``
    Ours, designed for a deadline-miss budget (``miss_budget``, default 2 % of frames): per-level windows
    of measured latency (each sample carries the level that produced it), planned on their
    ``1 - miss_budget`` quantile, transferred to levels without recent samples through the profile
    (:mod:`dynofa_ros.control.tail_estimate`). It drops *at once* when the running level misses more often than
    the budget allows, to the most accurate level whose predicted tail fits ``target · (1 - margin)``;
    it goes up only as a *probe*: after ``probe_quiet_s`` without a violation that moved it down (at the lowest
    allowed level nothing moves: a spike there delays no probe), to a level predicted to
    fit ``target · (1 - margin - up_hysteresis)``; a probe that fails blocks that level for
    ``probe_quiet_s · 2^(failures-1)`` (at most ``probe_backoff_max_s``), so a level that cannot hold
    the deadline is not retried every few seconds (no limit cycle). When a slowdown that drove it down
    ends, it returns at once to the level that held until the slowdown began, and while that return is
    recent the first late frame sends it back to the level that held through the slowdown (bursts of
    contention come and go every few seconds). The same tail decides which CPU/GPU
    frequency pairs still meet the target; among them the one with the least modelled *energy per
    frame* runs (:meth:`Policy.frame_energy_j`: busy power over the expected latency plus idle power
    until the next frame), not the one with the least busy power.

Rules common to both, in priority order (the first that applies wins):

1. thermal hard limit: a CPU or GPU temperature ≥ ``thermal_hard_c`` → level 0 at the lowest
   frequencies, held until a fresh reading is below ``thermal_hard_c - thermal_hysteresis_c``;
   it overrides every target, floor and dwell;
2. stale inputs: an input that has been received, but not within ``stale_timeout_s`` → the safe default
   (``safe_level`` at maximum frequency: what the robot would run without a manager), reason names it;
3. the policy's own rule (step or joint). Joint adds: battery state of charge < ``battery_low`` →
   energy-saving mode (accuracy floor relaxed to none, frequencies capped at ``saver_freq_fraction``);
   temperature ≥ ``thermal_soft_c`` → frequencies capped at ``thermal_soft_freq_fraction``.

Latency-vs-frequency model (documented, deliberately simple): a level profiled at ``L_prof`` with the
clocks at maximum takes ::

    L(f_cpu, f_gpu) = slowdown · L_prof · (fixed + cpu_fraction · f_cpu,max / f_cpu
                                                 + gpu_fraction · f_gpu,max / f_gpu)

with ``fixed = 1 - cpu_fraction - gpu_fraction`` the part that does not scale with the cores' clocks
(memory, I/O). ``slowdown`` (the joint policy's tail ratio of measured to modelled latency) absorbs
contention from other processes, thermal throttling it cannot see and the model's own error.

Units everywhere: latency in ms, time in s, CPU frequency in kHz, GPU frequency in Hz, temperature in
°C, accuracy in %, battery state of charge 0..1, load in percent.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from statistics import NormalDist
from typing import Any

import numpy as np

from .platforms import DomainPower
from .tail_estimate import FIT_MIN, TailEstimator

POLICIES = ("joint", "step")
#: Samples a level needs in its window before its own tail is trusted over the transferred one.
MIN_OWN_SAMPLES = 5
#: With fewer than ``MIN_OWN_SAMPLES`` frames at the running level, one frame above ``target`` times this ends the
#: stay; two late frames of any height do anyway (the binomial count). Real AMD set (stop 35): the first late frame
#: of contention was 1.44x the target at the median, a lone stall of an otherwise idle machine 1.07x (90th
#: percentile 1.25x); two probes that held were undone by one frame at 1.11x and 1.20x.
FEW_FRAMES_LATE_FACTOR = 1.3
#: Seconds of the newest samples that describe "now" when a violation asks where to drop to.
RECENT_S = 1.0
#: Newest samples whose median says how slow "now" is when a violation asks where to drop to.
DROP_RECENT_SAMPLES = 5
#: Late frames in a row at the running level that prove a violation, and whose fastest one bounds the drop's plan.
LATE_STREAK = 2
#: Significance of the miss-count test that declares the running level in violation of the miss budget.
VIOLATION_ALPHA = 0.01
#: Late frames a stay needs before its own tail can end it (:meth:`JointPolicy.stay_tail_fails`): one is noise.
STAY_MIN_LATE = 2
#: ... and more than this times the late frames the budget explains over it. On a level exactly at the budget (p98 on
#: the target; 12 seeds, 2 minutes) its share of the frames fell in 5 seeds at 1.5 (by 0.07-0.28) and in 10 at 1.0;
#: one at 3.5 % over an 8 s window at 30 frames a second is caught with probability ~0.6 per window.
STAY_LATE_FACTOR = 1.5
#: Late frames a level's record of slowdowns it held through needs before it counts against that level
#: (:meth:`JointPolicy.burst_record_fails`).
BURST_MIN_LATE = 3
#: A level held this many windows without a violation has its failure count cleared.
HOLD_CONFIRM_WINDOWS = 4
#: A blocked level is released early when the predicted ratio falls below this share of the one it failed at.
UNBLOCK_RATIO = 0.8
#: Newest result intervals kept: their median is the frame period (the energy per frame's cycle), their count over
#: their span the rate results arrive at (:meth:`Policy.frames_to_trust`).
PERIOD_WINDOW = 31
#: The fewest of those intervals the period or the rate is computed from.
PERIOD_MIN_SAMPLES = 5
#: With fewer than ~1/miss_budget own samples, a probe only goes to levels predicted within this share of the plan.
PROBE_HEADROOM = 0.5
#: Within ``accuracy_slack``, the running level gives way only to one saving at least this share of energy.
ENERGY_SWITCH_GAIN = 0.05
#: Newest samples of the running level that must all be faster than its older ones to call an improvement.
CHANGE_RECENT = 6
#: ... and their median at most this share of the older median (noise moves it less; contention's end more).
CHANGE_FACTOR = 0.7
#: ... compared with the samples of this many seconds before them (the condition just before, not the window).
CHANGE_BEFORE_S = 2.0
#: CPU load (percentage points) that a slowdown must have added over the held level's load for the load's fall to
#: count as its end (:meth:`JointPolicy.load_fell_back`); it has fallen back within half of this
LOAD_RISE = 25.0
#: ... and the running level's newest frames must be at most this times the median of the ones before them
LOAD_CONFIRM = 0.85
#: The standard normal's 90th percentile: a log-normal's median is this many σ above its 10th percentile.
Z90 = NormalDist().inv_cdf(0.9)


class PolicyConfigError(ValueError):
    """A policy setting is out of range or inconsistent with another; the message names the rule."""


# ---------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class LatencySample:
    """One measured inference latency and the level it was measured at."""

    latency_ms: float
    level: int
    stamp: float  # s, when it was received (same clock as PolicyInputs.now)


@dataclass(frozen=True)
class Reading:
    """A scalar input with the time it was received, so the policy can tell fresh from stale."""

    value: float
    stamp: float


@dataclass(frozen=True, kw_only=True)
class DeviceReadings:
    """The device's readings, shared by every app on it (keyword-only, so the inputs that extend it keep their
    own fields first). ``None`` until first received."""

    cpu_load: Reading | None = None
    gpu_load: Reading | None = None
    cpu_temp_c: Reading | None = None
    gpu_temp_c: Reading | None = None
    battery_soc: Reading | None = None


@dataclass(frozen=True)
class PolicyInputs(DeviceReadings):
    """Everything a decision may depend on: the app's target, floor and latency samples, the device readings."""

    now: float
    target_latency_ms: float | None = None   # None or 0: no latency target
    min_accuracy: float | None = None        # None or 0: no accuracy floor
    latencies: tuple[LatencySample, ...] = ()  # samples received since the previous decision
    active_level: int | None = None


@dataclass(frozen=True)
class LevelSpec:
    """What the policy knows of one level: accuracy (%) and latency profiled at maximum clocks (ms)."""

    accuracy: float | None
    latency_ms: float


@dataclass(frozen=True)
class Decision:
    level: int
    cpu_freq_khz: int | None   # None: CPU frequency not controlled (no frequency list)
    gpu_freq_hz: int | None    # None: GPU frequency not controlled
    reason: str
    mode: str = "normal"       # normal | saver | thermal_soft | thermal_hard | stale | no_target | infeasible
    predicted_latency_ms: float | None = None
    slowdown: float = 1.0


@dataclass(frozen=True)
class OverrunFallback:
    """A standing instruction for perception: a frame at ``from_level`` that takes longer than ``limit_ms``
    switches it to ``to_level`` at once, before the manager has heard of that frame (``dynofa/overrun_fallback``).

    Why: the frame after a late one starts as soon as the late one ends, while the manager's drop needs a round
    trip (sample → decision → command: 4-11 ms on a 2-core machine under contention). At 20 fps the next frame
    then ran at the level that had just missed: every burst of contention cost two late frames where the
    decision was already known to be a drop (real bursty run, stop 45: 12 of 16 late frames were such pairs).
    Only issued where the policy's own rule drops on a single late frame to ``to_level`` or below (a slowdown
    that just ended is expected back, :meth:`JointPolicy.slowdown_expected`), so perception never moves where
    the manager would not. One-shot: perception forgets it once used; the manager issues the next one.
    """

    from_level: int
    limit_ms: float
    to_level: int


# ---------------------------------------------------------------------------------------------- config
def _tunable(default: float, lo: float, hi: float, description: str) -> Any:
    """A PolicyConfig field with its allowed range and description attached once: ``validate`` checks the range
    and the manager node declares the parameter (range and description in its ParameterDescriptor) from it."""
    return field(default=default, metadata={"range": (lo, hi), "description": description})


@dataclass(frozen=True)
class PolicyConfig:
    """Tunables of both policies, each with its default, range and description (the manager's parameters)."""

    miss_budget: float = _tunable(0.02, 0.001, 0.5, "joint: share of frames allowed to miss the target; the plan "
                                                    "uses this tail quantile")
    latency_margin: float = _tunable(0.05, 0.0, 0.9, "joint: plan the latency tail for target·(1 - margin)")
    up_hysteresis: float = _tunable(0.03, 0.0, 0.9, "joint: a probed level's tail must fit "
                                                    "target·(1 - margin - up_hysteresis)")
    min_dwell_s: float = _tunable(2.0, 0.0, 3600.0, "joint: minimum seconds before a level change upwards (drops "
                                                    "are immediate)")
    freq_min_dwell_s: float = _tunable(0.5, 0.0, 3600.0, "joint: seconds before clocks may be lowered again "
                                                         "(raising is immediate)")
    window_s: float = _tunable(8.0, 0.5, 600.0, "joint: seconds of latency samples kept per level")
    probe_quiet_s: float = _tunable(4.0, 0.0, 3600.0, "joint: seconds without a violation that dropped the level "
                                                      "before probing a more accurate level")
    probe_backoff_max_s: float = _tunable(60.0, 0.0, 86400.0, "joint: longest block of a level after repeated "
                                                              "failed probes (doubles per failure)")
    accuracy_slack: float = _tunable(0.0, 0.0, 100.0, "joint: accuracy points (top-1 %) the manager may give up "
                                                      "below the most accurate level that fits, for less energy "
                                                      "per frame (0: accuracy first)")
    overhead_ms: float = _tunable(0.0, 0.0, 1000.0, "joint: per-frame ms that do not grow with the network "
                                                    "(decode, pre/post-processing)")
    prior_log_spread: float = _tunable(0.0, 0.0, 2.0, "joint: σ of log latency assumed until about 10 samples of "
                                                      "a level show it (0 = trust the profile; 0.3 on a shared CPU)")
    stale_timeout_s: float = _tunable(2.0, 0.01, 3600.0, "an input received once but not for this long → safe "
                                                         "default")
    safe_level: int = _tunable(0, 0, 255, "level used when inputs go stale")
    measure_first: int = _tunable(0, 0, 1, "joint: 1 = with a target but no latency measured on this machine "
                                           "yet, run the lowest allowed level until samples arrive and probe up "
                                           "from there (a profile made on another machine); without a target yet, "
                                           "wait probe_quiet_s after the first samples for one before the most "
                                           "accurate level; 0 = plan the first level from the profile")
    load_return: int = _tunable(0, 0, 1, "joint: 1 = a fall of the CPU load back to where it was before a slowdown "
                                         "(with the frames agreeing) also ends it, for returns where contention "
                                         "slows the frames too little to show its end (a GPU fed by a busy CPU)")
    battery_low: float = _tunable(0.20, 0.0, 1.0, "state of charge (0..1) below which the energy-saving mode "
                                                  "starts")
    battery_hysteresis: float = _tunable(0.05, 0.0, 1.0, "energy-saving mode ends above battery_low + this")
    saver_freq_fraction: float = _tunable(0.6, 0.05, 1.0, "energy-saving mode: clocks capped at this fraction of "
                                                          "maximum")
    thermal_soft_c: float = _tunable(80.0, -50.0, 200.0, "°C: at or above, clocks capped at "
                                                         "thermal_soft_freq_fraction")
    thermal_hard_c: float = _tunable(90.0, -50.0, 200.0, "°C: at or above, level 0 at the lowest clocks, over "
                                                         "every target")
    thermal_hysteresis_c: float = _tunable(5.0, 0.0, 100.0, "°C below a limit a reading must fall before the "
                                                            "limit is released")
    thermal_soft_freq_fraction: float = _tunable(0.7, 0.05, 1.0, "clock cap at the soft thermal limit, fraction "
                                                                 "of maximum")
    cpu_fraction: float = _tunable(0.2, 0.0, 1.0, "clock scaling: share of a level's latency that scales with "
                                                  "1/f_cpu")
    gpu_fraction: float = _tunable(0.7, 0.0, 1.0, "clock scaling: share of a level's latency that scales with "
                                                  "1/f_gpu")

    def plan_ms(self, target: float) -> float:
        """What a level's predicted tail must fit to be kept: ``target · (1 - latency_margin)``."""
        return target * (1.0 - self.latency_margin)

    def probe_ms(self, target: float) -> float:
        """What a level's predicted tail must fit to be probed into: the plan less ``up_hysteresis``, so that a
        level which only just fits is not entered on one decision's noise and left on the next."""
        return target * (1.0 - self.latency_margin - self.up_hysteresis)

    def validate(self, num_levels: int | None = None) -> PolicyConfig:
        """Raise :class:`PolicyConfigError` naming the first broken rule; return self when fine."""
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise PolicyConfigError(f"{f.name} must be a finite number, got {v!r}")
            lo, hi = f.metadata["range"]
            if f.name == "safe_level":
                continue  # checked against the family below, which says more than the parameter's range
            if not lo <= v <= hi:
                raise PolicyConfigError(f"{f.name}={v} is outside [{lo}, {hi}]")
        if self.latency_margin + self.up_hysteresis >= 0.95:
            raise PolicyConfigError("latency_margin + up_hysteresis must stay below 0.95")
        if self.thermal_soft_c >= self.thermal_hard_c:
            raise PolicyConfigError(f"thermal_soft_c ({self.thermal_soft_c}) must be below thermal_hard_c "
                                    f"({self.thermal_hard_c})")
        if self.cpu_fraction + self.gpu_fraction > 1.0 + 1e-9:
            raise PolicyConfigError(f"cpu_fraction + gpu_fraction = {self.cpu_fraction + self.gpu_fraction:.3f} "
                                    "must not exceed 1")
        if self.safe_level < 0 or (num_levels is not None and self.safe_level >= num_levels):
            raise PolicyConfigError(f"safe_level={self.safe_level} is not a level of the family "
                                    f"(0..{(num_levels or 1) - 1})")
        return self


# ---------------------------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ClockScaling:
    """Latency of a level at given clocks, relative to its profile at maximum clocks (see module doc)."""

    cpu_fraction: float
    gpu_fraction: float
    cpu_max_khz: int | None
    gpu_max_hz: int | None

    def factor(self, cpu_khz: float | None, gpu_hz: float | None) -> float:
        fixed = 1.0 - self.cpu_fraction - self.gpu_fraction
        cpu = 1.0 if cpu_khz is None or not self.cpu_max_khz else self.cpu_max_khz / max(cpu_khz, 1.0)
        gpu = 1.0 if gpu_hz is None or not self.gpu_max_hz else self.gpu_max_hz / max(gpu_hz, 1.0)
        return fixed + self.cpu_fraction * cpu + self.gpu_fraction * gpu


def binomial_tail(n: int, k: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p), summed in log space (n up to thousands; scipy is not a dependency)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    below = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq)
                for i in range(k))
    return max(0.0, 1.0 - below)


def one_frame_proves(latencies: Sequence[float], target: float) -> bool:
    """Among fewer than ``MIN_OWN_SAMPLES`` frames of a stay, one is far enough above ``target`` to end it.

    Why a line above the miss line: the first frames of a probe are where a lone stall (a page fault, another
    process's wake-up, a GC pause) ends a stay that would have held, and one frame cannot tell a stall from
    contention by whether it misses, only by how much (``FEW_FRAMES_LATE_FACTOR``). A level that really is too
    slow by less pays one more late frame: the second ends the stay through the binomial count.
    """
    return 0 < len(latencies) < MIN_OWN_SAMPLES and max(latencies) > target * FEW_FRAMES_LATE_FACTOR


def default_power_model(freqs: Sequence[int], dyn_max_w: float) -> DomainPower | None:
    """Generic ``f·V²`` model with a straight V-f line (0.6..1.0 V) when the board gives none."""
    if not freqs:
        return None
    return DomainPower(tuple(sorted(freqs)), v_min=0.6, v_max=1.0, leak_w=0.0, dyn_max_w=dyn_max_w)


def snap_down(freqs: Sequence[int], cap: float) -> int:
    """Highest listed frequency ≤ cap (the lowest one if none is)."""
    i = bisect.bisect_right(freqs, cap + 1e-6)
    return freqs[max(i - 1, 0)]


def _fmt_f(khz: int | None, hz: int | None) -> str:
    parts = []
    if khz is not None:
        parts.append(f"CPU {khz / 1000:.0f} MHz")
    if hz is not None:
        parts.append(f"GPU {hz / 1e6:.0f} MHz")
    return ", ".join(parts) or "clocks not controlled"


# ---------------------------------------------------------------------------------------------- policies
@dataclass
class _State:
    level: int
    cpu: int | None
    gpu: int | None
    last_level_change: float = -math.inf
    last_freq_change: float = -math.inf
    slowdown: float = 1.0
    thermal_hard: bool = False
    thermal_soft: bool = False
    saver: bool = False
    last_latency: float | None = None      # time of the newest latency sample
    last_measured_ms: float | None = None  # newest latency sample, and its level
    last_measured_level: int | None = None
    freq_history: list[tuple[float, int | None, int | None]] = field(default_factory=list)


class Policy:
    """Common part of both policies: inputs bookkeeping, safety rules, frequency lists."""

    name = "base"
    #: The manager also decides when a sample that missed the target arrives, not only on its timer: a drop
    #: is due the moment the evidence for it exists, and at 20 fps a 10 Hz timer lets one more frame start at
    #: the level that misses (SIMULATED on the recorded plants, 6 seeds: bursty misses 3.6 → 2.6 %). The
    #: paper's ``step`` decides on its period only, as published.
    decides_on_miss = False
    #: ... and when the application changes its target: the new target is known before any frame misses it
    #: (feed-forward). ``step`` decides on its period only.
    decides_on_target = False
    #: level costs measured on this machine that the policy plans with (:meth:`use_measured_profile`); None: the file's
    measured_profile: list[float] | None = None
    #: what perception may do on its own after the newest decision (:class:`OverrunFallback`); None: nothing
    overrun: OverrunFallback | None = None

    def __init__(self, levels: Sequence[LevelSpec], cpu_freqs_khz: Sequence[int] = (),
                 gpu_freqs_hz: Sequence[int] = (), config: PolicyConfig | None = None,
                 cpu_power: DomainPower | None = None, gpu_power: DomainPower | None = None):
        if not levels:
            raise PolicyConfigError("the family has no levels")
        self.levels = list(levels)
        self.config = (config or PolicyConfig()).validate(len(self.levels))
        self.cpu_freqs = sorted({int(f) for f in cpu_freqs_khz if f > 0})
        self.gpu_freqs = sorted({int(f) for f in gpu_freqs_hz if f > 0})
        self.cpu_power = cpu_power or default_power_model(self.cpu_freqs, 3.0)
        self.gpu_power = gpu_power or default_power_model(self.gpu_freqs, 6.0)
        self.clock_scaling = ClockScaling(self.config.cpu_fraction, self.config.gpu_fraction,
                                  self.cpu_freqs[-1] if self.cpu_freqs else None,
                                  self.gpu_freqs[-1] if self.gpu_freqs else None)
        self.state = _State(level=len(self.levels) - 1, cpu=self.max_cpu(), gpu=self.max_gpu())
        self._result_stamps: deque[float] = deque(maxlen=PERIOD_WINDOW + 1)

    # -- helpers
    def max_cpu(self) -> int | None:
        return self.cpu_freqs[-1] if self.cpu_freqs else None

    def max_gpu(self) -> int | None:
        return self.gpu_freqs[-1] if self.gpu_freqs else None

    def reconfigure(self, config: PolicyConfig) -> None:
        """Apply new tunables live; learned state (slowdown, level, dwell clock) is kept."""
        self.config = config.validate(len(self.levels))
        self.clock_scaling = replace(self.clock_scaling, cpu_fraction=config.cpu_fraction,
                                     gpu_fraction=config.gpu_fraction)

    def use_measured_profile(self, latencies_ms: Sequence[float]) -> list[float] | None:
        """Plan with level costs measured on this machine (the perception node's start-up profile) instead of
        the family file's; the latencies used, or None where the policy plans with the file's table only.

        ``step`` keeps the file's table: the Dynamic-OFA paper's manager scales one measured latency by the
        offline profile, and the baseline stays as published."""
        return None

    def predict_ms(self, level: int, cpu_khz: int | None, gpu_hz: int | None, slowdown: float | None = None) -> float:
        s = self.state.slowdown if slowdown is None else slowdown
        scale = self.clock_scaling.factor(cpu_khz, gpu_hz)
        return s * (self.levels[level].latency_ms + self.config.overhead_ms) * scale

    def power_w(self, cpu_khz: int | None, gpu_hz: int | None, util: float = 1.0) -> float:
        """Modelled power of the controlled rails at these clocks; ``util`` 1 while an inference runs, 0 idle."""
        p = 0.0
        if self.cpu_power is not None and cpu_khz is not None:
            p += self.cpu_power.power_w(cpu_khz, util)
        if self.gpu_power is not None and gpu_hz is not None:
            p += self.gpu_power.power_w(gpu_hz, util)
        return p

    def frame_energy_j(self, latency_ms: float, cpu_khz: int | None, gpu_hz: int | None,
                       period_s: float | None) -> float:
        """Modelled energy of one frame cycle: busy for ``latency_ms``, then idle (leakage at the set
        clocks' voltage) until the next frame, ``period_s`` after this one started.

        Why not the lowest busy power: slower clocks stretch every inference, and the rails draw leakage
        at the chosen voltage for the whole cycle either way, so the cheapest cycle is the lowest pair
        whose busy energy *and* idle floor are small; with no frame period known the cycle is the
        inference alone.
        """
        busy_s = latency_ms / 1000.0
        idle_s = max((period_s or 0.0) - busy_s, 0.0)
        return self.power_w(cpu_khz, gpu_hz) * busy_s + self.power_w(cpu_khz, gpu_hz, 0.0) * idle_s

    def floor_level(self, min_accuracy: float | None) -> int | None:
        """Lowest level whose accuracy meets the floor; None when no level does."""
        if not min_accuracy:
            return 0
        for i, lv in enumerate(self.levels):
            if lv.accuracy is not None and lv.accuracy >= min_accuracy:
                return i
        return None

    def freqs_at(self, t: float) -> tuple[int | None, int | None]:
        """Frequencies commanded at time t (the clocks a latency sample was measured under)."""
        cpu, gpu = self.max_cpu(), self.max_gpu()
        for when, c, g in self.state.freq_history:
            if when <= t:
                cpu, gpu = c, g
            else:
                break
        return cpu, gpu

    def frame_period_s(self) -> float | None:
        """Median time between the newest results (one inference cycle: the camera period, or the latency
        when frames queue); None before ``PERIOD_MIN_SAMPLES`` intervals."""
        gaps = [b - a for a, b in itertools.pairwise(self._result_stamps) if b > a]
        if len(gaps) < PERIOD_MIN_SAMPLES:
            return None
        return float(sorted(gaps)[len(gaps) // 2])

    def frames_to_trust(self) -> int:
        """Own frames a level's tail needs before it is planned close to the target: about 1/``miss_budget``
        (a 98th percentile rests on ~50 frames), but never more than 0.8 of what ``window_s`` holds at the rate
        results arrive (5 fps, 8 s: 40 frames, so 32).

        Why the rate over the newest results and not :meth:`frame_period_s`'s median gap: frames that DDS loses
        arrive in clumps. In a real 640×480 run the median gap was 0.096 s (10 fps) while 5 frames a second
        came on average; the window never held the 50 frames the median promised, and the manager sat at
        level 0 for the whole run where the hindsight oracle ran level 3 (``bench/contention.py``, stop 30).
        """
        enough = max(MIN_OWN_SAMPLES, math.ceil(1.0 / self.config.miss_budget))
        stamps = self._result_stamps
        span = max(stamps) - min(stamps) if len(stamps) > PERIOD_MIN_SAMPLES else 0.0
        if span > 0.0:
            per_window = self.config.window_s * (len(stamps) - 1) / span
            enough = min(enough, max(MIN_OWN_SAMPLES, int(0.8 * per_window)))
        return enough

    def ingest(self, inp: PolicyInputs) -> None:
        st = self.state
        for s in inp.latencies:
            if not (0 <= s.level < len(self.levels)) or not math.isfinite(s.latency_ms) or s.latency_ms <= 0:
                continue  # the node drops these already; the policy stays safe on its own
            self._result_stamps.append(s.stamp)
            st.last_latency = max(st.last_latency or -math.inf, s.stamp)
            st.last_measured_ms, st.last_measured_level = s.latency_ms, s.level
            cpu, gpu = self.freqs_at(s.stamp - s.latency_ms / 1000.0)
            self._observe(s, self.clock_scaling.factor(cpu, gpu), inp)

    def _observe(self, sample: LatencySample, clock_factor: float, inp: PolicyInputs) -> None:
        """One valid sample, with the latency model's factor for the clocks it ran under (policy hook)."""

    def _temps(self, inp: PolicyInputs) -> list[tuple[str, Reading]]:
        return [(n, r) for n, r in (("CPU", inp.cpu_temp_c), ("GPU", inp.gpu_temp_c)) if r is not None]

    def _stale(self, inp: PolicyInputs) -> list[str]:
        out = []
        timeout = self.config.stale_timeout_s
        if self.state.last_latency is not None and inp.now - self.state.last_latency > timeout:
            out.append(f"latency feedback {inp.now - self.state.last_latency:.1f} s old")
        for name, r in (("CPU load", inp.cpu_load), ("GPU load", inp.gpu_load), ("CPU temperature", inp.cpu_temp_c),
                        ("GPU temperature", inp.gpu_temp_c), ("battery", inp.battery_soc)):
            if r is not None and inp.now - r.stamp > timeout:
                out.append(f"{name} {inp.now - r.stamp:.1f} s old")
        return out

    def _commit(self, inp: PolicyInputs, d: Decision) -> Decision:
        st = self.state
        if d.level != st.level:
            st.level, st.last_level_change = d.level, inp.now
        if (d.cpu_freq_khz, d.gpu_freq_hz) != (st.cpu, st.gpu):
            st.cpu, st.gpu, st.last_freq_change = d.cpu_freq_khz, d.gpu_freq_hz, inp.now
            st.freq_history.append((inp.now, d.cpu_freq_khz, d.gpu_freq_hz))
            del st.freq_history[:-64]
        return replace(d, slowdown=st.slowdown)

    # -- the interface
    def decide(self, inp: PolicyInputs) -> Decision:
        """One decision; rules in the priority order of the module docstring."""
        self.ingest(inp)
        self.overrun = None  # set again only by a policy's own rule (a safety rule leaves perception alone)
        cfg, st = self.config, self.state
        temps = self._temps(inp)
        hottest = max(temps, key=lambda nr: nr[1].value) if temps else None
        fresh = [(n, r) for n, r in temps if inp.now - r.stamp <= cfg.stale_timeout_s]
        if hottest is not None and hottest[1].value >= cfg.thermal_hard_c:
            st.thermal_hard = True
        elif st.thermal_hard and fresh and all(r.value < cfg.thermal_hard_c - cfg.thermal_hysteresis_c
                                               for _, r in fresh) and len(fresh) == len(temps):
            st.thermal_hard = False
        if st.thermal_hard:
            t = f"{hottest[0]} {hottest[1].value:.1f} °C" if hottest else "temperature"
            cpu = self.cpu_freqs[0] if self.cpu_freqs else None
            gpu = self.gpu_freqs[0] if self.gpu_freqs else None
            return self._commit(inp, Decision(
                0, cpu, gpu, f"thermal hard limit: {t} (limit {cfg.thermal_hard_c:.0f} °C) → level 0 at lowest "
                f"clocks until below {cfg.thermal_hard_c - cfg.thermal_hysteresis_c:.0f} °C", "thermal_hard",
                self.predict_ms(0, cpu, gpu)))
        stale = self._stale(inp)
        if stale:
            lvl = cfg.safe_level
            return self._commit(inp, Decision(
                lvl, self.max_cpu(), self.max_gpu(),
                f"stale input ({'; '.join(stale)} > {cfg.stale_timeout_s:g} s) → safe default level {lvl} "
                "at maximum clocks", "stale", self.predict_ms(lvl, self.max_cpu(), self.max_gpu())))
        return self._commit(inp, self._decide(inp))

    def _decide(self, inp: PolicyInputs) -> Decision:  # pragma: no cover - abstract
        raise NotImplementedError


class StepPolicy(Policy):
    """Dynamic-OFA's runtime manager: one level per decision, frequencies at maximum."""

    name = "step"

    def _decide(self, inp: PolicyInputs) -> Decision:
        st = self.state
        cpu, gpu = self.max_cpu(), self.max_gpu()
        target = inp.target_latency_ms or None
        floor = self.floor_level(inp.min_accuracy)
        floor_lvl = len(self.levels) - 1 if floor is None else floor
        lvl = st.level
        # the newest samples measured at the level now running (older ones describe another level)
        here = [s.latency_ms for s in inp.latencies if s.level == lvl and math.isfinite(s.latency_ms)]
        if lvl < floor_lvl:
            return Decision(lvl + 1, cpu, gpu, f"step: level {lvl} is below the accuracy floor "
                            f"{inp.min_accuracy:g} % → up one", "normal")
        if target is None:
            if lvl < len(self.levels) - 1:
                return Decision(lvl + 1, cpu, gpu, "step: no latency target → up one", "no_target")
            return Decision(lvl, cpu, gpu, "step: no latency target → most accurate level", "no_target")
        if not here:
            return Decision(lvl, cpu, gpu, f"step: no new latency measured at level {lvl} → hold", "normal")
        measured = sum(here) / len(here)
        if measured > target:
            if lvl > floor_lvl:
                return Decision(lvl - 1, cpu, gpu, f"step: measured {measured:.1f} ms > target {target:g} ms "
                                f"→ down one", "normal")
            return Decision(lvl, cpu, gpu, f"step: measured {measured:.1f} ms > target {target:g} ms, but level "
                            f"{lvl} is the lowest meeting the accuracy floor → hold", "infeasible")
        if lvl + 1 < len(self.levels):
            nxt = measured * self.levels[lvl + 1].latency_ms / self.levels[lvl].latency_ms
            if nxt <= target:
                return Decision(lvl + 1, cpu, gpu, f"step: headroom (level {lvl + 1} predicted {nxt:.1f} ms ≤ "
                                f"{target:g} ms) → up one", "normal", nxt)
        return Decision(lvl, cpu, gpu, f"step: measured {measured:.1f} ms meets {target:g} ms → hold", "normal",
                        measured)


class JointPolicy(Policy):
    """Joint level + CPU/GPU frequency choice from a learned platform slowdown (module docstring)."""

    name = "joint"
    decides_on_miss = True
    decides_on_target = True

    def clock_caps(self, inp: PolicyInputs) -> tuple[float, float, list[str]]:
        """Frequency caps (as fractions of max) from energy-saving mode and the thermal soft limit."""
        cfg, st = self.config, self.state
        notes = []
        soc = inp.battery_soc.value if inp.battery_soc is not None else None
        if soc is not None and soc < cfg.battery_low:
            st.saver = True
        elif soc is None or soc >= cfg.battery_low + cfg.battery_hysteresis:
            st.saver = False
        temps = [r.value for _, r in self._temps(inp)]
        hot = max(temps) if temps else None
        if hot is not None and hot >= cfg.thermal_soft_c:
            st.thermal_soft = True
        elif hot is None or hot < cfg.thermal_soft_c - cfg.thermal_hysteresis_c:
            st.thermal_soft = False
        saver_cap = thermal_cap = 1.0
        if st.saver:
            saver_cap = cfg.saver_freq_fraction
            notes.append(f"battery {soc * 100:.0f} % < {cfg.battery_low * 100:.0f} %: energy saving, "
                         f"clocks ≤ {cfg.saver_freq_fraction:.0%}, no accuracy floor")
        if st.thermal_soft:
            thermal_cap = cfg.thermal_soft_freq_fraction
            notes.append(f"{hot:.1f} °C ≥ soft limit {cfg.thermal_soft_c:.0f} °C: clocks ≤ "
                         f"{cfg.thermal_soft_freq_fraction:.0%}")
        return saver_cap, thermal_cap, notes

    def allowed_clocks(self, cap: float) -> tuple[list[int | None], list[int | None]]:
        """Listed frequencies up to ``cap`` · maximum (snapped down; the lowest one always stays)."""
        cpus: list[int | None] = [None]
        gpus: list[int | None] = [None]
        if self.cpu_freqs:
            cpus = [f for f in self.cpu_freqs if f <= snap_down(self.cpu_freqs, cap * self.cpu_freqs[-1])]
        if self.gpu_freqs:
            gpus = [f for f in self.gpu_freqs if f <= snap_down(self.gpu_freqs, cap * self.gpu_freqs[-1])]
        return cpus, gpus

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        n = len(self.levels)
        self.tails = TailEstimator([lv.latency_ms for lv in self.levels], self.config.window_s,
                                   self.config.overhead_ms)
        self.failures = [0] * n                   # consecutive failed stays per level (probe backoff)
        self.blocked_until = [-math.inf] * n      # no probe into a level before this time
        self.fail_ratio: list[float | None] = [None] * n  # tail ratio a failed stay was entered at (record_failure)
        self.last_violation = -math.inf  # the newest violation that dropped the level: probes wait probe_quiet_s
        self.dropped_from: int | None = None  # the level that drop left: levels below it need not wait (quiet period)
        self.last_alarm = -math.inf      # the newest violation of the running level, dropped or not (at the floor)
        self.entered: tuple[int, float] | None = None  # (level, the tail ratio it was predicted at when entered)
        self.ceiling = n - 1       # the most accurate level the deadline logic allows (runs when no slack)
        self._ran: int | None = None  # level the last own decision chose (another rule may have moved it)
        self._context: tuple[float | None, float | None] | None = None
        self.replan = False  # a new target or floor: the next decision plans the running level against it
        self.learned_spread: float | None = None  # σ of log ratios within one condition, once measured
        self.improved_at: float | None = None     # when the running level last got clearly faster
        self.first_sample_at: float | None = None  # the first latency sample ever (measure_first's start-up wait)
        self.had_target = False                    # a latency target has been set at least once
        self.held_at_slowdown: tuple[int, float] | None = None  # (level, when): it held until a slowdown hit it
        self.load_before: float | None = None  # CPU load while that level held (lowest reading of its stay)
        self.loads: deque[tuple[float, float]] = deque(maxlen=64)  # (stamp, CPU load %) of distinct readings
        self.slowdown_ended: tuple[int, float] | None = None  # (level to drop to if it comes back, its end)
        # level -> (late frames, frames) of its stays through slowdowns that ended (:meth:`burst_record_fails`)
        self.burst_record: dict[int, tuple[int, int]] = {}
        self.stay_evidence: tuple[int, int] | None = None  # (late, frames) when the stay's own tail failed it
        self._memo: dict[tuple[object, ...], float] = {}  # estimates of the current samples (:meth:`_memoised`)
        self._memo_version = -1

    def reconfigure(self, config: PolicyConfig) -> None:
        super().reconfigure(config)
        self.tails.window_s, self.tails.overhead_ms = config.window_s, config.overhead_ms

    def use_measured_profile(self, latencies_ms: Sequence[float]) -> list[float] | None:
        """Only the *ratios* between levels are taken from the profile: a level without fresh samples is
        predicted from the level that ran last through them (:mod:`.tail_estimate`), and with the file's
        ratios, off by 6-12 % on another CPU, the climb after a cold start stopped short one level at a time.
        Samples stay as measured (they are stored in ms), so a profile arriving late re-reads them at once.
        The start-up wait of ``measure_first`` is kept: the profile was timed on one synthetic frame at
        whatever clocks ran at start-up, and the first camera frames say what a level costs now.

        A level measured faster than the one below it (noise between two close levels) is planned at the
        lower one's cost: the rules assume each level costs at least as much as the one below."""
        if len(latencies_ms) != len(self.levels):
            raise ValueError(f"{len(latencies_ms)} latencies for {len(self.levels)} levels")
        used = [float(x) for x in np.maximum.accumulate(np.asarray(latencies_ms, dtype=float))]
        self.levels = [replace(lv, latency_ms=ms) for lv, ms in zip(self.levels, used, strict=True)]
        self.tails.set_profile(used)
        self.measured_profile = used
        return used

    # -- estimates
    def _observe(self, sample: LatencySample, clock_factor: float, inp: PolicyInputs) -> None:
        self.tails.add(sample.level, sample.latency_ms, sample.stamp, clock_factor)
        if self.first_sample_at is None:
            self.first_sample_at = sample.stamp

    def _ref_ratios(self, since: float = -math.inf, until: float = math.inf) -> list[float]:
        """What "now" looks like: the running level's own ratios, or every level's when it has too few."""
        own = self.tails.ratios(self.state.level, since, until)
        if len(own) >= MIN_OWN_SAMPLES or (since > -math.inf and own):
            return own
        return self.tails.all_ratios(since, until)

    def tail_ratio(self, level: int) -> float:
        """Predicted ``1 - miss_budget`` quantile of ``level``'s latency ratio (1.0 before any sample).

        A level's own recent samples are evidence about that level only; the reference (the running
        level's ratios) is transferred through the profile. Both are taken when both exist and the larger
        wins: own samples from before a change of conditions must not make a level look faster than
        what runs now says, and a transfer must not hide a level's own recent misses.
        """
        return self._memoised(("tail", level), lambda: self._tail_ratio(level))

    def _memoised(self, what: tuple[object, ...], compute: Callable[[], float]) -> float:
        """``compute()``, kept until the samples change (``TailEstimator.version``) or anything else an estimate
        reads does: the running level (the reference), the spread, the budget, the overhead.

        Why: one decision asks for the same tails and the same "now" several times (the probe, the drop, the
        clocks, the accuracy slack, the reason; the multi-app manager once per combination of levels), and each
        is a few numpy quantiles over hundreds of ratios. The manager decides on the cores the inference shares,
        so its CPU time is taken from the frames.
        """
        if self._memo_version != self.tails.version:
            self._memo.clear()
            self._memo_version = self.tails.version
        cfg = self.config
        key = (*what, self.state.level, self.spread(), cfg.miss_budget, cfg.prior_log_spread, self.tails.overhead_ms)
        value = self._memo.get(key)
        if value is None:
            value = self._memo[key] = compute()
        return value

    def _tail_ratio(self, level: int) -> float:
        q = 1.0 - self.config.miss_budget
        cands = []
        if self.tails.count(level) >= MIN_OWN_SAMPLES:
            cands.append(self.tails.tail_ratio(level, q, self.spread()))
        if level != self.state.level or self.tails.count(level) < MIN_OWN_SAMPLES:
            ref = self._ref_ratios()
            if ref:
                cands.append(self.tails.tail(ref, q, self.spread()))
        vals = [c for c in cands if c is not None]
        if vals:
            return max(vals)
        # nothing measured yet on this machine: the profile's median with a typical spread around it
        return math.exp(NormalDist().inv_cdf(q) * self.spread())

    def drop_ratio(self, now: float, target: float | None = None) -> float:
        """The tail ratio of "now" when the running level violates (:meth:`_drop_ratio`), memoised."""
        return self._memoised(("drop", now, target), lambda: self._drop_ratio(now, target))

    def _drop_ratio(self, now: float, target: float | None) -> float:
        """The tail ratio of "now" when the running level violates: its window's tail, or, when the newest
        ``RECENT_S`` moved (contention just began), the newest median times the tail/median spread of the
        frames before them; with ``target``, never below the fastest of the running level's newest late
        frames when at least ``LATE_STREAK`` of them came in a row (:meth:`late_streak`).

        Why the frames before: the whole window mixes a fast past with the slow present, so its spread counts
        the slowdown a second time on top of the newest median. Planned that way, a drop at the start of
        contention went to level 0 where level 2 held, and the climb back took a probe per level. When the
        slowdown crept in before the violation, the frames before hold it too: the spread is then capped at
        the one their lower half implies (or the prior's, ``prior_log_spread``, if larger).
        """
        q = 1.0 - self.config.miss_budget
        window = self._ref_ratios()
        recent = self._ref_ratios(now - RECENT_S)[-DROP_RECENT_SAMPLES:]
        tail = self.tails.tail(window, q, self.spread()) or self.tail_ratio(self.state.level)
        if not recent:
            return tail
        before = self._ref_ratios(until=now - RECENT_S)
        if len(before) < MIN_OWN_SAMPLES:
            before = window
        median = self.tails.quantile(before, 0.5) or 1.0
        spread = (self.tails.tail(before, q, self.spread()) or tail) / median
        # a slowdown that built up before the violation was declared is in ``before`` too, in its upper half:
        # the σ of one condition is read from the lower half (median vs 10th percentile, a log-normal's
        # 1.28 σ), at least the prior's; a spread that is too small is corrected by the next violation
        low = math.log(median / (self.tails.quantile(before, 0.1) or median)) / Z90
        spread = min(spread, math.exp(NormalDist().inv_cdf(q) * max(low, self.config.prior_log_spread)))
        ratio = max(tail, (self.tails.quantile(recent, 0.5) or 1.0) * spread)
        streak = self.late_streak(target, now) if target is not None else []
        return max(ratio, min(streak)) if len(streak) >= LATE_STREAK else ratio

    def late_streak(self, target: float, now: float) -> list[float]:
        """Ratios of the running level's newest frames of the last ``RECENT_S`` that all missed ``target``.

        Why: a violation is often proven by an older miss of the window plus the first two frames of a burst.
        The newest median then still holds frames from before the burst and describes the past; a drop
        planned on it went one level down, where the next frames missed again (real bursty runs: 3-4 extra
        late frames in one burst of six). A level at which the frames that just missed would still miss is
        no place to drop to, so their fastest one bounds the plan from below. Not their median: they were
        selected for being slow, and a moderate slowdown would be overestimated. Frames of this stay only: a
        return within a second of a drop found the late frames that caused the drop and left at once.
        """
        since = max(now - RECENT_S, self.state.last_level_change)
        return self.tails.newest_late_ratios(self.state.level, target, since)

    def spread(self) -> float:
        """σ of log latency for estimates from few samples: the prior, except right after an improvement
        (``detect_improvement``), when the spread measured within one condition describes the new one."""
        if self.learned_spread is not None and self.improved_since_switch():
            return self.learned_spread
        return self.config.prior_log_spread

    def improved_since_switch(self) -> bool:
        """``detect_improvement`` fired while the running level ran: the older frames are forgotten."""
        return self.improved_at is not None and self.improved_at >= self.state.last_level_change

    def detect_improvement(self, now: float) -> list[float] | None:
        """The running level's newest ``CHANGE_RECENT`` samples all lie below the 10th percentile of the ones
        of the ``CHANGE_BEFORE_S`` before them (of the whole window when those are fewer than ``FIT_MIN``),
        their median below ``CHANGE_FACTOR`` times the older median: conditions improved. Then the ratios of
        this stay at the level from before those samples, which it forgets (what :meth:`burst_level` plans the
        next slowdown from); None when conditions did not improve.

        Why: the window (``window_s``) then mixes a slow past with a fast present, and its tail keeps the
        levels above blocked for a whole window after contention ends. Forgetting the past at the change lets
        the newest samples, with the spread measured within one condition, plan the way up. Why the frames
        just before: a burst of contention 2-4 s long follows an idle past in the same window, whose 10th
        percentile the gap after the burst does not undercut; judged against the window, the real bursty run
        saw no gap and sat at level 0 from the first burst on.
        """
        lvl = self.state.level
        dq = self.tails.samples[lvl]
        if len(dq) < FIT_MIN + CHANGE_RECENT:
            return None
        first = dq[-CHANGE_RECENT].stamp
        if now - first > RECENT_S:
            return None
        ratios = self.tails.ratios(lvl)
        recent, older = ratios[-CHANGE_RECENT:], ratios[:-CHANGE_RECENT]
        just_before = self.tails.ratios(lvl, first - CHANGE_BEFORE_S, first)
        if len(just_before) >= FIT_MIN:
            older = just_before
        if max(recent) >= (self.tails.quantile(older, 0.1) or 0.0):
            return None
        if float(np.median(recent)) > CHANGE_FACTOR * float(np.median(older)):
            return None  # faster than the slowest old frames, but not by enough to be a new condition
        slow = self.tails.ratios(lvl, self.state.last_level_change, first)
        self.tails.forget_older_than(first)
        return slow

    def learn_spread(self) -> None:
        """The running level's σ of log ratios once its window holds enough frames (2 · ``FIT_MIN``)."""
        lvl = self.state.level
        ratios = self.tails.ratios(lvl)
        if len(ratios) >= 2 * FIT_MIN:
            self.learned_spread = float(np.std(np.log(ratios), ddof=1))

    # -- the decision
    def violates(self, target: float, now: float) -> bool:
        """The running level misses more often than the budget allows, with confidence ``1 - VIOLATION_ALPHA``.

        A binomial test on the misses of the whole window and of the newest ``RECENT_S`` (a sudden slowdown
        shows there first): a 2 % budget over 160 frames tolerates 3 misses of noise, but 3 misses out of
        the newest 20 frames are a change. ``LATE_STREAK`` late frames in a row prove it sooner: at a level
        whose frames miss at the budget's rate, two in a row come once in 1/budget² frames (2500), while
        every frame of a burst of contention does. Right after a slowdown ended (:meth:`slowdown_expected`) it
        is expected back, and its first late frame is enough: a reactive manager pays the
        frames between a burst's start and its drop, and bursts come every few seconds. With fewer than
        ``MIN_OWN_SAMPLES`` frames a count proves little, so one frame far above the target is enough
        (:func:`one_frame_proves`).

        The counts cover the current stay at the level only. The window (``window_s``) still holds the frames of
        an earlier stay that ended less than ``window_s`` ago, often in the late frames that drove the manager
        down; counted again, they failed the next probe into that level before its own frames were in (real
        ramp run: a probe to level 3 dropped 0.1 s after it, on two late frames 7.9 s old).
        """
        st = self.state
        lvl = st.level
        self.stay_evidence = None
        n = self.tails.count(lvl)
        if n >= MIN_OWN_SAMPLES:
            late = len(self.late_streak(target, now))
            if late >= LATE_STREAK or (late and self.slowdown_expected(now) is not None):
                return True
        stay = st.last_level_change  # frames of an earlier stay are no evidence against this one (docstring)
        lat = self.tails.latencies(lvl, stay)
        if lat:
            recent = self.tails.latencies(lvl, max(now - RECENT_S, stay))
            if self.misses_too_often(lat, target) or self.misses_too_often(recent, target):
                return True
            if self.stay_tail_fails(target, now):
                return True
            return one_frame_proves(lat, target)
        # nothing measured at this level yet: the prediction decides (first frames, a level chosen from stale
        # data), unless the level was chosen from the newest samples a moment ago
        if now - st.last_level_change < RECENT_S:
            return False
        return self.predict_ms(lvl, st.cpu, st.gpu, self.tail_ratio(lvl)) > target

    def stay_tail_fails(self, target: float, now: float) -> bool:
        """The running level's stay fills the window (``window_s``), and its own tail over it is above ``target``
        with more late frames than the miss budget explains (``STAY_LATE_FACTOR`` times, at least ``STAY_MIN_LATE``):
        the prediction it was entered on was wrong, though the count is short of proof at ``VIOLATION_ALPHA``.

        Why: a level is entered only when its predicted tail fits the probe's bar, below the target; the binomial
        test is a far looser bar for staying (a 2 % budget over the 8 s window at 30 frames a second needs ~11
        late frames of 240, 4.6 %). A level that runs at 3-4 % passes it for as long as it runs: the demo (stops
        40 and 41) dropped to level 4 at contention's onset, predicted within the bar from the onset's first
        frames, and ran it 11-22 s at 3.3-4.5 % misses. Judged on the tail the way it was entered, the stay ends
        once its own frames are enough to trust (:meth:`frames_to_trust`). Why a whole window: a shorter stay's
        frames mix conditions (a burst and its end), and a log-normal fitted to the mixture has a tail no single
        condition has; it failed levels with no late frame at all, and on the bursty plants it cost 0.3-1.0
        points of accuracy (SIMULATED, the bench plants of stops 36-41).
        """
        st = self.state
        stay = st.last_level_change
        first = self.first_sample_at if self.first_sample_at is not None else now
        if now - max(stay, first) < self.config.window_s:  # a stay since start-up fills the window once it has run
            return False
        lat = self.tails.latencies(st.level, stay)
        late = sum(x > target for x in lat)
        explained = STAY_LATE_FACTOR * self.config.miss_budget * len(lat)
        if len(lat) < self.frames_to_trust() or late < STAY_MIN_LATE or late <= explained:
            return False
        tail = self.tails.tail(self.tails.ratios(st.level, stay), 1.0 - self.config.miss_budget, self.spread())
        if tail is None or self.predict_ms(st.level, st.cpu, st.gpu, tail) <= target:
            return False
        self.stay_evidence = (late, len(lat))
        return True

    def misses_too_often(self, latencies: Sequence[float], target: float) -> bool:
        """More of ``latencies`` miss ``target`` than the miss budget explains, at significance ``VIOLATION_ALPHA``."""
        k = sum(x > target for x in latencies)
        return k > 0 and binomial_tail(len(latencies), k, self.config.miss_budget) < VIOLATION_ALPHA

    def held_before_violation(self, target: float, now: float) -> bool:
        """The running level's frames of this stay before the newest ``RECENT_S`` held ``target`` within the miss
        budget: what violates it now is a change of conditions, not a level that could not hold them."""
        lat = self.tails.latencies(self.state.level, self.state.last_level_change, now - RECENT_S)
        return len(lat) >= MIN_OWN_SAMPLES and not self.misses_too_often(lat, target)

    def load_fell_back(self, now: float) -> str | None:
        """The CPU load, which rose by at least ``LOAD_RISE`` points after a level that held was driven down,
        is back within ``LOAD_RISE / 2`` of that level's load: the slowdown, if the load was it, has ended.
        What the load did (for the return's reason), or None.

        Why, beside :meth:`detect_improvement`: that test needs the running level's frames to get clearly
        faster, and where contention slows the running level little against its own noise it never fires. On
        a GPU (H200, 16 busy processes) level 0 ran only 1.4x slower under contention, within its idle spread,
        and the manager spent the gaps between bursts at level 0 (3.5 points below the oracle). The load is
        the monitor's (2 Hz, each reading the mean of the half second before it), so it lags the frames by up
        to a second. Off by default (``load_return``): on a 2-core CPU, where the frames show the end first, it
        did not help in real bursty runs (docs/manager.md, "Return after a slowdown").
        """
        held, before = self.held_at_slowdown, self.load_before
        if not self.config.load_return or held is None or before is None or now - held[1] > self.config.window_s:
            return None
        since = [v for t, v in self.loads if t >= held[1]]
        if len(since) < 2 or max(since) < before + LOAD_RISE or since[-1] > before + LOAD_RISE / 2:
            return None
        # ... and the frames agree, if less clearly than detect_improvement asks: right after busy processes stop,
        # a CPU stalls for a moment (real bursty runs: 40-66 ms frames at level 0), and a return made on the load
        # alone landed in that stall, missed twice and dropped for the rest of the gap
        ratios = self.tails.ratios(self.state.level)
        if len(ratios) < FIT_MIN + CHANGE_RECENT:
            return None
        recent, older = ratios[-CHANGE_RECENT:], ratios[:-CHANGE_RECENT][-2 * FIT_MIN:]
        if float(np.median(recent)) > LOAD_CONFIRM * float(np.median(older)):
            return None
        return f"CPU load {since[-1]:.0f} %, {max(since):.0f} % in the slowdown, {before:.0f} % before it"

    def slowdown_expected(self, now: float) -> int | None:
        """The level that held through the last slowdown, while its end is recent (``window_s``): the slowdown may
        come back; None otherwise.

        Its end is recorded whether the manager then returned at once (:meth:`plan_return`) or climbs by probes
        (the level that held before it is older than the window): either way the next burst's first late frame
        starts it, and the drop goes to that level at once. Planned from the newest frames instead, which still
        mostly show the gap, the drop stopped half-way and missed again (real bursty runs: level 4 → 2 → 0 and
        4 → 3 → 0, 3-4 late frames in a burst where one drop cost 1-2)."""
        back = self.slowdown_ended
        return back[0] if back is not None and now - back[1] <= self.config.window_s else None

    def overrun_fallback(self, now: float, level: int, target: float, floor: int) -> OverrunFallback | None:
        """What perception may do alone while ``level`` runs (:class:`OverrunFallback`): when a slowdown that just
        ended is expected back (:meth:`slowdown_expected`) and ``level`` has the frames :meth:`violates` needs
        to act on one late frame, its next late frame drops it to the level that held through the slowdown (the
        accuracy floor at least), the same frame this policy will then decide on; None otherwise.

        Why only then: that is the one case where the decision on a late frame is known before the frame. Its
        drop goes to that level or lower (lower when the newest frames plan lower), never higher, so perception
        and manager do not pull two ways. At other times a late frame needs more evidence (a second one, a count
        against the budget) and a reflex on one frame would move where this policy would not."""
        to = self.slowdown_expected(now)
        if to is None or max(to, floor) >= level or self.tails.count(level) < MIN_OWN_SAMPLES:
            return None
        return OverrunFallback(level, target, max(to, floor))

    def burst_level(self, now: float, target: float | None, cpu: int | None, gpu: int | None,
                    slow: Sequence[float]) -> int:
        """The level to drop to when the slowdown that just ended comes back (:meth:`slowdown_expected`): the running
        level, which held through it, or the most accurate level that its frames of the slowdown predict to hold
        it, unless that one failed lately (:meth:`probe_allowed`, the probes' backoff).

        Why not the level that held: that is what the drop at the slowdown's start planned from its first few
        frames, its worst ones, with the prior's spread; once it held, every later burst dropped there. Real
        bursty run (AMD, stop 37): two frames at 1.02-1.04x the target took level 4 to level 0, and the next five
        bursts went to level 0, whose frames then took 0.34-0.48 of the target while the hindsight oracle ran
        level 3 or 4 under the same bursts (-2.65 points in that run). A whole burst at the level that held says
        how slow the slowdown makes this machine; a level planned from it that does not hold costs the late frames
        of a failed probe and is blocked like one. The drop only goes as far down as this level: the plan from
        the newest frames can still choose a lower one."""
        lvl = self.state.level
        if target is None:
            return lvl
        if len(slow) >= FIT_MIN:  # ``slow``: the running level's ratios of the slowdown
            ratio = self.tails.tail(slow, 1.0 - self.config.miss_budget, self.spread()) or math.inf
            lvl = self.highest_probe(lvl, now, self.config.probe_ms(target), cpu, gpu, lambda _lv: ratio)
        while lvl > 0 and self.burst_record_fails(lvl):
            lvl -= 1
        return lvl

    def burst_record_fails(self, level: int) -> bool:
        """``level``'s stays through the slowdowns that ended under this target (:attr:`burst_record`), pooled,
        missed more often than the budget, with at least ``BURST_MIN_LATE`` late frames.

        Why: each burst is one short stay, 2-4 s; a level that misses 1-3 of a burst's 60 frames never fails the
        violation test in one, and the plan from a burst's frames chose it again for the next. Real bursty rounds
        (AMD, stop 41): level 4 took 1-3 late frames in nearly every burst it ran (about 3.5 % pooled), where the
        hindsight oracle ran level 3. Pooled across bursts the evidence is there after two; the next burst drops
        one level lower. Not a proof (no significance test): the level below is what the oracle would run, and a
        wrong step down costs one level's accuracy for one burst at a time, not a miss."""
        late, frames = self.burst_record.get(level, (0, 0))
        return late >= BURST_MIN_LATE and late > self.config.miss_budget * frames

    def highest_probe(self, level: int, now: float, limit: float, cpu: int | None, gpu: int | None,
                      ratio_of: Callable[[int], float], stop: int | None = None) -> int:
        """The most accurate level above ``level`` reached one level at a time while each is predicted (its tail
        ratio ``ratio_of(level)``) within ``limit`` and none failed lately (:meth:`probe_allowed`); ``level``
        itself when the next one is not. Why one at a time: a blocked level blocks the ones above it too (they
        were blocked with it, :meth:`record_failure`), and a level that does not fit says the ones above it are
        no safer."""
        best = level
        for lv in range(level + 1, len(self.levels) if stop is None else stop):
            ratio = ratio_of(lv)
            if self.predict_ms(lv, cpu, gpu, ratio) > limit or not self.probe_allowed(lv, now, ratio):
                break
            best = lv
        return best

    def plan_return(self, now: float) -> int | None:
        """The running level just got clearly faster (:meth:`detect_improvement`): when a more accurate level held
        until a slowdown drove the manager down from it, within the window, that level (to go back to at once, in
        this decision); None otherwise.

        Why not probe up one level per quiet period, as after a cold start: that level's frames before the
        slowdown are the evidence that it holds under the conditions that are back. Contention that comes and
        goes every 2-4 s (another process's bursts) leaves gaps shorter than one probe period; probing, the
        manager spent them at the level that held through the burst (real bursty runs: Δaccuracy -1.0 to -1.7
        points against the per-condition oracle). A wrong return costs what any failed probe costs.
        """
        held = self.held_at_slowdown
        self.held_at_slowdown = None
        if held is not None and held[0] > self.state.level and now - held[1] <= self.config.window_s:
            return held[0]
        return None

    def record_failure(self, level: int, now: float) -> None:
        """``level`` could not hold the target: block probes into it (and above), longer after each failure.

        What is kept to lift the block early (:meth:`probe_allowed`) is the tail ratio the level was predicted at
        when it was entered, not its own tail now: that one holds the very late frames that failed it, and any
        later prediction from clean frames (a transfer from the level below) undercut it by more than
        ``UNBLOCK_RATIO``, so a level that misses on an idle machine was retried as soon as the level below had
        frames again, the block never reached its second doubling. Compared with the prediction it was entered
        at, a block is lifted only when conditions are clearly better than when the level was tried.
        """
        cfg = self.config
        # a level entered by a safety rule (thermal, stale feedback) has no prediction of its own: its tail then
        ratio = self.entered[1] if self.entered is not None and self.entered[0] == level else self.tail_ratio(level)
        self.failures[level] += 1
        block = min(cfg.probe_quiet_s * 2 ** (self.failures[level] - 1), cfg.probe_backoff_max_s)
        for lv in range(level, len(self.levels)):
            self.blocked_until[lv] = max(self.blocked_until[lv], now + block)
            self.fail_ratio[lv] = ratio if self.fail_ratio[lv] is None else min(self.fail_ratio[lv], ratio)

    @property
    def target(self) -> float | None:
        """The latency target (ms) of the newest decision's context; None before one or without a target."""
        return self._context[0] if self._context is not None else None

    def enter_context(self, target: float | None, floor_accuracy: float | None) -> None:
        """A new target or accuracy floor: what failed under the old one says nothing now (probe memory cleared).

        A looser target (or none) also ends the quiet period: a miss of the stricter target is no evidence
        against probing for the looser one, and waiting ``probe_quiet_s`` after it only costs accuracy.
        """
        context = (target, floor_accuracy)
        if context != self._context:
            if self._context is not None and (target is None or (self._context[0] is not None
                                                                 and target > self._context[0])):
                self.last_violation = self.last_alarm = -math.inf
            self._context = context
            self.replan = target is not None
            self.failures = [0] * len(self.levels)
            self.blocked_until = [-math.inf] * len(self.levels)
            self.fail_ratio = [None] * len(self.levels)
            self.held_at_slowdown = self.slowdown_ended = self.load_before = None
            self.burst_record = {}

    def probe_allowed(self, level: int, now: float, ratio: float) -> bool:
        if now >= self.blocked_until[level]:
            return True
        failed_at = self.fail_ratio[level]
        if failed_at is not None and ratio < UNBLOCK_RATIO * failed_at:  # conditions clearly better than then
            self.blocked_until[level], self.failures[level], self.fail_ratio[level] = -math.inf, 0, None
            return True
        return False

    def _decide(self, inp: PolicyInputs) -> Decision:
        cfg, st = self.config, self.state
        now = inp.now
        self.tails.forget_before(now)
        saver_cap, thermal_cap, notes = self.clock_caps(inp)
        cpus, gpus = self.allowed_clocks(min(saver_cap, thermal_cap))
        cap_c, cap_g = cpus[-1], gpus[-1]
        mode = "saver" if st.saver else ("thermal_soft" if st.thermal_soft else "normal")
        floor_acc = None if st.saver else inp.min_accuracy
        floor = self.floor_level(floor_acc)
        if floor is None:
            notes.append(f"no level reaches the accuracy floor {floor_acc:g} %: most accurate level only")
            floor = len(self.levels) - 1
        top = len(self.levels) - 1
        target = inp.target_latency_ms or None
        self.enter_context(target, floor_acc)
        if inp.cpu_load is not None and (not self.loads or inp.cpu_load.stamp > self.loads[-1][0]):
            self.loads.append((inp.cpu_load.stamp, inp.cpu_load.value))
        # what showed that a slowdown has just ended (None: nothing), for the return's reason
        # the running level's frames of this stay, before detect_improvement forgets the ones before an improvement
        stay_lat = self.tails.latencies(st.level, st.last_level_change)
        slow = self.detect_improvement(now)  # the running level's frames of the slowdown that just ended
        if slow is not None:
            self.improved_at = now
            ended: str | None = f"level {st.level} faster since {now:.1f} s"
        else:
            ended = self.load_fell_back(now)
        back = None  # the level to return to, when a slowdown has just ended (:meth:`plan_return`)
        burst_lvl = st.level  # the level to drop to if it comes back (:meth:`burst_level`)
        if ended is not None:
            # a violation drove the manager to the running level (or hit it since): what ended was a slowdown,
            # and this level held through it. Noted with or without a return (:meth:`slowdown_expected`)
            held_through = math.isfinite(self.last_alarm) and self.last_alarm >= st.last_level_change
            if held_through and target is not None:  # its record of slowdowns (:meth:`burst_record_fails`)
                late, frames = self.burst_record.get(st.level, (0, 0))
                self.burst_record[st.level] = (late + sum(x > target for x in stay_lat), frames + len(stay_lat))
            self.last_violation = self.last_alarm = -math.inf
            back = self.plan_return(now)
            if slow is None:  # the load showed the end: the stay's frames before the newest ones are the slowdown's
                slow = self.tails.ratios(st.level, st.last_level_change)[:-CHANGE_RECENT]
            burst_lvl = self.burst_level(now, target, cap_c, cap_g, slow)
            if held_through:
                self.slowdown_ended = (burst_lvl, now)
        self.learn_spread()
        ref = self._ref_ratios()
        st.slowdown = self.tails.quantile(ref, 0.5) or 1.0
        if cfg.measure_first and self.tails.last_level is None:
            # nothing measured on this machine yet: the profile may be another machine's (the shipped generic_cpu
            # profile reads 2x fast here), so the first frames run the cheapest allowed level, then probes go up
            self.ceiling = self._ran = floor
            return Decision(floor, cap_c, cap_g, "; ".join([
                f"joint: cold start, no latency measured on this machine yet → level {floor}, the lowest allowed, "
                "until the first samples (measure_first); then probes up", *notes]),
                mode if target is not None else "no_target", self.predict_ms(floor, cap_c, cap_g))
        prefix = f"joint (p{100 * (1 - cfg.miss_budget):g} ratio ×{self.tail_ratio(st.level):.2f})"
        self.had_target = self.had_target or target is not None
        waited = now - (self.first_sample_at if self.first_sample_at is not None else now)
        if target is None and cfg.measure_first and not self.had_target and waited < cfg.probe_quiet_s:
            # start-up: the camera often starts before the application publishes its target; the most accurate
            # level chosen for "no target" in between missed that target's first frames in the real bench
            lvl = max(st.level, floor)
            reason = (f"{prefix}: no latency target yet, {waited:.1f} s after the first frames → level {lvl} until one "
                      f"arrives or {cfg.probe_quiet_s:g} s pass (measure_first)")
            return Decision(lvl, cap_c, cap_g, "; ".join([reason, *notes]), "no_target" if mode == "normal" else mode,
                            self.predict_ms(lvl, cap_c, cap_g))
        if target is None:
            lvl = self._dwell(inp, top, force=st.level < floor)
            reason = f"{prefix}: no latency target → most accurate level at the highest allowed clocks"
            return Decision(lvl, cap_c, cap_g, "; ".join([reason, *notes]), "no_target" if mode == "normal" else mode,
                            self.predict_ms(lvl, cap_c, cap_g))
        budget, up_budget = cfg.plan_ms(target), cfg.probe_ms(target)
        period = self.frame_period_s()
        run = st.level
        if self._ran != run or cfg.accuracy_slack <= 0:  # a safety rule moved the level, or no slack: resync
            self.ceiling = run
        cur = self.ceiling  # the deadline logic's level; ``run`` may sit below it within accuracy_slack

        def fits(lv: int, limit: float) -> bool:
            return self.predict_ms(lv, cap_c, cap_g, self.tail_ratio(lv)) <= limit

        infeasible = False
        lifted = None
        if saver_cap < thermal_cap and not any(fits(lv, budget) for lv in range(floor, top + 1)):
            # the deadline comes before the saver's clock cap: the cheapest level, clocks as low as it allows
            cpus, gpus = self.allowed_clocks(thermal_cap)
            cap_c, cap_g = cpus[-1], gpus[-1]
            notes.append("saver clock cap lifted to meet the target")
            lifted = next((lv for lv in range(floor, top + 1) if fits(lv, budget)), floor)
        if lifted is not None:
            want, why = lifted, f"level {lifted} is the cheapest level predicted within {budget:.1f} ms"
        elif cur < floor:
            want, why = floor, f"level {cur} is below the accuracy floor {floor_acc:g} % → level {floor}"
        elif self.replan and not fits(cur, budget):
            # feed-forward: the application changed what it needs. Waiting for the misses that prove the running
            # level too slow for the new target costs those frames; what is known about it already predicts them
            # (its own tail, or the transfer from the level that ran; the prior's spread before any sample)
            pred_cur = self.predict_ms(cur, cap_c, cap_g, self.tail_ratio(cur))
            below = [lv for lv in range(floor, cur) if fits(lv, budget)]
            want, infeasible = (below[-1], False) if below else (floor, True)
            self.last_alarm = now
            if want < cur:  # a drop: probes wait for the quiet period, as after a violation
                self.last_violation, self.dropped_from = now, cur
            why = (f"new target {target:g} ms: level {cur} predicted p{100 * (1 - cfg.miss_budget):g} "
                   f"{pred_cur:.1f} ms > {budget:.1f} ms → level {want}, "
                   + ("the most accurate predicted within it" if below else "none is predicted within it"))
        elif self.violates(target, now):
            self.last_alarm = now
            if run > floor:
                # the quiet period before a probe is the wait after a *drop*. At the floor nothing drops: a start-up
                # spike there (the real step run of stop 32's repeat: 31.9 ms in the second frame, then 7-10 ms)
                # held every probe for probe_quiet_s, and the manager sat at level 0 for 8 s; while the floor
                # really misses, its own tail keeps every level above it out of the plan anyway
                self.last_violation, self.dropped_from = now, run
            if self.held_before_violation(target, now) and (self.held_at_slowdown is None
                                                            or self.held_at_slowdown[0] < run):
                self.held_at_slowdown = (run, now)
                stay = [v for t, v in self.loads if st.last_level_change <= t < now - RECENT_S]
                self.load_before = min(stay) if stay else None
            if run > floor:
                self.record_failure(run, now)
            now_ratio = self.drop_ratio(now, target)
            # a drop enters a level on the same bar as a probe (``probe_ms``): the plan reads a slowdown's first
            # frames, no better evidence than a probe's. Planned within ``plan_ms``, a drop chose level 4 predicted
            # at 27.8 of 28.5 ms and the demo ran it for 22 s at 3.6-4.5 % misses (stop 40, runs 1 and 5)
            preds = {lv: self.predict_ms(lv, cap_c, cap_g, now_ratio) for lv in range(floor, run)}
            entry = up_budget if any(p <= up_budget for p in preds.values()) else budget
            below = [lv for lv, p in preds.items() if p <= entry]
            fallback = self.slowdown_expected(now)
            if below and fallback is not None and max(fallback, floor) < below[-1]:
                # the reason names the level the decision goes to first, then what the newest frames alone planned
                want = max(fallback, floor)
                why = (f"level {run} misses {target:g} ms more often than the {cfg.miss_budget:.0%} budget → "
                       f"level {want}, which held through the last slowdown: it is back (the newest frames alone "
                       f"predict level {below[-1]} within {entry:.1f} ms)")
            elif below:
                want = below[-1]
                why = (f"level {run} misses {target:g} ms more often than the {cfg.miss_budget:.0%} budget → "
                       f"level {want}, the most accurate predicted within {entry:.1f} ms now")
            else:
                want, infeasible = floor, True
                why = (f"level {run} misses {target:g} ms and no allowed level is predicted within {budget:.1f} ms "
                       f"→ level {floor}")
            if self.stay_evidence is not None:
                late, frames = self.stay_evidence
                why += f" (its own tail over this stay: {late} of {frames} frames late)"
            self.slowdown_ended = None
        else:
            want, why = cur, (f"level {cur} holds {target:g} ms within the {cfg.miss_budget:.0%} miss budget")
            if now - st.last_level_change >= HOLD_CONFIRM_WINDOWS * cfg.window_s:
                # it held long enough: a later failure is a new story. The most accurate level is no exception: it
                # was (any decision at it that saw no violation cleared its count), and a top level that misses on
                # an idle machine was retried every 8 s for ever, the limit cycle the backoff exists to stop
                self.failures[run] = 0
            quiet = now - self.last_violation >= cfg.probe_quiet_s
            # the levels a drop skipped (between the running one and the one it left) were never shown to fail: probed
            # as soon as the running level's own frames predict them, without the quiet period, which is for the level
            # that failed. Why: a drop planned on a slowdown's first frames (its worst: the stall when busy processes
            # start) went from level 4 to 0 where level 3 held, then sat out probe_quiet_s at level 0 (real step and
            # 640x480 runs, stop 40: about -0.85 points a run). Not when the level the drop left had held until a
            # slowdown hit it: the slowdown's end returns there at once (plan_return), and that end is read from the
            # running level's frames before and after it; a climb out of the level that held through hid it (a burst's
            # gap spent at the level climbed to, SIMULATED). On the bench's plants (SIMULATED, 5 patterns x 5 plants,
            # 16 seeds): joint - oracle -0.71 -> -0.62 points, misses 1.09 -> 1.12 %
            skipped = (not quiet and self.dropped_from is not None and cur + 1 < self.dropped_from
                       and not (self.held_at_slowdown is not None and self.held_at_slowdown[0] == self.dropped_from))
            enough = self.frames_to_trust()
            n_run = self.tails.count(run)
            # a tail needs ~1/budget frames to be trusted near the target; far below it (a level predicted
            # within half the plan) a handful of frames is evidence enough, so a cold start or a generous
            # target does not wait 1/budget frames for an obvious move
            fresh = self.improved_since_switch()
            limit = up_budget if n_run >= enough or (fresh and self.learned_spread is not None) else (
                PROBE_HEADROOM * up_budget)
            settled = now - st.last_level_change >= cfg.min_dwell_s and n_run >= MIN_OWN_SAMPLES
            if back is not None and back > cur and quiet:
                # the level that held through it, unless its record of bursts says it misses there (then the
                # lower level burst_level chose: the level that held is no floor for it)
                held = burst_lvl if self.burst_record_fails(cur) else max(cur, burst_lvl)
                want, self.slowdown_ended = back, (held, now)
                why = f"return: the slowdown that level {want} held until has ended ({ended})"
                self.blocked_until[want] = -math.inf
            elif cur < top and (quiet or skipped) and settled:
                up = self.highest_probe(cur, now, limit, cap_c, cap_g, self.tail_ratio,
                                        stop=None if quiet else self.dropped_from)
                if up > cur:
                    want = up
                    why = (f"probe: level {up} predicted within {limit:.1f} ms after "
                           f"{now - self.last_violation:.0f} s after the last drop" if math.isfinite(
                               self.last_violation) else f"probe: level {up} predicted within {limit:.1f} ms")
                    if not quiet:
                        why += f", below level {self.dropped_from}, which the drop left"
                    if fresh:
                        why += f" (faster since {self.improved_at:.1f} s: older frames forgotten)"
                elif now < self.blocked_until[cur + 1]:
                    why += (f"; level {cur + 1} blocked for {self.blocked_until[cur + 1] - now:.1f} s more after "
                            f"{self.failures[cur + 1] or 1} failed stay(s)")
        self.ceiling = want
        self.replan = False

        def ratio_of(lv: int) -> float:  # below the running level, "now" (a drop) must be in the plan too
            return max(self.tail_ratio(lv), self.drop_ratio(now, target)) if lv < run else self.tail_ratio(lv)

        lvl, pair = want, self._cheapest_pair(want, ratio_of(want), cpus, gpus, budget, period)
        if cfg.accuracy_slack > 0 and not infeasible:
            # the deadline logic's level is a ceiling: a less accurate level within the slack may cost less energy
            acc_want = self.levels[want].accuracy or 0.0
            cands = {want: pair}
            for lv in range(want - 1, floor - 1, -1):
                if (self.levels[lv].accuracy or 0.0) < acc_want - cfg.accuracy_slack:
                    break
                cands[lv] = self._cheapest_pair(lv, ratio_of(lv), cpus, gpus, budget, period)
            for lv, cand in cands.items():
                if cand is not None and (pair is None or cand[0] < pair[0]):
                    lvl, pair = lv, cand
            held = cands.get(run)
            if held is not None and lvl != run and pair is not None and pair[0] > (1 - ENERGY_SWITCH_GAIN) * held[0]:
                lvl, pair = run, held  # not worth a switch: the estimates' noise could undo it next decision
            if lvl != want:
                why += (f"; level {lvl} instead ({self.levels[want].accuracy or 0:.1f} → "
                        f"{self.levels[lvl].accuracy or 0:.1f} % within the {cfg.accuracy_slack:g}-point "
                        "accuracy slack, less energy per frame)")
        self._ran = lvl
        ratio = ratio_of(lvl)
        if lvl != run:
            self.entered = (lvl, ratio)
        c, g = (pair[1], pair[2]) if pair is not None else (cap_c, cap_g)
        c, g = self._freq_dwell(inp, (c, g), cap_c, cap_g)
        pred = self.predict_ms(lvl, c, g, ratio)
        if infeasible:
            mode = "infeasible"
        self.overrun = self.overrun_fallback(now, lvl, target, floor)
        reason = f"{prefix}: {why}; {_fmt_f(c, g)}, predicted p{100 * (1 - cfg.miss_budget):g} {pred:.1f} ms"
        return Decision(lvl, c, g, "; ".join([reason, *notes]), mode, pred)

    def _cheapest_pair(self, level: int, ratio: float, cpus: Sequence[int | None], gpus: Sequence[int | None],
                       budget: float, period_s: float | None) -> tuple[float, int | None, int | None] | None:
        """(energy per frame, CPU, GPU) of the allowed pair with the least modelled energy per frame whose
        predicted tail (``ratio``) fits ``budget``; None when no pair does. Ties go to the lower clocks."""
        best = None
        for c in cpus:
            for g in gpus:
                if self.predict_ms(level, c, g, ratio) <= budget:
                    energy = self.frame_energy_j(self.predict_ms(level, c, g, self.state.slowdown), c, g, period_s)
                    key = (energy, c or 0, g or 0)
                    if best is None or key < best[0]:
                        best = (key, c, g)
        return None if best is None else (best[0][0], best[1], best[2])

    def _dwell(self, inp: PolicyInputs, want: int, force: bool = False) -> int:
        st = self.state
        if want == st.level or force or inp.now - st.last_level_change >= self.config.min_dwell_s:
            return want
        return st.level

    def _freq_dwell(self, inp: PolicyInputs, pair: tuple[int | None, int | None], cap_c: int | None,
                    cap_g: int | None) -> tuple[int | None, int | None]:
        """Raise clocks at once; lower them only after ``freq_min_dwell_s`` (or when above a cap)."""
        st = self.state
        c, g = pair
        recent = inp.now - st.last_freq_change < self.config.freq_min_dwell_s
        if recent and st.cpu is not None and c is not None and c < st.cpu <= (cap_c or st.cpu):
            c = st.cpu
        if recent and st.gpu is not None and g is not None and g < st.gpu <= (cap_g or st.gpu):
            g = st.gpu
        return c, g


def make_policy(name: str, levels: Sequence[LevelSpec], cpu_freqs_khz: Sequence[int] = (),
                gpu_freqs_hz: Sequence[int] = (), config: PolicyConfig | None = None,
                cpu_power: DomainPower | None = None, gpu_power: DomainPower | None = None) -> Policy:
    """The policy called ``name`` (``joint`` or ``step``)."""
    classes = {"joint": JointPolicy, "step": StepPolicy}
    if name not in classes:
        raise PolicyConfigError(f"policy {name!r} is unknown; allowed: {list(POLICIES)}")
    return classes[name](levels, cpu_freqs_khz, gpu_freqs_hz, config, cpu_power, gpu_power)


def levels_from_family(family: object, profile: str | None = None) -> list[LevelSpec]:
    """LevelSpecs from a :class:`~dynofa_ros.inference.family.SubnetFamily` for one latency profile."""
    profile = profile or family.reference_profile  # type: ignore[attr-defined]
    out = []
    for i, lv in enumerate(family.levels):  # type: ignore[attr-defined]
        ms = lv.latency(profile) if profile else None
        if ms is None:
            raise PolicyConfigError(f"level {i} of family {family.name!r} has no latency for profile "  # type: ignore[attr-defined]
                                    f"{profile!r}; profiles with every level: {family.profiles()}")  # type: ignore[attr-defined]
        out.append(LevelSpec(lv.accuracy.top1, ms))
    return out
