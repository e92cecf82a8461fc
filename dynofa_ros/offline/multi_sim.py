"""Several apps on one shared CPU: a small simulated plant for the multi-app manager. **Simulated figures.**

Why a plant of its own: ``sim.py`` replays one perception pipeline; what matters with several apps is how
one app's level changes the others' latency, which no single-app recording contains. The model is the
simplest one that has the effect, with its assumptions written down:

* each app runs one inference thread on frames arriving at its ``fps``, takes the newest frame when free
  (older waiting frames are dropped), and reports each frame's latency with the level that ran it;
* a level's latency is its idle median (``profile_ms``, the family's profiled latency) times log-normal noise
  (``sigma``; 0.15 ≈ p90/p50 1.2, the 1-thread spread measured on this 2-core machine) times the clock
  factor ``f_max / f`` (the whole latency scales with the CPU clock) times the *contention*::

      contention = max(1, (1 + busy + u_others) / cores) · (1 + cache · u_others)

  where ``busy`` is the number of competing busy processes and ``u_others`` the other apps' CPU share over
  the last 0.5 s (time sharing of the cores once runnable threads outnumber them, plus cache/memory
  interference that exists even when they do not);
* CPU rail power per decision period: :class:`~dynofa_ros.control.platforms.DomainPower` of the Xavier NX CPU at the
  clock in force, utilisation ``(u_apps + busy) / cores`` (capped at 1). **Assumed, not measured.**

Controllers: ``coordinated`` (one :class:`~dynofa_ros.control.multi_policy.MultiPolicy`), ``independent`` (one
:class:`~dynofa_ros.control.policy.JointPolicy` per app; they share the clock, and the last command sent wins, as
with one ``dvfs_node`` and two managers), ``fixed`` (given levels, maximum clock). Seeded, deterministic.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..control.multi_policy import AppInputs, AppSpec, MultiInputs, MultiPolicy
from ..control.platforms import XAVIER_NX, DomainPower
from ..control.policy import JointPolicy, LatencySample, LevelSpec, PolicyConfig, PolicyInputs
from ..series import step_value

CONTROLLERS = ("coordinated", "independent", "fixed")


@dataclass(frozen=True)
class SimApp:
    """One simulated app: its levels (idle median at max clock, predicted accuracy), rate, priority, targets."""

    name: str
    profile_ms: tuple[float, ...]
    accuracy: tuple[float, ...]
    fps: float
    priority: float
    targets: tuple[tuple[float, float], ...]   # (t_s, target ms from t on)
    sigma: float = 0.15

    def target_at(self, t: float) -> float:
        return float(step_value(self.targets, t))

    def spec(self) -> AppSpec:
        return AppSpec(self.name, tuple(LevelSpec(a, p) for a, p in zip(self.accuracy, self.profile_ms, strict=True)),
                       self.priority)


@dataclass(frozen=True)
class SharedScenario:
    """Apps sharing ``cores`` cores with ``busy`` competing processes over time."""

    name: str
    duration_s: float
    apps: tuple[SimApp, ...]
    busy: tuple[tuple[float, int], ...] = ((0.0, 0),)
    cores: int = 2
    cache: float = 0.15

    def busy_at(self, t: float) -> int:
        v = self.busy[0][1]
        for when, n in self.busy:
            if when > t:
                break
            v = n
        return v


@dataclass
class AppRun:
    """Per processed frame of one app: receive time, level, latency, target in force."""

    name: str
    t_s: list[float] = field(default_factory=list)
    level: list[int] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    target_ms: list[float] = field(default_factory=list)
    dropped: int = 0

    @property
    def miss_rate(self) -> float:
        return float(np.mean(np.asarray(self.latency_ms) > np.asarray(self.target_ms))) if self.latency_ms else 0.0

    @property
    def switches(self) -> int:
        lv = np.asarray(self.level)
        return int(np.sum(lv[1:] != lv[:-1])) if len(lv) > 1 else 0

    def mean_accuracy(self, accuracy: Sequence[float]) -> float:
        return float(np.mean(np.asarray(accuracy)[np.asarray(self.level)])) if self.level else 0.0


@dataclass
class SharedRun:
    controller: str
    apps: dict[str, AppRun]
    energy_j: float
    clock_t: list[float]
    clock_khz: list[int]
    duration_s: float
    reasons: list[tuple[float, str]] = field(default_factory=list)


def contention(busy: int, u_others: float, cores: int, cache: float) -> float:
    """Slowdown of one app's thread (module docstring)."""
    return max(1.0, (1.0 + busy + u_others) / cores) * (1.0 + cache * u_others)


def sim_config(**overrides: float) -> PolicyConfig:
    """The generic_cpu manager settings with the whole latency scaling with the CPU clock (this plant)."""
    base = {"cpu_fraction": 1.0, "gpu_fraction": 0.0}
    base.update(overrides)
    return PolicyConfig(**base)  # type: ignore[arg-type]


