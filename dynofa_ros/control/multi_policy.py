"""One runtime manager for several dynamic DNNs on one device: levels of every app and the shared clocks.

Why a joint decision: two perception nodes on one machine share its cores (and its clocks). Two independent
managers each read the other app's load as "slowdown" and step down, then step up when the other has
stepped down: two controllers on one plant. This module decides all of them at once, pure and deterministic
(no rclpy), so every rule is unit-tested and the bench scores exactly what the manager node runs.

Per app it keeps one :class:`~dynofa_ros.control.policy.JointPolicy` as its *rule engine*: the per-level latency
tails (:mod:`dynofa_ros.control.tail_estimate`), the binomial miss-budget violation test, the drop ratio when
contention has just begun, and the probe backoff are the single-app rules, reused unchanged. What is new:

Objective, in order
    1. meet every app's deadline under its miss budget (the tail of each app at its level, with the
       interference of the others' levels, fits ``target · (1 - latency_margin)``);
    2. maximise the priority-weighted predicted accuracy ``Σ priority_i · accuracy_i``;
    3. minimise the modelled power of the shared CPU/GPU clocks (the cheapest pair that keeps every app's
       predicted tail within its plan).

Interference model (learned online)
    App *i*'s latency ratio (measured / profile, the same ratio the tail estimator keeps) is regressed on
    the *demand* of the other apps, ``D_-i = Σ_j rate_j · (L_prof,j(level_j) + overhead) / 1000`` (the
    profiled CPU share their current levels need at their measured frame rates): ``log ratio_i = a_i +
    β_i · D_-i``, least squares over the last ``INTERFERENCE_WINDOW_S`` of samples. A change of the other
    apps' levels from ``D`` to ``D'`` scales app *i*'s predicted tail by ``exp(β_i · (D' - D))``. The slope
    is *trusted* only when the window holds ``INTERFERENCE_MIN_SAMPLES`` samples whose ``D`` spreads by at
    least ``INTERFERENCE_MIN_SPREAD`` and its standard error is below ``INTERFERENCE_MAX_SE``.

Safe rules when unsure
    * an untrusted slope is taken as ``BETA_HARM`` for a change that raises the others' demand (pessimistic)
      and as ``BETA_RELIEF`` for one that lowers it (only part of the relief is credited);
    * a move up (probe) of one app is evaluated on *every* app's deadline: another app's violation while
      the probe is young is the probe's fault. The probe is reverted, the probing app's level is blocked
      with the single-app exponential backoff, and the other apps' samples taken during the probe are
      dropped (they describe a combination of levels that no longer runs);
    * only one app probes at a time, and only when every app has been quiet for ``probe_quiet_s`` and
      settled (``min_dwell_s`` since any change, ``1/miss_budget`` samples at its level).

Over-subscription: the lower priority yields first
    When an app violates, the apps of *lower* priority are lowered first (towards their accuracy floors),
    the violating app and those above it keeping their levels, as long as the interference model predicts
    that is enough; only then is the violating app itself lowered. When no combination of levels meets
    every deadline, deadlines are given up in increasing priority: the apps that yield run their fastest
    allowed level (fewest misses), and the reason says which app yielded to which.

Return after a slowdown
    The combination that held until a violation is kept; once the violating app's frames, slower after the drop,
    are as fast as before it again, every app goes back to it in one decision (:meth:`MultiPolicy._plan_return`),
    as one app returns to the level that held (:meth:`JointPolicy.plan_return`). Otherwise the apps climb back by
    probes, one app one level at a time after ``probe_quiet_s``.

Shared rules (as the single-app policy): thermal hard limit → every app at level 0 and the lowest clocks;
a stale device reading (load, temperature, battery) → every app at ``safe_level`` and maximum clocks; an
app whose latency feedback went stale → that app at ``safe_level`` (the others keep being managed); battery
saver and the soft thermal limit cap the clocks, saver also lifts the accuracy floors.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..series import step_value
from .platforms import DomainPower
from .policy import (
    CHANGE_RECENT,
    HOLD_CONFIRM_WINDOWS,
    RECENT_S,
    Decision,
    DeviceReadings,
    JointPolicy,
    LatencySample,
    LevelSpec,
    PolicyConfig,
    PolicyConfigError,
    PolicyInputs,
    _fmt_f,
    one_frame_proves,
)

#: Seconds of (demand of the others, latency ratio) pairs the interference slope is fitted on.
INTERFERENCE_WINDOW_S = 30.0
#: Pairs needed before the slope may be trusted.
INTERFERENCE_MIN_SAMPLES = 40
#: Spread (max - min) of the others' demand needed in the window: without it the slope is not identified.
INTERFERENCE_MIN_SPREAD = 0.05
#: Largest standard error of the slope that is trusted.
INTERFERENCE_MAX_SE = 0.25
#: Untrusted slope for a change that raises the others' demand: one CPU's worth of other work ×1.65.
BETA_HARM = 0.5
#: Untrusted slope for a change that lowers it: only part of the relief is counted on.
BETA_RELIEF = 0.2
#: Largest number of level combinations searched per decision (beyond it, apps are searched greedily).
MAX_COMBINATIONS = 20000
#: Frame rate assumed for an app that has not reported yet (Hz).
DEFAULT_RATE_HZ = 20.0
#: A slowdown that drove the apps down has ended when the violator's newest frames are back within this factor of
#: its frames before it (ratios to the profile, so the level they ran at does not matter; per-frame noise on a
#: shared 2-core CPU is about ±10 % around the median, level-to-level profile errors about 5 %).
RETURN_FACTOR = 1.1
#: ... and a slowdown it was: the violator's frames at its new level ran at least this much slower than before the
#: violation (medians), before its newest frames got back. A level at the edge of its target violates on its own
#: tail, and the level below then runs as fast as before: returning at once to the level that only just held was a
#: limit cycle (real AMD run, stop 44: rear 6 → 5 → 6 every 10 s).
SLOWDOWN_FACTOR = 1.25


# ---------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class AppSpec:
    """One managed application: its name (namespace), its family's levels and its priority weight."""

    name: str
    levels: tuple[LevelSpec, ...]
    priority: float = 1.0


@dataclass(frozen=True)
class AppInputs:
    """What one app's topics carried since the previous decision (``None`` / 0: no target, no floor)."""

    target_latency_ms: float | None = None
    min_accuracy: float | None = None
    latencies: tuple[LatencySample, ...] = ()
    active_level: int | None = None


@dataclass(frozen=True)
class MultiInputs(DeviceReadings):
    """Everything one joint decision may depend on: per-app inputs and the shared device readings."""

    now: float
    apps: Mapping[str, AppInputs] = field(default_factory=dict)


@dataclass(frozen=True)
class MultiDecision:
    """Levels of every app (by name), the shared clocks, one reason per app and one for the whole."""

    levels: Mapping[str, int]
    cpu_freq_khz: int | None
    gpu_freq_hz: int | None
    reason: str
    reasons: Mapping[str, str]
    mode: str = "normal"
    predicted_ms: Mapping[str, float | None] = field(default_factory=dict)
    yielded: tuple[str, ...] = ()

    def app(self, name: str) -> Decision:
        """This decision as one app's single-app :class:`Decision` (per-app diagnostics and logs)."""
        return Decision(self.levels[name], self.cpu_freq_khz, self.gpu_freq_hz, self.reasons[name], self.mode,
                        self.predicted_ms.get(name))


# ---------------------------------------------------------------------------------------------- interference
@dataclass(frozen=True)
class _Pair:
    stamp: float
    demand: float       # the others' profiled CPU share when the frame ran
    log_ratio: float    # log(measured / (profile · clock factor)) of this app's frame


class InterferenceModel:
    """Per app, ``log ratio = a + β · D_others`` fitted on a sliding window; ``None`` when not identified."""

    def __init__(self, names: Sequence[str], window_s: float = INTERFERENCE_WINDOW_S):
        self.window_s = window_s
        self.pairs: dict[str, deque[_Pair]] = {n: deque(maxlen=4096) for n in names}
        self._slopes: dict[str, float | None] = {}  # fitted once per change of the window

    def add(self, name: str, stamp: float, demand: float, ratio: float) -> None:
        if ratio > 0 and math.isfinite(ratio) and math.isfinite(demand):
            self.pairs[name].append(_Pair(stamp, demand, math.log(ratio)))
            self._slopes.pop(name, None)

    def forget_before(self, now: float) -> None:
        for dq in self.pairs.values():
            while dq and dq[0].stamp < now - self.window_s:
                dq.popleft()
        self._slopes.clear()

    def slope(self, name: str) -> float | None:
        """The fitted β when trusted (enough pairs, enough spread of D, small standard error), else None."""
        if name not in self._slopes:
            self._slopes[name] = self._fit(name)
        return self._slopes[name]

    def _fit(self, name: str) -> float | None:
        pts = self.pairs[name]
        n = len(pts)
        if n < INTERFERENCE_MIN_SAMPLES:
            return None
        xs = [p.demand for p in pts]
        if max(xs) - min(xs) < INTERFERENCE_MIN_SPREAD:
            return None
        ys = [p.log_ratio for p in pts]
        mx, my = sum(xs) / n, sum(ys) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        beta = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
        resid = sum((y - my - beta * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True))
        se = math.sqrt(resid / max(n - 2, 1) / sxx)
        if se > INTERFERENCE_MAX_SE or beta < 0.0:  # a negative slope is confounding (load came with a yield)
            return None
        return beta

    def factor(self, name: str, d_now: float, d_new: float) -> tuple[float, bool]:
        """Scale of ``name``'s latency when the others' demand goes from ``d_now`` to ``d_new``; trusted?"""
        if abs(d_new - d_now) < 1e-12:
            return 1.0, True
        beta = self.slope(name)
        if beta is None:
            beta = BETA_HARM if d_new > d_now else BETA_RELIEF
            return math.exp(beta * (d_new - d_now)), False
        return math.exp(beta * (d_new - d_now)), True