def simulate_shared(scn: SharedScenario, controller: str, *, seed: int = 0, config: PolicyConfig | None = None,
                    fixed_levels: Mapping[str, int] | None = None, cpu_power: DomainPower = XAVIER_NX.cpu,
                    decision_rate_hz: float = 5.0, control_clocks: bool = True) -> SharedRun:
    """Replay ``scn`` under ``controller`` (``coordinated`` / ``independent`` / ``fixed``); deterministic per seed."""
    if controller not in CONTROLLERS:
        raise ValueError(f"controller {controller!r}; allowed: {list(CONTROLLERS)}")
    cfg = config or sim_config()
    freqs = list(cpu_power.freqs) if control_clocks else []
    f_max = cpu_power.freqs[-1]
    rng = random.Random(seed)
    names = [a.name for a in scn.apps]
    apps = {a.name: a for a in scn.apps}
    multi: MultiPolicy | None = None
    singles: dict[str, JointPolicy] = {}
    if controller == "coordinated":
        multi = MultiPolicy([a.spec() for a in scn.apps], freqs, (), cfg, cpu_power)
        level = dict(multi.levels)
    elif controller == "independent":
        singles = {a.name: JointPolicy(list(a.spec().levels), freqs, (), cfg, cpu_power) for a in scn.apps}
        level = {n: p.state.level for n, p in singles.items()}
    else:
        level = {n: int((fixed_levels or {}).get(n, len(apps[n].profile_ms) - 1)) for n in names}
    clock = f_max
    published = dict.fromkeys(names, f_max)
    pending: dict[str, list[LatencySample]] = {n: [] for n in names}
    commands: dict[str, list[tuple[float, int]]] = {n: [(0.0, level[n])] for n in names}
    intervals: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    runs = {n: AppRun(n) for n in names}
    t_free = dict.fromkeys(names, 0.0)
    next_frame = dict.fromkeys(names, 0)
    n_frames = {n: math.floor(scn.duration_s * apps[n].fps) for n in names}
    tick = 1.0 / decision_rate_hz
    next_tick = rng.uniform(0.0, tick)
    energy, clock_t, clock_khz, reasons = 0.0, [0.0], [clock], []
    noise = {n: np.random.default_rng([seed, i]) for i, n in enumerate(names)}

    def share(n: str, t0: float, t1: float) -> float:
        busy = sum(max(0.0, min(e, t1) - max(s, t0)) for s, e in intervals[n][-64:])
        return busy / max(t1 - t0, 1e-9)

    def manager(now: float) -> None:
        nonlocal clock
        arrived = {n: tuple(s for s in pending[n] if s.stamp <= now) for n in names}
        for n in names:
            pending[n] = [s for s in pending[n] if s.stamp > now]
        if controller == "coordinated" and multi is not None:
            d = multi.decide(MultiInputs(now, {n: AppInputs(apps[n].target_at(now), latencies=arrived[n])
                                               for n in names}))
            for n in names:
                if d.levels[n] != commands[n][-1][1]:
                    commands[n].append((now + 0.002, d.levels[n]))
            if d.cpu_freq_khz is not None:
                clock = d.cpu_freq_khz
            reasons.append((now, d.reason + " || " + " | ".join(d.reasons.values())))
        elif controller == "independent":
            for n in names:
                d = singles[n].decide(PolicyInputs(now, apps[n].target_at(now), latencies=arrived[n]))
                if d.level != commands[n][-1][1]:
                    commands[n].append((now + 0.002, d.level))
                if d.cpu_freq_khz is not None and d.cpu_freq_khz != published[n]:
                    published[n] = clock = d.cpu_freq_khz  # one dvfs node: the last command wins

    while True:
        # next frame start of each app that still has frames
        starts = {}
        for n in names:
            k = next_frame[n]
            if k >= n_frames[n]:
                continue
            newest = min(math.floor(t_free[n] * apps[n].fps + 1e-9), n_frames[n] - 1)
            starts[n] = (t_free[n], newest) if newest >= k and newest / apps[n].fps <= t_free[n] else \
                (k / apps[n].fps, k)
        if not starts:
            break
        n = min(starts, key=lambda x: (starts[x][0], names.index(x)))
        start, j = starts[n]
        while next_tick <= start:  # decisions (and the energy of the period they close) before this frame
            t0 = next_tick - tick
            util = (sum(share(m, t0, next_tick) for m in names) + scn.busy_at(t0)) / scn.cores
            energy += cpu_power.power_w(clock, min(util, 1.0)) * tick
            manager(next_tick)
            clock_t.append(next_tick)
            clock_khz.append(clock)
            next_tick += tick
        runs[n].dropped += j - next_frame[n]
        lvl = next(lv for when, lv in reversed(commands[n]) if when <= start)
        u_others = sum(share(m, start - 0.5, start) for m in names if m != n)
        a = apps[n]
        lat = (a.profile_ms[lvl] * math.exp(a.sigma * float(noise[n].standard_normal())) * (f_max / clock)
               * contention(scn.busy_at(start), u_others, scn.cores, scn.cache))
        end = start + lat / 1000.0
        intervals[n].append((start, end))
        pending[n].append(LatencySample(lat, lvl, end + 0.001))
        runs[n].t_s.append(end + 0.001)
        runs[n].level.append(lvl)
        runs[n].latency_ms.append(lat)
        runs[n].target_ms.append(a.target_at(j / a.fps))
        t_free[n], next_frame[n] = end, j + 1
    return SharedRun(controller, runs, energy, clock_t, clock_khz, scn.duration_s, reasons)