# ---------------------------------------------------------------------------------------------- the policy
@dataclass
class _Probe:
    app: str
    from_level: int
    to_level: int
    since: float


@dataclass
class _AppCtx:
    """One app's situation at one decision."""

    name: str
    cur: int
    floor: int
    target: float | None
    budget: float
    up_budget: float
    violating: bool = False
    replanned: bool = False  # violating because a new target is over the level's prediction, not by its frames
    stale: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Held:
    """The combination of levels that held until a slowdown drove it down (:meth:`MultiPolicy._plan_return`)."""

    levels: Mapping[str, int]
    since: float                        # when the violation drove it down
    before: Mapping[str, float]         # each violator's median ratio over its stay before the violation
    targets: Mapping[str, float | None]


class MultiPolicy:
    """Joint levels of several apps and shared clocks (module docstring); ``decide(MultiInputs)``."""

    name = "multi"

    def __init__(self, apps: Sequence[AppSpec], cpu_freqs_khz: Sequence[int] = (), gpu_freqs_hz: Sequence[int] = (),
                 config: PolicyConfig | None = None, cpu_power: DomainPower | None = None,
                 gpu_power: DomainPower | None = None):
        if not apps:
            raise PolicyConfigError("no apps to manage")
        names = [a.name for a in apps]
        if len(set(names)) != len(names):
            raise PolicyConfigError(f"app names must be unique, got {names}")
        for a in apps:
            if not a.priority > 0 or not math.isfinite(a.priority):
                raise PolicyConfigError(f"apps.{a.name}.priority must be a finite number above 0, got {a.priority}")
        self.apps = {a.name: a for a in apps}
        # priority order (highest first, then name): every loop below runs in it, so decisions are deterministic
        self.order = [a.name for a in sorted(apps, key=lambda a: (-a.priority, a.name))]
        self.config = (config or PolicyConfig()).validate()
        self.subs: dict[str, JointPolicy] = {}
        for a in apps:
            self.subs[a.name] = JointPolicy(list(a.levels), cpu_freqs_khz, gpu_freqs_hz, self.config, cpu_power,
                                            gpu_power)
        # the device-wide rules (thermal, saver) are kept in one more engine that never sees latencies
        self.device = JointPolicy([LevelSpec(None, 1.0)], cpu_freqs_khz, gpu_freqs_hz,
                                  replace(self.config, safe_level=0), cpu_power, gpu_power)
        self.cpu_freqs, self.gpu_freqs = self.device.cpu_freqs, self.device.gpu_freqs
        self.cpu: int | None = self.device.max_cpu()
        self.gpu: int | None = self.device.max_gpu()
        self.last_freq_change = -math.inf
        self.interference = InterferenceModel(self.order)
        self.level_history: dict[str, list[tuple[float, int]]] = {n: [(-math.inf, self.subs[n].state.level)]
                                                                   for n in self.order}
        self.rates: dict[str, float] = dict.fromkeys(self.order, DEFAULT_RATE_HZ)
        self.first_sample: dict[str, float | None] = dict.fromkeys(self.order)
        self.probe: _Probe | None = None
        self.evidence_since: dict[str, float] = dict.fromkeys(self.order, -math.inf)
        self.last_violation = -math.inf
        self.last_change = -math.inf
        self.held: _Held | None = None        # what to return to when the slowdown ends (:meth:`_plan_return`)
        self.returned_at = -math.inf          # the last return; a violation within a window of it failed it

    # -- configuration
    def reconfigure(self, config: PolicyConfig) -> None:
        """New tunables for every app (learned estimates kept)."""
        self.config = config.validate()
        for sub in self.subs.values():
            sub.reconfigure(config)
        self.device.reconfigure(replace(config, safe_level=0))

    @property
    def levels(self) -> dict[str, int]:
        return {n: self.subs[n].state.level for n in self.order}

    # -- demand and prediction
    def demand(self, name: str, level: int) -> float:
        """Profiled CPU share of ``name`` at ``level``: its measured frame rate × the level's profiled time."""
        sub = self.subs[name]
        ms = sub.levels[level].latency_ms + self.config.overhead_ms
        return min(1.0, self.rates[name] * ms / 1000.0)

    def others_demand(self, name: str, levels: Mapping[str, int]) -> float:
        return sum(self.demand(j, levels[j]) for j in self.order if j != name)

    def predict(self, name: str, level: int, combo: Mapping[str, int], cpu: int | None, gpu: int | None,
                drop: bool = False, now: float = 0.0) -> float:
        """Predicted tail (ms) of ``name`` at ``level`` when the apps run ``combo`` at clocks (cpu, gpu)."""
        sub = self.subs[name]
        ratio = sub.tail_ratio(level)  # both memoised by the app's policy: quantiles once per sample change
        if drop:  # "now" is the app's, not the level's
            ratio = max(ratio, sub.drop_ratio(now, sub.target))
        f, _ = self.interference.factor(name, self.others_demand(name, self.levels), self.others_demand(name, combo))
        return sub.predict_ms(level, cpu, gpu, ratio * f)

    # -- inputs
    def ingest(self, inp: MultiInputs) -> None:
        now = inp.now
        for name in self.order:
            app = inp.apps.get(name, AppInputs())
            sub = self.subs[name]
            sub.ingest(PolicyInputs(now=now, latencies=app.latencies))
            sub.tails.forget_before(now)
            for s in app.latencies:
                if not (0 <= s.level < len(sub.levels)) or not math.isfinite(s.latency_ms) or s.latency_ms <= 0:
                    continue
                start = s.stamp - s.latency_ms / 1000.0
                others = {j: step_value(self.level_history[j], start) for j in self.order}
                cpu, gpu = sub.freqs_at(start)
                base = (sub.levels[s.level].latency_ms + self.config.overhead_ms) * sub.clock_scaling.factor(cpu, gpu)
                self.interference.add(name, s.stamp, self.others_demand(name, others), s.latency_ms / base)
            if app.latencies and self.first_sample[name] is None:
                self.first_sample[name] = min(s.stamp for s in app.latencies)
            first = self.first_sample[name]
            if first is not None:  # frames per second over the window (what the app really runs at)
                span = min(self.config.window_s, max(now - first, 1e-3))
                n = sum(len(dq) for dq in sub.tails.samples)
                if n >= 5:
                    self.rates[name] = n / span
        self.interference.forget_before(now)

    # -- the decision
    def decide(self, inp: MultiInputs) -> MultiDecision:
        """One joint decision; rules in the priority order of the module docstring."""
        self.ingest(inp)
        cfg, now = self.config, inp.now
        dev_in = PolicyInputs(now=now, cpu_load=inp.cpu_load, gpu_load=inp.gpu_load, cpu_temp_c=inp.cpu_temp_c,
                              gpu_temp_c=inp.gpu_temp_c, battery_soc=inp.battery_soc)
        dev = self.device.decide(dev_in)  # thermal hard / stale device readings / caps, by the single-app rules
        if dev.mode in ("thermal_hard", "stale"):
            lvl = {n: (0 if dev.mode == "thermal_hard" else cfg.safe_level) for n in self.order}
            lvl = {n: min(v, len(self.subs[n].levels) - 1) for n, v in lvl.items()}
            return self._commit(now, lvl, dev.cpu_freq_khz, dev.gpu_freq_hz, dict.fromkeys(self.order, dev.reason),
                                dev.reason, dev.mode, ())
        saver_cap, thermal_cap, notes = self.device.clock_caps(dev_in)
        cpus, gpus = self.device.allowed_clocks(min(saver_cap, thermal_cap))
        cap_c, cap_g = cpus[-1], gpus[-1]
        mode = "saver" if self.device.state.saver else ("thermal_soft" if self.device.state.thermal_soft else "normal")

        ctx: dict[str, _AppCtx] = {}
        for name in self.order:
            ctx[name] = self._context(name, inp, now)
        why: dict[str, list[str]] = {n: list(ctx[n].notes) for n in self.order}
        managed = [n for n in self.order if not ctx[n].stale and ctx[n].target is not None]
        cur = self.levels
        want = dict(cur)
        for n in self.order:  # stale feedback → safe level; below the floor → up to it; no target → top
            c = ctx[n]
            if c.stale:
                want[n] = min(cfg.safe_level, len(self.subs[n].levels) - 1)
                why[n].append(c.stale)
            elif c.cur < c.floor:
                want[n] = c.floor
                why[n].append(f"level {c.cur} is below the accuracy floor → level {c.floor}")
            elif c.target is None:
                want[n] = len(self.subs[n].levels) - 1
                why[n].append("no latency target → most accurate level")
        yielded: tuple[str, ...] = ()

        violating = [n for n in managed if ctx[n].violating and want[n] == cur[n]]
        if violating:
            self.last_violation = now
        # a young probe is evaluated on every app's deadline: another app's violation is the probe's fault
        if self.probe is not None:
            p = self.probe
            others = [n for n in violating if n != p.app]
            if others and cur[p.app] == p.to_level:
                sub = self.subs[p.app]
                sub.record_failure(p.to_level, now)
                want[p.app] = p.from_level
                why[p.app].append(f"probe of level {p.to_level} reverted: {', '.join(others)} missed its deadline "
                                  f"while {p.app} ran it → level {p.from_level}")
                for n in others:
                    self.evidence_since[n] = now
                    why[n].append(f"misses during {p.app}'s probe are the probe's, not {n}'s: level kept")
                violating = [n for n in violating if n not in others]
                self.probe = None
            elif self._settled(p.app, now) or cur[p.app] != p.to_level:
                self.probe = None

        free = [n for n in managed if want[n] == cur[n]]
        if violating:
            held = self._held_before(ctx, violating, now)
            want, yielded = self._on_violation(ctx, violating, free, want, cap_c, cap_g, now, why)
            if held is not None and any(want[n] < cur[n] for n in managed):
                self.held = held
        elif self.probe is None and free and not self._plan_return(ctx, managed, want, now, why):
            self._try_probe(ctx, free, want, cap_c, cap_g, now, why)
        for n in managed:
            if want[n] == cur[n] and not any(why[n]):
                why[n].append(f"level {cur[n]} holds {ctx[n].target:g} ms within the {cfg.miss_budget:.0%} budget")
            sub = self.subs[n]
            if (want[n] == cur[n] and not ctx[n].violating
                    and now - sub.state.last_level_change >= HOLD_CONFIRM_WINDOWS * cfg.window_s):
                # it held long enough: a later failure is a new story, as for one app (JointPolicy). Without this a
                # level's count only grew, and every later failure of it doubled the block, up to the cap
                sub.failures[cur[n]] = 0

        c, g = self._clocks(ctx, want, cpus, gpus, cap_c, cap_g, now)
        preds: dict[str, float | None] = {}
        for n in self.order:
            preds[n] = self.predict(n, want[n], want, c, g, drop=n in violating and want[n] <= cur[n], now=now)
        reasons = {}
        for n in self.order:
            t = ctx[n].target
            tail = f", predicted p{100 * (1 - cfg.miss_budget):g} {preds[n]:.1f} ms" if t is not None else ""
            reasons[n] = f"{n}: " + "; ".join(why[n] + notes) + f"; {_fmt_f(c, g)}{tail}"
        if yielded:
            mode = "infeasible"
        overall = " | ".join(f"{n} L{want[n]}" for n in self.order) + f" ({_fmt_f(c, g)})"
        if yielded:
            overall += f"; yielded (lowest priority first): {', '.join(yielded)}"
        return self._commit(now, want, c, g, reasons, overall, mode, yielded, preds)

    def _context(self, name: str, inp: MultiInputs, now: float) -> _AppCtx:
        cfg, sub = self.config, self.subs[name]
        app = inp.apps.get(name, AppInputs())
        floor_acc = None if self.device.state.saver else app.min_accuracy
        floor = sub.floor_level(floor_acc)
        notes = []
        if floor is None:
            notes.append(f"no level reaches the accuracy floor {floor_acc:g} %: most accurate level only")
            floor = len(sub.levels) - 1
        target = app.target_latency_ms or None
        sub.enter_context(target, floor_acc)
        stale = ""
        last = sub.state.last_latency
        if last is not None and now - last > cfg.stale_timeout_s:
            stale = f"latency feedback {now - last:.1f} s old > {cfg.stale_timeout_s:g} s → safe level"
        c = _AppCtx(name, sub.state.level, floor, target, cfg.plan_ms(target or 0.0), cfg.probe_ms(target or 0.0),
                    stale=stale, notes=notes)
        if target is not None and not stale:
            c.violating = self._violates(name, target, now)
            if sub.replan and not c.violating:
                # a new target is planned at once, as for one app: a level whose own prediction is over it is not
                # run until frames prove it; handled as a violation, so lower priorities yield first
                pred = self.predict(name, c.cur, self.levels, self.cpu, self.gpu)
                if pred > c.budget:
                    c.violating = c.replanned = True
                    notes.append(f"new target {target:g} ms: level {c.cur} predicted "
                                 f"p{100 * (1 - cfg.miss_budget):g} {pred:.1f} ms > {c.budget:.1f} ms")
        sub.replan = False
        return c

    def _violates(self, name: str, target: float, now: float) -> bool:
        """The single-app violation test, on the evidence since ``evidence_since`` (after a yield or a reverted
        probe, the misses measured under the combination before it are no evidence about the one now)."""
        sub = self.subs[name]
        since = self.evidence_since[name]
        if since <= sub.state.last_level_change:  # the stay began since: its own frames only, as for one app
            return sub.violates(target, now)
        lat = sub.tails.latencies(sub.state.level, since)
        if not lat:
            return False
        for s in (since, max(since, now - RECENT_S)):
            if sub.misses_too_often(sub.tails.latencies(sub.state.level, s), target):
                return True
        return one_frame_proves(lat, target)

    def _held_before(self, ctx: Mapping[str, _AppCtx], violating: Sequence[str], now: float) -> _Held | None:
        """The combination running now, to return to once this violation's slowdown ends, when every violator held its
        target over its stay before the newest ``RECENT_S`` (a change of conditions, not a level that never held);
        None otherwise, and while an earlier slowdown's combination is still the one to return to.

        Not after a failed return (a violation within a window of it): then the frames that looked back to normal
        were not (the relief of the apps that yielded, not the end of the slowdown), and probes take over. Not when a
        violator's level failed lately (:meth:`JointPolicy.record_failure`): its backoff decides."""
        if self.held is not None and now - self.held.since <= self.config.window_s:
            return None  # the slowdown goes on: the combination before it is still what held
        if now - self.returned_at <= self.config.window_s:  # (a return clears ``held``: nothing to clear here)
            return None
        before: dict[str, float] = {}
        for n in violating:
            sub, c = self.subs[n], ctx[n]
            if c.replanned or c.target is None or not sub.held_before_violation(c.target, now):
                return None
            if sub.failures[c.cur] > 0:  # it failed lately already: the backoff decides when to try it again
                return None
            stay = sub.tails.ratios(c.cur, sub.state.last_level_change, now - RECENT_S)
            before[n] = float(np.median(stay))
        return _Held(dict(self.levels), now, before, {n: ctx[n].target for n in self.order})

    def _plan_return(self, ctx: Mapping[str, _AppCtx], managed: Sequence[str], want: dict[str, int], now: float,
                     why: dict[str, list[str]]) -> bool:
        """Back to the combination that held until a slowdown (``self.held``), at once, when every app that violated
        then ran slower after the drop (``SLOWDOWN_FACTOR``) and now runs as fast as before it again: the median ratio
        of its newest ``CHANGE_RECENT`` frames (within ``RECENT_S``) is within ``RETURN_FACTOR`` of its stay before
        the violation, less the relief the interference model credits to the levels the others run now. True when
        it returned.

        Why: that combination's frames before the slowdown are the evidence that it holds under the conditions
        that are back, as for one app (:meth:`JointPolicy.plan_return`). Probing up instead waits ``probe_quiet_s``
        and then moves one app one step at a time: after a half-second hiccup of a real AMD VM the coordinated
        manager kept both apps at level 0 for 8-10 s and the rear app below its level for 17 s (stop 43), while two
        independent managers had only the app that missed lose accuracy. A wrong return costs what a failed probe
        costs, once: a violation within a window of it blocks the next return (:meth:`_held_before`)."""
        held = self.held
        if held is None:
            return False
        if now - held.since > self.config.window_s or any(ctx[n].target != held.targets.get(n) for n in self.order):
            self.held = None  # too old to say what holds now, or the application changed what it needs
            return False
        if not any(want[n] < held.levels[n] for n in managed):
            return False
        for n, before in held.before.items():
            sub = self.subs[n]
            lvl = sub.state.level
            dq = sub.tails.samples[lvl]
            first = dq[-CHANGE_RECENT].stamp if len(dq) >= CHANGE_RECENT else -math.inf
            if now - first > RECENT_S or first < held.since:  # too few, too old, or from before the drop
                return False
            recent = sub.tails.ratios(lvl)[-CHANGE_RECENT:]
            slow = sub.tails.ratios(lvl, held.since, first)  # its frames of the slowdown, at the level dropped to
            relief, _ = self.interference.factor(n, self.others_demand(n, held.levels),
                                                 self.others_demand(n, self.levels))
            if len(slow) < 2 or float(np.median(slow)) < SLOWDOWN_FACTOR * before * relief:
                return False  # no slowdown seen after the drop: the level's own tail, or it ended before the drop
            if float(np.median(recent)) > RETURN_FACTOR * before * relief:
                return False
        for n in managed:
            back = max(want[n], min(held.levels[n], len(self.subs[n].levels) - 1))
            if back > want[n]:
                want[n] = back
                self.subs[n].blocked_until[back] = -math.inf
                why[n].append(f"return: level {back} held until the slowdown of {held.since:.1f} s, which has ended "
                              f"({', '.join(held.before)} as fast as before it)")
        for n in self.order:  # the slowdown's frames describe what has ended (as JointPolicy.detect_improvement), and
            # the newest ones, which can still hold its last frames, were judged by this return: the levels returned
            # to are predicted from their own frames before the slowdown
            self.subs[n].tails.forget_between(held.since - RECENT_S, math.inf)
        self.held, self.returned_at = None, now
        return True

    def _settled(self, name: str, now: float) -> bool:
        sub, cfg = self.subs[name], self.config
        return now - self.last_change >= cfg.min_dwell_s and sub.tails.count(sub.state.level) >= sub.frames_to_trust()

    def _fits_all(self, ctx: Mapping[str, _AppCtx], combo: Mapping[str, int], names: Sequence[str], cpu: int | None,
                  gpu: int | None, now: float, drop: Sequence[str] = (), up: str | None = None) -> bool:
        for n in names:
            limit = ctx[n].up_budget if n == up else ctx[n].budget
            if self.predict(n, combo[n], combo, cpu, gpu, drop=n in drop and combo[n] <= ctx[n].cur, now=now) > limit:
                return False
        return True

    def _weighted(self, combo: Mapping[str, int]) -> float:
        return sum(self.apps[n].priority * (self.subs[n].levels[combo[n]].accuracy or 0.0) for n in self.order)

    def _on_violation(self, ctx: dict[str, _AppCtx], violating: list[str], free: list[str], want: dict[str, int],
                      cap_c: int | None, cap_g: int | None, now: float,
                      why: dict[str, list[str]]) -> tuple[dict[str, int], tuple[str, ...]]:
        """Levels after a violation: lower priorities yield first, then the violating apps drop themselves.

        Stage 1: only the apps of lower priority than the highest-priority violator move (each at most to its
        floor), if the interference model predicts that enough. Stage 2: those apps at their floors, and the
        violators (with any app of their priority) drop as far as needed. A higher-priority app never loses
        accuracy while a lower-priority one runs above its floor for it: what users can rely on.
        """
        cfg = self.config
        managed = [n for n in self.order if n in free]
        best_p = max(self.apps[n].priority for n in violating)
        lower = [n for n in managed if self.apps[n].priority < best_p and n not in violating]
        stage2_base = dict(want)
        for n in lower:
            stage2_base[n] = ctx[n].floor
        stage2 = [n for n in managed if n not in lower and self.apps[n].priority <= best_p]
        stages = ([(want, lower)] if lower else []) + [(stage2_base, stage2)]
        for base, movable in stages:
            pick = self._search(ctx, base, movable, managed, cap_c, cap_g, now, violating)
            if pick is None:
                continue
            for n in managed:
                if pick[n] < ctx[n].cur and n in violating and ctx[n].replanned:
                    why[n].append(f"level {pick[n]}, the most accurate predicted within it")  # no frame failed
                elif pick[n] < ctx[n].cur and n in violating:
                    self.subs[n].record_failure(ctx[n].cur, now)
                    why[n].append(f"level {ctx[n].cur} misses {ctx[n].target:g} ms more often than the "
                                  f"{cfg.miss_budget:.0%} budget → level {pick[n]}")
                elif pick[n] < ctx[n].cur:
                    helped = [v for v in violating if self.apps[v].priority > self.apps[n].priority] or violating
                    why[n].append(f"yields to {', '.join(helped)} (priority {self.apps[n].priority:g} < "
                                  f"{max(self.apps[v].priority for v in helped):g}) → level {pick[n]}")
                elif n in violating and ctx[n].replanned:
                    why[n].append(f"level {ctx[n].cur} kept, lower-priority apps yield")
                elif n in violating:
                    why[n].append(f"level {ctx[n].cur} missed {ctx[n].target:g} ms; kept, lower-priority apps yield")
                    self.evidence_since[n] = now  # its misses were under the combination before the yield
            return pick, ()
        # no combination meets every deadline: give deadlines up, lowest priority first
        given_up: list[str] = []
        for n in reversed(self.order):
            if n not in managed:
                continue
            given_up.append(n)
            keep = [m for m in managed if m not in given_up]
            trial = dict(stage2_base)
            for m in given_up:
                trial[m] = ctx[m].floor
            pick = self._search(ctx, trial, keep, keep, cap_c, cap_g, now, violating) if keep else trial
            if pick is None:
                continue
            for m in managed:
                if m in violating and pick[m] < ctx[m].cur:
                    self.subs[m].record_failure(ctx[m].cur, now)
            for m in given_up:
                why[m].append(f"no combination of levels meets every deadline: {m} (priority "
                              f"{self.apps[m].priority:g}) yields, fastest allowed level {ctx[m].floor}")
            for m in keep:
                if pick[m] != ctx[m].cur:
                    why[m].append(f"level {ctx[m].cur} → {pick[m]} to hold {ctx[m].target:g} ms")
            return pick, tuple(given_up)
        return want, tuple(given_up)  # unreachable: with every deadline given up the trial is returned

    def _search(self, ctx: dict[str, _AppCtx], base: dict[str, int], movable: Sequence[str], check: Sequence[str],
                cap_c: int | None, cap_g: int | None, now: float, drop: Sequence[str]) -> dict[str, int] | None:
        """Most priority-weighted-accurate combination, each movable app at or below its level, meeting every
        deadline of ``check`` at the highest allowed clocks; None when none does."""
        ranges = [range(ctx[n].floor, max(base[n], ctx[n].floor) + 1) for n in movable]
        total = math.prod(len(r) for r in ranges)
        best: tuple[float, dict[str, int]] | None = None
        if total > MAX_COMBINATIONS:  # greedy: lower the lowest-priority movable app first, one level at a time
            combo = dict(base)
            for n in reversed(list(movable)):
                while not self._fits_all(ctx, combo, check, cap_c, cap_g, now, drop) and combo[n] > ctx[n].floor:
                    combo[n] -= 1
            return combo if self._fits_all(ctx, combo, check, cap_c, cap_g, now, drop) else None
        for levels in itertools.product(*[reversed(r) for r in ranges]):
            combo = dict(base)
            combo.update(zip(movable, levels, strict=True))
            if not self._fits_all(ctx, combo, check, cap_c, cap_g, now, drop):
                continue
            score = self._weighted(combo)
            if best is None or score > best[0] + 1e-9:
                best = (score, combo)
        return None if best is None else best[1]

    def _try_probe(self, ctx: dict[str, _AppCtx], free: list[str], want: dict[str, int], cap_c: int | None,
                   cap_g: int | None, now: float, why: dict[str, list[str]]) -> None:
        """One app up, the move with the largest weighted gain that every app's prediction allows."""
        cfg = self.config
        if now - self.last_violation < cfg.probe_quiet_s or not all(self._settled(n, now) for n in free):
            return
        cands: list[tuple[float, str, int]] = []
        for n in free:
            sub, c = self.subs[n], ctx[n]
            top, up = len(sub.levels) - 1, c.cur
            for lv in range(c.cur + 1, top + 1):
                trial = dict(want)
                trial[n] = lv
                # the fit first: probe_allowed lifts a block when conditions are clearly better, and a level that does
                # not fit anyway must not lose its block on the way (the single-app order, JointPolicy.highest_probe)
                if not self._fits_all(ctx, trial, [m for m in free], cap_c, cap_g, now, up=n):
                    break
                if not sub.probe_allowed(lv, now, sub.tail_ratio(lv)):
                    break
                up = lv
            if up > c.cur:
                gain = self.apps[n].priority * ((sub.levels[up].accuracy or 0.0) - (sub.levels[c.cur].accuracy or 0.0))
                cands.append((gain, n, up))
            elif c.cur < top and now < sub.blocked_until[c.cur + 1]:
                why[n].append(f"level {c.cur + 1} blocked for {sub.blocked_until[c.cur + 1] - now:.1f} s more after "
                              f"{sub.failures[c.cur + 1] or 1} failed stay(s)")
        if not cands:
            return
        gain, n, up = max(cands, key=lambda x: (x[0], -self.order.index(x[1])))
        self.probe = _Probe(n, ctx[n].cur, up, now)
        want[n] = up
        why[n].append(f"probe: level {up} predicted within {ctx[n].up_budget:.1f} ms with every other app "
                      f"still within its deadline (weighted gain {gain:.2f})")

    def _clocks(self, ctx: dict[str, _AppCtx], want: dict[str, int], cpus: list[int | None], gpus: list[int | None],
                cap_c: int | None, cap_g: int | None, now: float) -> tuple[int | None, int | None]:
        """The lowest-power clock pair that keeps every app's predicted tail within its plan."""
        managed = [n for n in self.order if ctx[n].target is not None and not ctx[n].stale]
        pair = None
        for c in cpus:
            for g in gpus:
                if self._fits_all(ctx, want, managed, c, g, now, drop=[n for n in managed if ctx[n].violating]):
                    key = (self.device.power_w(c, g), c or 0, g or 0)
                    if pair is None or key < pair[0]:
                        pair = (key, c, g)
        c, g = (pair[1], pair[2]) if pair is not None else (cap_c, cap_g)
        recent = now - self.last_freq_change < self.config.freq_min_dwell_s  # raise at once, lower after a dwell
        if recent and self.cpu is not None and c is not None and c < self.cpu <= (cap_c or self.cpu):
            c = self.cpu
        if recent and self.gpu is not None and g is not None and g < self.gpu <= (cap_g or self.gpu):
            g = self.gpu
        return c, g

    def _commit(self, now: float, levels: dict[str, int], cpu: int | None, gpu: int | None, reasons: dict[str, str],
                reason: str, mode: str, yielded: tuple[str, ...],
                preds: dict[str, float | None] | None = None) -> MultiDecision:
        for n in self.order:
            st = self.subs[n].state
            if levels[n] != st.level:
                self.subs[n].entered = (levels[n], self.subs[n].tail_ratio(levels[n]))  # before the reference moves
                st.level, st.last_level_change = levels[n], now
                self.level_history[n].append((now, levels[n]))
                del self.level_history[n][:-64]
                self.last_change = now
        if (cpu, gpu) != (self.cpu, self.gpu):
            self.cpu, self.gpu, self.last_freq_change = cpu, gpu, now
        for sub in self.subs.values():  # every app's samples are scaled by the clocks they ran under
            if (sub.state.cpu, sub.state.gpu) != (cpu, gpu):
                sub.state.cpu, sub.state.gpu, sub.state.last_freq_change = cpu, gpu, now
                sub.state.freq_history.append((now, cpu, gpu))
                del sub.state.freq_history[:-64]
        return MultiDecision(dict(levels), cpu, gpu, reason, reasons, mode, preds or dict.fromkeys(self.order),
                             yielded)


def make_multi_policy(apps: Sequence[AppSpec], cpu_freqs_khz: Sequence[int] = (), gpu_freqs_hz: Sequence[int] = (),
                      config: PolicyConfig | None = None, cpu_power: DomainPower | None = None,
                      gpu_power: DomainPower | None = None) -> MultiPolicy:
    """A :class:`MultiPolicy` (validated: unique names, priorities above 0, a valid config)."""
    return MultiPolicy(apps, cpu_freqs_khz, gpu_freqs_hz, config, cpu_power, gpu_power)
