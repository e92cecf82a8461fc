"""The joint policy as a deadline-miss-budget controller, on small noisy plants (pure Python, no ROS).

Each plant draws per-frame latencies ``L_true(level) · exp(σ·N(0, 1))`` (seeded; σ = 0.25 is the spread
measured on a shared 2-core machine, p90/p50 ≈ 1.4) at a fixed frame rate, and hands the policy the frames
finished since its previous decision, each with the level that ran it, as the manager node does.
"""

from __future__ import annotations

import itertools
import math
import random
from statistics import NormalDist
from types import SimpleNamespace

import pytest

from dynofa_ros.control.policy import LatencySample, LevelSpec, PolicyConfig, PolicyInputs, Reading, make_policy
from dynofa_ros.control.tail_estimate import TailEstimator

SIGMA = 0.25


def run_plant(policy, true_ms, target, seconds=120.0, fps=20.0, decide_hz=5.0, seed=1, start_level=None,
              slowdown=lambda t: 1.0, cpu_load=None, sigma=SIGMA, level_factor=lambda t, level: 1.0):
    """Returns (levels per frame, misses per frame, decision times at which the level changed, up-move times).

    ``slowdown(t)``: contention, a factor on every level's latency at time t; ``level_factor(t, level)`` one more on
    one level's (contention slows levels unequally: measured/profiled 1.34 at level 4, 1.06 at level 6, issue 16).
    ``cpu_load(t)``: the monitor's CPU
    load reading (%) at time t, read at 2 Hz as monitor_node does; None: no monitor."""
    rng = random.Random(seed)
    if start_level is not None:
        policy.state.level = start_level
    level = policy.state.level
    pending: list[LatencySample] = []
    frames, misses, changes, ups = [], [], [], []
    next_decision, next_load, load = 0.0, 0.0, None
    for i in range(int(seconds * fps)):
        t = i / fps
        lat = true_ms[level] * slowdown(t) * level_factor(t, level) * math.exp(sigma * rng.gauss(0.0, 1.0))
        pending.append(LatencySample(lat, level, t + lat / 1000.0))
        frames.append(level)
        misses.append(lat > target)
        if cpu_load is not None and t >= next_load:
            load, next_load = Reading(cpu_load(t), t), next_load + 0.5
        if t >= next_decision:
            next_decision += 1.0 / decide_hz
            d = policy.decide(PolicyInputs(now=t, target_latency_ms=target, latencies=tuple(pending), cpu_load=load))
            pending = []
            if d.level != level:
                changes.append(t)
                if d.level > level:
                    ups.append((t, d.level))
                level = d.level
    return frames, misses, changes, ups


def watch_decisions(policy, see, before=lambda: None) -> None:
    """Every decision ``policy`` takes from here on also goes to ``see(inputs, decision, before())``, ``before``
    read just before the decision is taken: what a test observes of the policy's own, unchanged ``decide``."""
    decide = policy.decide

    def watched(inp):
        seen_before = before()
        d = decide(inp)
        see(inp, d, seen_before)
        return d

    policy.decide = watched


def test_noise_wider_than_the_level_spacing_does_not_make_it_flap():
    # three levels 10 % apart; level 1's 98th percentile fits 19.7 ms, level 2 misses 2.6 % of frames:
    # the right answer is to stay at level 1, a mean-based controller sees level 2's mean (12.5 ms) fit easily
    profile = [10.0, 11.0, 12.1]
    levels = [LevelSpec(70.0, profile[0]), LevelSpec(72.0, profile[1]), LevelSpec(74.0, profile[2])]
    target = 19.7
    joint = make_policy("joint", levels, config=PolicyConfig(latency_margin=0.05, up_hysteresis=0.03))
    frames, misses, changes, _ = run_plant(joint, profile, target, start_level=1)
    per_min = len(changes) / 2.0
    assert per_min <= 6.0, changes
    assert sum(misses) / len(misses) <= 0.03
    assert frames.count(1) / len(frames) >= 0.9
    # the same plant under a controller that plans on a smoothed mean flaps: the test can tell them apart
    _, _, mean_changes, _ = run_plant(MeanController(profile), profile, target, start_level=1)
    assert len(mean_changes) / 2.0 > 6.0


class MeanController:
    """What this package's joint policy did before planning on tails: an EWMA of measured/profiled
    ratios (fast up, slow down), the most accurate level whose mean fits ``target · 0.9``, 2 s dwell.
    A bad controller on purpose, so that the flapping test is seen to fail on one."""

    def __init__(self, profile: list[float]):
        self.profile = profile
        self.state = SimpleNamespace(level=len(profile) - 1)
        self.ratio, self.changed = 1.0, -math.inf

    def decide(self, inp: PolicyInputs) -> SimpleNamespace:
        for s in inp.latencies:
            r = s.latency_ms / self.profile[s.level]
            self.ratio += (0.7 if r > self.ratio else 0.3) * (r - self.ratio)
        fit = [i for i, p in enumerate(self.profile) if p * self.ratio <= 0.9 * inp.target_latency_ms]
        want = fit[-1] if fit else 0
        if want != self.state.level and inp.now - self.changed >= 2.0:
            self.state.level, self.changed = want, inp.now
        return SimpleNamespace(level=self.state.level)


def test_a_failed_probe_is_retried_later_and_later():
    # the profile says level 2 fits; in truth it runs 1.4x slower than profiled and misses 40 % of frames
    profile = [10.0, 12.0, 14.0]
    true_ms = [10.0, 12.0, 14.0 * 1.4]
    levels = [LevelSpec(70.0 + i, p) for i, p in enumerate(profile)]
    target = 23.0
    cfg = PolicyConfig(probe_quiet_s=3.0, probe_backoff_max_s=60.0, window_s=4.0)
    joint = make_policy("joint", levels, config=cfg)
    frames, _, _, ups = run_plant(joint, true_ms, target, seconds=240.0, start_level=1)
    probes = [t for t, lvl in ups if lvl == 2]
    assert len(probes) >= 3, "it must probe, or the test proves nothing"
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert all(g2 >= 1.5 * g1 for g1, g2 in itertools.pairwise(gaps)) or gaps[-1] >= cfg.probe_backoff_max_s, gaps
    assert len(probes) <= 8
    assert frames.count(2) / len(frames) < 0.05


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_most_accurate_level_that_misses_on_an_idle_machine_is_retried_later_and_later_too(seed):
    # nothing changes on this plant: the top level runs 1.5x slower than profiled and misses about a third of its
    # frames, every time. Its failures must double its block as any level's do; the limit cycle this stops ("up,
    # miss, down, up" every 8 s) came back for the top level, whose count any quiet decision at it cleared, and for
    # any level through the early release, which compared the transfer from the level below with the level's own
    # tail full of the late frames that failed it
    profile = [10.0, 12.0, 14.0]
    true_ms = [10.0, 12.0, 14.0 * 1.5]
    levels = [LevelSpec(70.0 + i, p) for i, p in enumerate(profile)]
    cfg = PolicyConfig()
    joint = make_policy("joint", levels, config=cfg)
    # σ = 0.15, one inference thread's spread: the prediction for level 2 from level 1's frames fits the plan
    _, _, _, ups = run_plant(joint, true_ms, 22.0, seconds=240.0, start_level=1, seed=seed, sigma=0.15)
    probes = [t for t, lvl in ups if lvl == 2]
    assert len(probes) >= 3, "it must probe, or the test proves nothing"
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    # the k-th failure blocks the level for probe_quiet_s · 2^(k-1), up to the cap; the way back up through the
    # level below takes ~8 s here anyway, so the first gaps show the climb and the later ones the doubling
    blocks = [min(cfg.probe_quiet_s * 2 ** k, cfg.probe_backoff_max_s) for k in range(len(gaps))]
    assert all(g >= b for g, b in zip(gaps, blocks, strict=True)), (gaps, blocks)
    assert len(probes) <= 8, probes


def test_samples_across_a_switch_count_only_for_the_level_that_ran_them():
    levels = [LevelSpec(70.0, 5.0), LevelSpec(80.0, 16.0)]
    joint = make_policy("joint", levels, config=PolicyConfig(min_dwell_s=0.0, probe_quiet_s=0.0))
    t, samples = 0.0, []
    for i in range(40):  # level 0 runs at its profile
        samples.append(LatencySample(5.0, 0, t + 0.05 * i))
    joint.state.level = 0
    joint.decide(PolicyInputs(now=2.0, target_latency_ms=30.0, latencies=tuple(samples)))
    # a switch to level 1: its frames (16 ms) arrive while level 0 is still the last level announced
    after = [LatencySample(16.0, 1, 2.0 + 0.05 * i) for i in range(1, 10)]
    joint.decide(PolicyInputs(now=2.5, target_latency_ms=30.0, latencies=tuple(after)))
    assert joint.tails.tail_ratio(0, 0.98) == pytest.approx(1.0)  # level 0 is not "3.2x slower"
    assert joint.tails.tail_ratio(1, 0.98) == pytest.approx(1.0)  # the first frame of level 1 is kept apart
    assert joint.tails.count(1) == len(after) - 1


def test_a_levels_tail_follows_every_new_sample_and_the_end_of_the_window():
    """The policy keeps each level's tail until its samples change (one decision asks for it several times):
    a sample that arrives, or one that leaves the window, must change the answer at once."""
    levels = [LevelSpec(70.0, 10.0), LevelSpec(80.0, 12.0)]
    joint = make_policy("joint", levels, config=PolicyConfig(window_s=2.0))
    joint.state.level = 0
    joint.ingest(PolicyInputs(now=1.0, latencies=tuple(LatencySample(10.0, 0, 0.05 * i) for i in range(20))))
    steady = joint.tail_ratio(0), joint.tail_ratio(1)
    assert steady == pytest.approx((1.0, 1.0))
    joint.ingest(PolicyInputs(now=1.1, latencies=(LatencySample(40.0, 0, 1.05),)))  # one frame 4x slower
    assert joint.tail_ratio(0) > steady[0] and joint.tail_ratio(1) > steady[1]
    joint.tails.forget_before(3.0)  # 2 s later: only the slow frame is left in the window
    assert joint.tail_ratio(0) == pytest.approx(4.0) and joint.tail_ratio(1) == pytest.approx(4.0)


def test_tail_estimate_matches_a_known_distribution():
    """The empirical 98th percentile of n log-normal draws, against the distribution's own quantile.

    Tolerance: the number of draws below the true q-quantile is Binomial(n, q), standard deviation
    sqrt(n q (1-q)) = 6.3 draws for n = 2000; four of those either side is the rank interval that any seed
    lands in with probability > 0.9999, so the estimate must lie between the true quantiles at those ranks.
    """
    n, q = 2000, 0.98
    rng = random.Random(7)
    est = TailEstimator([10.0], window_s=1e9)
    for i in range(n + 1):  # the first sample only sets the level (first-after-switch rule does not apply)
        est.add(0, 10.0 * math.exp(SIGMA * rng.gauss(0.0, 1.0)), float(i))
    got = est.tail_ratio(0, q)
    sd = math.sqrt(n * q * (1 - q)) / n
    z = NormalDist()
    lo, hi = (math.exp(SIGMA * z.inv_cdf(p)) for p in (q - 4 * sd, q + 4 * sd))
    assert lo <= got <= hi, (lo, got, hi)


def test_measure_first_runs_the_cheapest_level_until_this_machine_is_measured_then_probes_up():
    """A profile made on another machine that reads 2x fast: planning the first level from it picks a level
    that misses from the first frame; ``measure_first`` runs the lowest level until samples arrive, learns the
    2x from them and probes up to a level that really fits."""
    profile = [5.0, 7.0, 9.0, 11.0, 13.0]
    levels = [LevelSpec(70.0 + i, ms) for i, ms in enumerate(profile)]
    true_ms = [2.0 * ms for ms in profile]   # this machine: twice the profile
    target = 40.0  # here level 2 fits (p98 ≈ 30 ms at σ 0.25); from the profile level 4 looks fine (p98 ≈ 22 ms)
    cfg = dict(latency_margin=0.05, up_hysteresis=0.03, prior_log_spread=0.25)
    results = {}
    for first in (0, 1):
        pol = make_policy("joint", levels, config=PolicyConfig(measure_first=first, **cfg))
        d0 = pol.decide(PolicyInputs(now=0.0, target_latency_ms=target))  # before any frame
        frames, misses, _, ups = run_plant(pol, true_ms, target, seconds=40.0)
        results[first] = (d0, frames, misses, ups)
    d0, frames, misses, ups = results[1]
    assert d0.level == 0 and "cold start" in d0.reason
    assert sum(misses[:20]) == 0                       # the first second: nothing planned from the wrong profile
    assert ups and max(frames) >= 1                    # it does go up once measured
    d0_old, _, misses_old, _ = results[0]
    assert d0_old.level > 0                            # from the profile: a level this machine cannot hold
    assert sum(misses_old[:20]) > sum(misses[:20])


def _first_up(pol, frame_ms, target, seconds, fps=20.0, decide_hz=10.0):
    """Feed ``frame_ms(i, level)`` at ``fps``; the time of the first move up, or None."""
    level, pending, next_decision = pol.state.level, [], 0.0
    for i in range(int(seconds * fps)):
        t = i / fps
        lat = frame_ms(i, level)
        pending.append(LatencySample(lat, level, t + lat / 1000.0))
        if t >= next_decision:
            next_decision += 1.0 / decide_hz
            d = pol.decide(PolicyInputs(now=t, target_latency_ms=target, latencies=tuple(pending)))
            pending = []
            if d.level > level:
                return t
            level = d.level
    return None


def test_a_spike_at_the_floor_drops_nothing_and_delays_no_probe_while_a_floor_that_misses_probes_nothing():
    """The real step run of stop 32's repeat: the second frame after start-up took 31.9 ms (then 7-10 ms) at level
    0, over target · (1 + margin); the manager counted it as a violation, waited ``probe_quiet_s`` (8 s) for a
    probe, and ran level 0 through most of the idle phase (2.5 points below the oracle there). Nothing dropped: no
    quiet period is due. A floor that keeps missing still probes nothing: its own tail keeps every level out."""
    profile = [5.0, 7.0, 9.0, 11.0, 13.0]
    levels = [LevelSpec(70.0 + i, ms) for i, ms in enumerate(profile)]
    cfg = PolicyConfig(measure_first=1, probe_quiet_s=8.0, prior_log_spread=0.25)
    rng = random.Random(5)
    noise = [math.exp(0.1 * rng.gauss(0.0, 1.0)) for _ in range(400)]

    def spike(i, level):
        return 35.0 if i == 1 else profile[level] * noise[i]

    pol = make_policy("joint", levels, config=cfg)
    pol.decide(PolicyInputs(now=-1.0))                                   # the graph starts before the camera
    up = _first_up(pol, spike, target=30.0, seconds=20.0)
    assert up is not None and up < cfg.probe_quiet_s, up                # the probe did not wait for the spike

    def slow_floor(i, level):  # every frame of the floor misses for 12 s, then the machine is calm
        return (33.0 if i < 240 else profile[level]) * noise[i]

    pol = make_policy("joint", levels, config=cfg)
    pol.decide(PolicyInputs(now=-1.0))
    up = _first_up(pol, slow_floor, target=30.0, seconds=20.0)
    assert up is not None and up >= 12.0, up                             # nothing above the floor while it misses


def test_measure_first_without_a_target_waits_for_samples_and_a_quiet_period_before_the_most_accurate_level():
    """At start-up the camera often runs before the application publishes its target (the real bench's 640x480
    run: the first frame's sample came 0.5 s before the replayed target, the manager went to the top level, and
    the target's first frames there all missed). With ``measure_first`` and no target ever set, the most accurate
    level waits ``probe_quiet_s`` after the first samples; a target in that time is planned from the cold start."""
    levels = [LevelSpec(70.0, 5.0), LevelSpec(72.0, 9.0)]
    pol = make_policy("joint", levels, config=PolicyConfig(measure_first=1, probe_quiet_s=4.0))
    assert pol.decide(PolicyInputs(now=0.0)).level == 0
    d = pol.decide(PolicyInputs(now=2.5, latencies=(LatencySample(6.0, 0, 2.4),)))  # after min_dwell_s
    assert d.level == 0 and "no latency target yet" in d.reason
    d = pol.decide(PolicyInputs(now=6.5, latencies=(LatencySample(6.0, 0, 6.4),)))  # probe_quiet_s after the first
    assert d.level == 1 and d.mode == "no_target"
    # once a target has been set, clearing it is no start-up: the most accurate level at once (dwell allowing)
    pol = make_policy("joint", levels, config=PolicyConfig(measure_first=1, probe_quiet_s=4.0, min_dwell_s=0.0))
    pol.decide(PolicyInputs(now=0.0, target_latency_ms=8.0))
    pol.decide(PolicyInputs(now=0.5, target_latency_ms=8.0, latencies=(LatencySample(6.0, 0, 0.4),)))
    assert pol.decide(PolicyInputs(now=0.6, latencies=(LatencySample(6.0, 0, 0.55),))).level == 1


def test_a_level_far_inside_the_plan_is_probed_after_a_handful_of_frames_a_marginal_one_waits():
    """Near the target a tail needs ~1/miss_budget frames (50 at 2 %); far below it a few frames suffice: at
    5 fps and a 1 s deadline the cold start does not sit at level 0 for 10 s."""
    levels = [LevelSpec(70.0, 10.0), LevelSpec(75.0, 20.0)]
    for target, early in ((1000.0, True), (46.0, False)):  # level 1: p98 ≈ 33 ms, within half of 1000 not of 46
        pol = make_policy("joint", levels, config=PolicyConfig(measure_first=1, min_dwell_s=0.0))
        pol.decide(PolicyInputs(now=0.0, target_latency_ms=target))
        rng = random.Random(3)
        level, t, up_at = 0, 0.0, None
        for i in range(60):  # 12 s at 5 fps, one decision per frame
            t = 0.2 * (i + 1)
            lat = (10.0, 20.0)[level] * math.exp(SIGMA * rng.gauss(0.0, 1.0))
            d = pol.decide(PolicyInputs(now=t, target_latency_ms=target, latencies=(LatencySample(lat, level, t),)))
            if d.level > level and up_at is None:
                up_at = i + 1
            level = d.level
        assert up_at is not None, target
        assert (up_at <= 10) == early, (target, up_at)


def test_when_contention_ends_the_way_up_is_planned_from_the_new_frames_not_the_old_window():
    """Contention (2x) ends at 30 s. The window still holds 8 s of slow frames whose tail blocks every level
    above; the running level's newest frames, all far faster than its older ones, are a new condition: the
    old frames are forgotten and the newest ones, with the spread measured within one condition, plan the
    way up at once. Bursts of 2-4 s (bench/contention.py, bursty) end before a window or a quiet period."""
    profile = [10.0, 14.0, 19.6]
    levels = [LevelSpec(70.0 + 4 * i, ms) for i, ms in enumerate(profile)]
    target = 40.0  # slowed: level 0 fits (p98 ≈ 33 ms), level 1 does not (≈ 47); idle: level 2 fits (≈ 33)
    pol = make_policy("joint", levels, config=PolicyConfig(latency_margin=0.05, up_hysteresis=0.03))
    frames, misses, _, ups = run_plant(pol, profile, target, seconds=45.0, start_level=0,
                                       slowdown=lambda t: 2.0 if t < 30.0 else 1.0)
    slow = frames[20 * 10:20 * 30]
    assert slow.count(0) / len(slow) >= 0.9            # under contention it holds the level that fits
    back = [t for t, lvl in ups if t >= 30.0 and lvl == 2]
    assert back and back[0] <= 33.0, ups               # within 3 s, not after the 8 s window has emptied
    assert sum(misses) / len(misses) <= 0.03


def test_when_contention_begins_the_drop_goes_to_the_level_it_allows_not_to_the_bottom():
    """Contention (1.4x) begins at 20 s: level 2 no longer fits, level 1 does. The drop is planned from the
    newest frames' median times the spread of the frames before them; the window's own spread mixes the fast
    past with the slow present, counts the slowdown twice and sends the drop to level 0, from where the way
    back to level 1 takes a probe and a quiet period (bench/contention.py, step: L0 -> L1 -> L2 over 7 s)."""
    profile = [10.0, 14.0, 19.6]
    levels = [LevelSpec(70.0 + 4 * i, ms) for i, ms in enumerate(profile)]
    target = 40.0  # p98 = 1.67 x median: idle, level 2 (≈ 33 ms) fits; x1.4, level 2 (≈ 46) no, level 1 (≈ 33) does
    pol = make_policy("joint", levels, config=PolicyConfig(latency_margin=0.05, up_hysteresis=0.03))
    frames, misses, changes, _ = run_plant(pol, profile, target, seconds=40.0, start_level=2,
                                           slowdown=lambda t: 1.4 if t >= 20.0 else 1.0)
    assert frames[20 * 19] == 2                          # idle: the top level held
    after = frames[20 * 20:]
    first_drop = next(lvl for lvl in after if lvl != 2)
    assert first_drop == 1, changes                      # the level the new condition allows
    assert after.count(0) == 0 and after[-20 * 10:].count(1) / (20 * 10) >= 0.9
    assert sum(misses) / len(misses) <= 0.03


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_drop_that_went_too_far_climbs_back_to_the_levels_it_skipped_without_the_quiet_period(seed):
    """Level 3 has just been entered (it never held) when contention (1.4x) begins with a stall (3.5x for 0.3 s,
    as a CPU stalls when busy processes start): the drop is planned on the stall's frames and goes to level 0,
    where under the steady contention level 2 holds. Levels 1 and 2 were skipped, never shown to fail: once
    level 0's own frames are enough to trust, the climb to them starts without waiting ``probe_quiet_s`` (real
    step and 640x480 runs, stop 40: level 5 -> 4 on the stall, 1.2 s later level 4 -> 0, then 8 s at level 0 where
    level 3 held, about -0.85 points a run). Level 3, which failed, still waits its block."""
    profile = [10.0, 12.0, 14.4, 17.3]
    levels = [LevelSpec(70.0 + 2 * i, ms) for i, ms in enumerate(profile)]
    target = 40.0  # p98 = 1.67 x median. x1.4: level 2 (≈ 34 ms) fits, level 3 (≈ 40) does not
    quiet = 8.0
    pol = make_policy("joint", levels, config=PolicyConfig(latency_margin=0.05, up_hysteresis=0.03,
                                                           probe_quiet_s=quiet))
    frames, misses, changes, ups = run_plant(pol, profile, target, seconds=20.0, start_level=3, seed=seed,
                                             slowdown=lambda t: 3.5 if t < 0.2 else 1.4)
    dropped_to = min(frames[:20])
    assert dropped_to < 2, changes                    # the stall's frames sent the drop too far
    back = [t for t, lvl in ups if lvl == 2]
    assert ups[0][0] < quiet - 2.0, ups               # the first move up well before the quiet period ends,
    assert back and back[0] < quiet, ups              # and level 2 reached before it (no skip: 8.05 s, all seeds)
    assert all(lvl <= 2 for lvl in frames[20:20 * 8])  # the level that failed waits its block
    assert sum(misses[20:]) / len(misses[20:]) <= 0.03


def test_a_drop_enters_a_level_on_the_same_bar_as_a_probe():
    """Contention of 1.75-1.9x hits the top level of a finely spaced family (8 % apart). Each drop is planned from
    the slowdown's first frames: a level whose predicted tail fits the plan (``plan_ms``) but not a probe's bar
    (``probe_ms``, the up hysteresis below it) is too marginal to enter on that evidence (the demo, stop 40: a drop
    to level 4 predicted at 27.8 of 28.5 ms ran 22 s at 3.6-4.5 % misses). Planned within ``plan_ms``, four of
    these drops entered such a level."""
    profile = [10.0 * 1.08 ** i for i in range(7)]
    levels = [LevelSpec(70.0 + i, ms) for i, ms in enumerate(profile)]
    cfg = PolicyConfig(latency_margin=0.05, up_hysteresis=0.03)
    target = 40.0
    drops = []
    for factor, seed in itertools.product((1.75, 1.8, 1.85, 1.9), (1, 2, 3)):
        pol = make_policy("joint", levels, config=cfg)

        def see(inp, d, before, run=(factor, seed)):
            if 0 < d.level < before and "misses" in d.reason:  # a violation's drop to a level with a choice below it
                drops.append((*run, d))

        watch_decisions(pol, see, before=lambda pol=pol: pol.state.level)
        run_plant(pol, profile, target, seconds=20.0, start_level=6, seed=seed,
                  slowdown=lambda t, f=factor: 1.0 if t < 10.0 else f)
    assert len(drops) >= 6, "the plant must make drops with a choice, or the test proves nothing"
    marginal = [(f, s, d.level, round(d.predicted_latency_ms, 2)) for f, s, d in drops
                if d.predicted_latency_ms > cfg.probe_ms(target)]
    assert not marginal, (cfg.probe_ms(target), marginal)


@pytest.mark.parametrize("seed", [1, 3, 8])
def test_a_level_that_misses_more_often_than_the_budget_but_too_rarely_to_prove_it_is_left_once_its_window_shows_it(
        seed):
    """The top level misses 3 % of frames (its true p97 is the target), level 1 0.75 %, at 10 frames a second (a
    640x480 camera's rate here). Two late frames in an 80-frame window are noise at a 2 % budget, and at 3 % the
    binomial test proves a violation in about one window of fifteen: the level runs on (the demo, stops 40 and 41:
    level 4 at 3.3-4.5 % for 11-22 s). Judged on its own tail once the stay fills the window, it is left within
    the minute and the run's misses stay within the budget. In these seeds the previous policy ran level 2 for
    87-100 % of the frames at 2.3-2.8 % misses."""
    profile = [10.0, 11.5, 13.2]
    levels = [LevelSpec(70.0 + 2 * i, ms) for i, ms in enumerate(profile)]
    target = 13.2 * math.exp(SIGMA * NormalDist().inv_cdf(0.97))  # 21.1 ms: level 2 misses 3 %, level 1 0.75 %
    pol = make_policy("joint", levels, config=PolicyConfig(latency_margin=0.05, up_hysteresis=0.03))
    reasons = []
    watch_decisions(pol, lambda inp, d, _: reasons.append(d.reason))
    frames, misses, changes, _ = run_plant(pol, profile, target, seconds=90.0, fps=10.0, start_level=2, seed=seed)
    assert changes and changes[0] < 60.0, changes
    assert any("its own tail over this stay" in r for r in reasons)  # the reason says which test ended it
    assert frames.count(2) / len(frames) <= 0.5, changes  # no return to it on its own frames' evidence
    assert sum(misses) / len(misses) <= 0.02
    assert len(changes) / 1.5 <= 6.0, changes


@pytest.mark.parametrize("seed", [2, 3, 5])
def test_the_level_a_burst_drops_to_steps_down_once_its_record_of_bursts_misses_more_than_the_budget(seed):
    """Bursts of 2.4x contention that slow level 2 a further 1.06x (contention slows levels unequally). Planned
    from the top level's late frames, level 2 is predicted to fit (p98 ≈ 36.6 ms against a 36.8 ms bar); in a burst
    it misses ~4 % of frames, 2-3 of a burst's 60: too few for the violation test in one stay, and the plan from
    its own frames of the burst picks it again. Once its record of the bursts it held through (pooled) misses more
    often than the budget, a burst's drop goes below it (real bursty rounds, stops 41 and 42: level 4 lost 1-3
    frames in nearly every burst it ran, where the oracle ran level 3). The previous policy dropped to level 2 in
    every burst of these seeds."""
    levels = [LevelSpec(70.0 + 2 * i, ms) for i, ms in enumerate(BURST_PROFILE)]
    pol = make_policy("joint", levels, config=PolicyConfig(latency_margin=0.05, up_hysteresis=0.03))
    bursts = [(8.0 + 6.0 * i, 11.0 + 6.0 * i) for i in range(8)]
    back_drops = []

    def see(inp, d, failing):
        if "held through the last slowdown: it is back" in d.reason:  # a drop to the level that held
            back_drops.append((inp.now, failing, d.level))

    def in_burst(t: float) -> bool:
        return any(a <= t < b for a, b in bursts)

    watch_decisions(pol, see, before=lambda: pol.burst_record_fails(2))
    frames, _, _, _ = run_plant(pol, BURST_PROFILE, 40.0, seconds=bursts[-1][1] + 1.0, start_level=4, decide_hz=20.0,
                                seed=seed, sigma=0.05, slowdown=lambda t: 2.4 if in_burst(t) else 1.0,
                                level_factor=lambda t, level: 1.06 if level == 2 and in_burst(t) else 1.0)
    after = [(t, lvl) for t, failing, lvl in back_drops if failing]
    assert after, ("level 2's record must fail before a burst comes back, or the test proves nothing",
                   pol.burst_record, back_drops)
    assert all(lvl < 2 for _, lvl in after), back_drops
    last = frames[int((bursts[-1][0] + 0.5) * 20):int(bursts[-1][1] * 20)]
    assert 2 not in last, last


def test_in_every_gap_between_bursts_the_way_up_is_planned_from_the_frames_just_before():
    """Bursts of 2.5x contention, 3 s on, 3 s off. In the gaps the running level is as fast as it was before
    the first burst, so the 10th percentile of its whole window (idle and burst frames) is never undercut
    and, judged against the window, no gap after the first one would look like a change. Judged against the
    frames of the 2 s just before (the burst), every gap is one: the climb starts within 1.5 s of each and
    reaches the top level in it."""
    profile = [10.0, 14.0, 19.6]
    levels = [LevelSpec(70.0 + 4 * i, ms) for i, ms in enumerate(profile)]
    target = 40.0  # p98 = 1.67 x median: idle, level 2 (≈ 33 ms) fits; x2.5, none does: level 0 runs
    bursts = [(6.0, 9.0), (12.0, 15.0), (18.0, 21.0)]
    pol = make_policy("joint", levels, config=PolicyConfig(latency_margin=0.05, up_hysteresis=0.03))
    _, _, _, ups = run_plant(pol, profile, target, seconds=27.0, start_level=0, decide_hz=10.0,
                             slowdown=lambda t: 2.5 if any(a <= t < b for a, b in bursts) else 1.0)
    for _, gap_start in bursts:
        in_gap = [(t, lvl) for t, lvl in ups if gap_start <= t < gap_start + 3.0]
        assert in_gap and in_gap[0][0] <= gap_start + 1.5, (gap_start, ups)   # the way up starts at once
        assert any(lvl == 2 for _, lvl in in_gap), (gap_start, ups)             # and reaches the top in the gap


def test_a_burst_proven_with_an_older_miss_drops_below_where_its_late_frames_would_miss_again():
    """Level 3, the top, holds 40 ms easily (about 22 ms per frame); one frame missed 0.5 s ago; then a burst makes the
    next two frames 2.4x slower. Three misses in the newest second prove the violation, but three of the
    newest five frames are from before the burst, so their median still says "idle": planned on it, the drop
    went to level 2, where the burst's frames take about 45 ms and the next frames missed again (real bursty
    run: 3-4 more late frames). The drop must go to a level at which the two late frames, transferred through
    the profile, fit the plan."""
    profile = [10.0, 12.0, 14.4, 17.3]   # level 3 is the top: nothing to probe meanwhile
    levels = [LevelSpec(70.0 + 2 * i, ms) for i, ms in enumerate(profile)]
    target, fps = 40.0, 20.0
    pol = make_policy("joint", levels, config=PolicyConfig(latency_margin=0.05, up_hysteresis=0.03))
    pol.state.level = 3
    idle = [17.3 * 1.3 * (1.0 + 0.03 * math.sin(i)) for i in range(160)]   # 8 s at level 3, 21.8-23.2 ms
    idle[-10] = 42.0                                                       # a lone late frame 0.5 s ago
    late = [17.3 * 1.3 * 2.4 * f for f in (1.0, 1.05)]                     # the burst's first two frames
    frames = idle + late
    samples = [LatencySample(ms, 3, (i + 1) / fps) for i, ms in enumerate(frames)]
    now = samples[-1].stamp
    decisions = [pol.decide(PolicyInputs(now=now - 1.0, target_latency_ms=target, latencies=tuple(samples[:-21]))),
                 pol.decide(PolicyInputs(now=now - 0.05, target_latency_ms=target, latencies=tuple(samples[-21:-1]))),
                 pol.decide(PolicyInputs(now=now, target_latency_ms=target, latencies=tuple(samples[-1:])))]
    assert [d.level for d in decisions[:2]] == [3, 3], [d.reason for d in decisions]   # one late frame: held
    drop = decisions[-1]
    assert drop.level < 3, drop.reason
    fastest_late_ratio = min(late) / profile[3]
    budget = target * (1 - 0.05)
    assert profile[drop.level] * fastest_late_ratio <= budget, drop.reason     # the late frames fit there


BURST_PROFILE = [10.0, 12.0, 14.4, 17.3, 20.7]   # levels 20 % apart
BURSTS = [(8.0, 11.0), (14.0, 17.0), (20.0, 23.0), (26.0, 29.0)]


def run_bursts(seed: int, factor: float = 2.2, cpu_load=None, **config):
    """Bursts of ``factor`` x contention, 3 s on, 3 s off, after 8 s idle. Target 40 ms, p98 = 1.67 x median:
    idle, the top level fits (≈ 35 ms); in a burst (at 2.2x) only level 0 does (≈ 37 ms; level 1 ≈ 44).
    ``cpu_load`` and ``config`` (PolicyConfig fields) as in :func:`run_plant` and the policy."""
    levels = [LevelSpec(70.0 + 2 * i, ms) for i, ms in enumerate(BURST_PROFILE)]
    pol = make_policy("joint", levels, config=PolicyConfig(latency_margin=0.05, up_hysteresis=0.03, **config))
    return run_plant(pol, BURST_PROFILE, 40.0, seconds=32.0, start_level=4, decide_hz=20.0, seed=seed,
                     slowdown=lambda t: factor if any(a <= t < b for a, b in BURSTS) else 1.0, cpu_load=cpu_load)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_when_a_burst_ends_the_level_that_held_before_it_returns_at_once(seed):
    """The top level held until each burst drove the manager to level 0. When the burst ends, level 0's frames
    get clearly faster: that is the end of the slowdown, and the top level's frames from before it are the
    evidence that it holds again. It returns in one move, not one probe per quiet period (a 3 s gap is shorter
    than one: the real bursty bench spent its gaps at the levels in between, 1-1.7 points below the oracle)."""
    frames, _, _, ups = run_bursts(seed)
    for _, gap_start in BURSTS[:-1]:
        in_gap = [(t, lvl) for t, lvl in ups if gap_start <= t < gap_start + 3.0]
        assert in_gap and in_gap[0] == (in_gap[0][0], 4) and in_gap[0][0] <= gap_start + 1.0, (gap_start, ups)
    gaps = [lvl for i, lvl in enumerate(frames) if any(b + 1.0 <= i / 20 < b + 3.0 for _, b in BURSTS[:-1])]
    assert gaps.count(4) / len(gaps) >= 0.75


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_after_a_return_the_first_late_frame_drops_to_the_level_that_held_through_the_burst(seed):
    """Bursts come back. After a return, the first late frame of the next burst is taken as its start: the drop
    goes at once to level 0, which held through the last burst, instead of waiting for a second late frame and
    planning from a median that is still mostly idle (level 3, then level 0, with late frames at each)."""
    frames, misses, _, _ = run_bursts(seed)
    for start, _ in BURSTS[1:]:
        burst = frames[int(start * 20):int((start + 3.0) * 20)]
        below_top = [lvl for lvl in burst if lvl != 4]
        assert below_top and set(below_top) == {0}, (start, burst)
        late = sum(misses[int(start * 20):int((start + 3.0) * 20)])
        assert late <= 3, (start, late)
    assert sum(misses) / len(misses) <= 0.03


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_burst_after_a_climb_by_probes_drops_at_once_to_the_level_that_held_through_the_last_one(seed):
    """A slowdown that outlasts the window (10 s) leaves nothing to return to when it ends: its end is found at
    level 0 and the manager climbs by probes. The next burst comes 3 s later. Level 0 held through the slowdown
    that ended just before, so the drop goes there at once, on the burst's first late frame, instead of planning
    from the newest frames, which still mostly show the gap (real bursty runs: level 4 → 2 → 0 and 4 → 3 → 0,
    3-4 late frames per burst where one drop cost 1-2)."""
    levels = [LevelSpec(70.0 + 2 * i, ms) for i, ms in enumerate(BURST_PROFILE)]
    pol = make_policy("joint", levels, config=PolicyConfig(latency_margin=0.05, up_hysteresis=0.03))
    long_burst, burst = (8.0, 18.0), (21.0, 24.0)
    frames, misses, _, ups = run_plant(
        pol, BURST_PROFILE, 40.0, seconds=26.0, start_level=4, decide_hz=20.0, seed=seed,
        slowdown=lambda t: 2.2 if any(a <= t < b for a, b in (long_burst, burst)) else 1.0)
    climbed = [lvl for t, lvl in ups if long_burst[1] <= t < burst[0]]
    assert climbed and max(climbed) >= 3, ("it must climb back in the gap, or the test proves nothing", ups)
    in_burst = frames[int(burst[0] * 20):int(burst[1] * 20)]
    below = [lvl for lvl in in_burst if lvl < in_burst[0]]
    assert below and set(below) == {0}, (ups, in_burst)
    assert sum(misses[int(burst[0] * 20):int(burst[1] * 20)]) <= 3, misses[int(burst[0] * 20):int(burst[1] * 20)]


@pytest.mark.parametrize("seed", [1, 5])
def test_the_level_a_burst_drops_to_is_planned_from_the_last_bursts_frames_not_kept_from_the_first(seed):
    """The first burst is strong (3.5x: only level 0 holds), the next ones mild (1.6x: level 1 holds, p98 ≈ 32 ms;
    level 2 does not, ≈ 38.5 ms against a plan of 36.8). Level 0 held through the first two and the top level
    returned after each. Kept as the level every later burst drops to, level 0 cost the accuracy between in every
    burst after (real bursty run, stop 37: level 0 in five bursts whose frames took 0.34-0.48 of the target,
    where the oracle ran level 3 or 4). Planned from the frames of the mild burst that just ended, the third
    burst drops to level 1 and holds there."""
    levels = [LevelSpec(70.0 + 2 * i, ms) for i, ms in enumerate(BURST_PROFILE)]
    pol = make_policy("joint", levels, config=PolicyConfig(latency_margin=0.05, up_hysteresis=0.03))
    strength = [3.5, 1.6, 1.6, 1.6]

    def slowdown(t: float) -> float:
        return next((f for (a, b), f in zip(BURSTS, strength, strict=True) if a <= t < b), 1.0)

    frames, misses, _, _ = run_plant(pol, BURST_PROFILE, 40.0, seconds=32.0, start_level=4, decide_hz=20.0,
                                     seed=seed, slowdown=slowdown)
    second = BURSTS[1]
    held = frames[int((second[0] + 1.0) * 20):int(second[1] * 20)]
    returned = frames[int(second[1] * 20):int((second[1] + 1.0) * 20)]
    assert set(held) == {0} and 4 in returned, ("level 0 must hold the second burst and the top level return after "
                                                "it, or the test proves nothing", held, returned)
    start, end = BURSTS[2]
    third = frames[int((start + 0.5) * 20):int(end * 20)]
    assert set(third) == {1}, third
    assert sum(misses[int(start * 20):int(end * 20)]) <= 3


def test_only_a_slowdown_that_drove_a_drop_is_expected_back():
    """Faster frames after slow ones end a slowdown only when a violation drove the manager to the level that ran
    (or hit it there). A cold start's slow first frames missed nothing: their end arms no expectation, so a
    single late frame in the next window is noise, not a burst (it would drop the manager to level 0)."""
    levels = [LevelSpec(70.0, 10.0)]   # one level: nothing to probe, the frames all stay its own

    def run(slow_factor: float, target: float):
        pol = make_policy("joint", levels, config=PolicyConfig(latency_margin=0.05, up_hysteresis=0.03))
        pol.state.level = 0
        frames = [10.0 * slow_factor] * 40 + [10.0] * 8     # 2 s slow, then clearly faster (20 fps)
        for i, ms in enumerate(frames):
            now = (i + 1) / 20
            pol.decide(PolicyInputs(now=now, target_latency_ms=target, latencies=(LatencySample(ms, 0, now),)))
        return pol, now

    warm_up, now = run(1.6, 40.0)          # 16 ms frames under a 40 ms target: slow, but no miss
    assert warm_up.improved_at is not None, "the end must be detected, or the test proves nothing"
    assert warm_up.slowdown_expected(now) is None
    slowdown, now = run(4.5, 40.0)         # 45 ms frames: level 0, the floor, violates; then the slowdown ends
    assert slowdown.improved_at is not None
    assert slowdown.slowdown_expected(now) == 0


def test_a_level_that_never_held_is_not_returned_to_when_a_slowdown_ends():
    """Level 2 misses about a quarter of its frames even idle (it runs 1.6x its profile): a probe into it fails
    on its own frames, not on a slowdown. Level 1 held until a slowdown (1.6x, 20-23 s) drove the manager to
    level 0. When the slowdown ends, the return goes to level 1, the level that held, and not to level 2."""
    profile = [10.0, 12.0, 14.0]
    true_ms = [10.0, 12.0, 14.0 * 1.6]
    levels = [LevelSpec(70.0 + i, p) for i, p in enumerate(profile)]
    pol = make_policy("joint", levels, config=PolicyConfig(probe_quiet_s=3.0, window_s=4.0))
    _, _, _, ups = run_plant(pol, true_ms, 26.0, seconds=26.0, start_level=1, decide_hz=20.0,
                             slowdown=lambda t: 1.6 if 20.0 <= t < 23.0 else 1.0)
    assert any(lvl == 2 for t, lvl in ups if t < 20.0), "it must probe level 2 and fail, or the test proves nothing"
    after = [lvl for t, lvl in ups if 23.0 <= t < 24.5]
    assert after and after[0] == 1 and 2 not in after, ups


def test_two_late_frames_in_a_row_prove_a_violation_one_does_not():
    """Level 3 held for 8 s without a miss. One late frame is noise a 2 % budget allows; two in a row, at a
    level whose frames miss at the budget's rate, come once in 2500 frames, and every frame of a burst is late:
    the drop comes with the second, not after a third (the binomial count over the newest second needs 3)."""
    profile = [10.0, 12.0, 14.4, 17.3]
    levels = [LevelSpec(70.0 + 2 * i, ms) for i, ms in enumerate(profile)]
    target, fps = 40.0, 20.0
    pol = make_policy("joint", levels, config=PolicyConfig(latency_margin=0.05, up_hysteresis=0.03))
    pol.state.level = 3
    idle = [17.3 * 1.3 * (1.0 + 0.03 * math.sin(i)) for i in range(160)]   # 21.8-23.2 ms
    lone = [*idle, 45.0, *idle[:10], 45.0]                            # two late frames 0.55 s apart
    pair = [*idle, 45.0, 46.0]                                          # two late frames in a row
    for frames, drops in ((lone, False), (pair, True)):
        pol = make_policy("joint", levels, config=PolicyConfig(latency_margin=0.05, up_hysteresis=0.03))
        pol.state.level = 3
        samples = [LatencySample(ms, 3, (i + 1) / fps) for i, ms in enumerate(frames)]
        levels_run = [pol.decide(PolicyInputs(now=s.stamp, target_latency_ms=target, latencies=(s,))).level
                      for s in samples]
        assert (levels_run[-1] < 3) == drops, (frames[-12:], levels_run[-12:])
        assert levels_run[:-1] == [3] * (len(frames) - 1)


PROFILE_3, TARGET_3, FPS_3 = (10.0, 12.0, 14.0), 30.0, 20.0


def _fed_frame_by_frame(config: PolicyConfig, level: int):
    """A joint policy on a three-level profile, running ``level`` under a 30 ms target at 20 fps.

    Returns it, ``frame(i, level, ms)``, which hands it the i-th frame (done at i/20 s) and returns the level it
    decides, and ``idle_ms(level, i)``: an idle frame of ``level`` (1.3x its profile, within 3 %)."""
    levels = [LevelSpec(70.0 + i, ms) for i, ms in enumerate(PROFILE_3)]
    pol = make_policy("joint", levels, config=config)
    pol.state.level = level

    def frame(i: int, lvl: int, ms: float) -> int:
        s = LatencySample(ms, lvl, i / FPS_3)
        return pol.decide(PolicyInputs(now=s.stamp, target_latency_ms=TARGET_3, latencies=(s,))).level

    def idle_ms(lvl: int, i: int) -> float:
        return PROFILE_3[lvl] * 1.3 * (1.0 + 0.03 * math.sin(i))

    return pol, frame, idle_ms


def test_a_probe_is_judged_on_its_own_frames_not_on_the_late_frames_that_ended_an_earlier_stay():
    """Level 2 held for 4 s, then two late frames drove the manager down. The probe back into it comes while
    those two frames are still in the window (8 s), among fewer than ``MIN_OWN_SAMPLES`` of its frames: they
    ended the earlier stay and are no evidence against this one, whose frames all keep the target."""
    cfg = PolicyConfig(latency_margin=0.05, up_hysteresis=0.03, window_s=8.0, probe_quiet_s=7.85, min_dwell_s=2.0)
    pol, frame, idle_ms = _fed_frame_by_frame(cfg, level=2)
    target, fps = TARGET_3, FPS_3

    level, i = 2, 1
    for i in range(1, 81):                      # 0.05-4.0 s: level 2 holds
        level = frame(i, 2, idle_ms(2, i))
    assert level == 2
    for ms in (36.0, 37.0):                     # 4.05, 4.10 s: two late frames in a row
        i += 1
        level = frame(i, 2, ms)
    assert level < 2, "the two late frames must drive it down, or the test proves nothing"
    late_at = i / fps
    while level < 2 and i / fps < late_at + 12.0:
        i += 1
        level = frame(i, level, idle_ms(level, i))
    assert level == 2, "it must probe level 2 again, or the test proves nothing"
    old = pol.tails.latencies(2, until=late_at + 1e-9)
    assert any(ms > target for ms in old) and len(pol.tails.latencies(2)) < 5, (
        "the probe must come while the late frames are in the window, among a few of its frames")
    run = [frame(j, 2, idle_ms(2, j)) for j in range(i + 1, i + 41)]   # 2 s of level 2 keeping the target
    assert run == [2] * len(run), run


@pytest.mark.parametrize(("first_frames", "drops"), [
    ((0.72, 1.20), False),     # real AMD ramp run: one stall at 1.20x the target undid a probe that then held
    ((0.72, 0.91, 1.11), False),  # real AMD 640x480 run: the same at 1.11x
    ((0.72, 1.45), True),      # contention's first late frame (1.44x at the median of the real AMD set)
    ((0.72, 1.08, 1.10), True),  # a level too slow by a little: the second late frame ends the stay
])
def test_one_stall_among_a_probes_first_frames_does_not_end_it_contention_does(first_frames, drops):
    """A probe's first frames are few (``MIN_OWN_SAMPLES``), so a count proves nothing and one frame must be
    judged by its height. A lone stall of an idle machine (the real AMD set: 1.07x the target at the median,
    1.25x at the 90th percentile) is no evidence against a level whose other frames keep the target; the
    first frame of contention (1.44x at the median), or a second late frame, is."""
    _, frame, idle_ms = _fed_frame_by_frame(PolicyConfig(latency_margin=0.05, up_hysteresis=0.03), level=1)
    target, fps = TARGET_3, FPS_3

    level, i = 1, 0
    while level == 1 and i < 30 * fps:          # level 1 holds until the manager probes level 2
        i += 1
        level = frame(i, 1, idle_ms(1, i))
    assert level == 2, "the manager must probe level 2, or the test proves nothing"
    for ratio in first_frames:
        i += 1
        level = frame(i, 2, ratio * target)
    if drops:
        assert level < 2, first_frames
        return
    assert level == 2, first_frames
    run = [frame(j, 2, idle_ms(2, j)) for j in range(i + 1, i + 41)]   # 2 s of level 2 keeping the target
    assert run == [2] * len(run), run


def test_when_the_frames_hide_a_bursts_end_the_fall_of_the_cpu_load_shows_it():
    """Contention that slows every level only 1.35x (a GPU whose kernel launches wait on a busy CPU: H200, 16
    busy processes): the top level misses under it, level 2 holds, and when a burst ends level 2's frames get
    only 1/1.35 faster, within their noise, so the frames rarely show the end. The monitor's CPU load (20 % idle,
    100 % in a burst, each reading the mean of the half second before it) does: over 6 seeds the manager spends
    most of each gap at the top level. Without the load readings the same plant spends them below it."""
    def busy_share(t0: float, t1: float) -> float:
        return sum(max(0.0, min(b, t1) - max(a, t0)) for a, b in BURSTS) / (t1 - t0)

    def top_share_in_gaps(seed: int, with_load: bool) -> float:
        frames, misses, _, _ = run_bursts(
            seed, factor=1.35, load_return=1,
            cpu_load=(lambda t: 20.0 + 80.0 * busy_share(t - 0.5, t)) if with_load else None)
        assert sum(misses) / len(misses) <= 0.04
        gaps = [lvl for i, lvl in enumerate(frames) if any(b + 1.5 <= i / 20 < b + 3.0 for _, b in BURSTS[:-1])]
        return gaps.count(4) / len(gaps)

    seeds = range(1, 7)
    with_load = sum(top_share_in_gaps(s, True) for s in seeds) / len(seeds)
    without = sum(top_share_in_gaps(s, False) for s in seeds) / len(seeds)
    assert without <= 0.4, f"the frames alone must not show the end, or the test proves nothing ({without:.2f})"
    assert with_load >= 0.75, (with_load, without)



def _fed(levels, level, latencies, target, config=None):
    """A joint policy that has run ``level`` for ``latencies`` (one per 50 ms) under ``target``."""
    pol = make_policy("joint", levels, config=config or PolicyConfig(prior_log_spread=0.25))
    pol.state.level = level
    pol.decide(PolicyInputs(now=0.0, target_latency_ms=target))
    t = 0.0
    for i, ms in enumerate(latencies):
        t = 0.05 * (i + 1)
        pol.decide(PolicyInputs(now=t, target_latency_ms=target, latencies=(LatencySample(ms, level, t),)))
    assert pol.state.level == level, "the fixture's level must hold under its own target"
    return pol, t


def test_a_tighter_target_is_planned_from_the_running_levels_tail_before_any_frame_misses_it():
    """The application asks for 17 ms where the running level's frames all took 10-16 ms: none misses yet, but
    the level's tail (a log-normal fit to its frames: p98 ≈ 18 ms) says 2 % of them will. The manager moves
    to the level predicted within the new target at its first decision, instead of waiting for late frames
    to prove it (two in a row, or a binomial count)."""
    profile = [5.0, 7.0, 9.0, 11.0, 13.0]
    levels = [LevelSpec(70.0 + i, ms) for i, ms in enumerate(profile)]
    frames = [10.0, 12.0, 14.0, 16.0] * 40  # 8 s at 20 fps, median 13 ms = the profile: this machine's own
    pol, t = _fed(levels, 4, frames, target=40.0)
    d = pol.decide(PolicyInputs(now=t + 0.05, target_latency_ms=17.0))
    assert max(frames) < 17.0                       # no frame has missed the new target
    assert d.level == 3 and "new target 17 ms" in d.reason, d.reason
    assert d.predicted_latency_ms is not None and d.predicted_latency_ms <= 17.0 * (1 - pol.config.latency_margin)
    # a looser target is no reason to move down
    pol, t = _fed(levels, 4, frames, target=40.0)
    assert pol.decide(PolicyInputs(now=t + 0.05, target_latency_ms=60.0)).level == 4


def test_a_first_target_is_planned_from_the_profile_when_the_running_level_has_too_few_frames_to_judge():
    """No target at start-up: the most accurate level runs. The target then arrives, with three frames of that
    level in, none late: too few for a miss count. Its predicted tail (the trusted profile, the prior's spread)
    is over the target, so the first decision with the target goes down to the level planned within it."""
    profile = [5.0, 7.0, 9.0, 11.0, 13.0]
    levels = [LevelSpec(70.0 + i, ms) for i, ms in enumerate(profile)]
    pol = make_policy("joint", levels, config=PolicyConfig(prior_log_spread=0.25, measure_first=0))
    assert pol.decide(PolicyInputs(now=0.0)).level == 4
    few = tuple(LatencySample(ms, 4, 0.05 * (i + 1)) for i, ms in enumerate((13.0, 12.5, 13.5)))
    d = pol.decide(PolicyInputs(now=0.2, target_latency_ms=15.0, latencies=few))
    assert all(s.latency_ms < 15.0 for s in few)
    # level 4's p98 with σ 0.25 around 13 ms: 21.7 ms; level 2: 15.0 ms, over 15·0.95; level 1: 11.7 ms
    assert d.level == 1 and "new target 15 ms" in d.reason, d.reason


def test_frames_that_arrive_in_clumps_let_the_tail_be_trusted_once_the_window_holds_what_it_can():
    """DDS loses large images in runs, so frames come in clumps: here 6 at 30 fps every 1.2 s, 5 a second on
    average. A tail needs ~1/budget frames (50) before a level is planned close to the target, but an 8 s
    window at 5 fps never holds 50: judged by the median gap (30 fps) the manager waited for them for ever and
    sat at level 0 (real 640×480 run, stop 30). Level 1's p98 (≈ 23 ms) fits the plan (27.6 ms), not half of it."""
    levels = [LevelSpec(70.0, 10.0), LevelSpec(75.0, 14.0)]
    pol = make_policy("joint", levels, config=PolicyConfig(prior_log_spread=0.25))
    pol.state.level = 0
    rng = random.Random(5)
    level, pending, up_at, t_decide = 0, [], None, 0.0
    for k in range(25 * 6):  # 30 s
        t = 1.2 * (k // 6) + (k % 6) / 30.0
        lat = (10.0, 14.0)[level] * math.exp(SIGMA * rng.gauss(0.0, 1.0))
        pending.append(LatencySample(lat, level, t + lat / 1000.0))
        while t_decide <= t:
            d = pol.decide(PolicyInputs(now=t_decide, target_latency_ms=30.0, latencies=tuple(pending)))
            pending = []
            if d.level > level and up_at is None:
                up_at = t_decide
            level = d.level
            t_decide += 0.2
    assert up_at is not None and up_at < 15.0, up_at
    assert level == 1


def test_a_profile_measured_on_this_machine_takes_the_cold_starts_climb_to_the_top_in_one_probe():
    """The family file's ratios between levels are another machine's. Here the small levels cost relatively more
    (2.6x the file at level 0, 2.2x at level 6, as on the AMD VM: 1.34x at level 3, 1.26x at level 6): the
    tail measured at level 0 and carried up through the file's ratios over-predicts level 6 by 18 %, so the
    climb stops at level 5 and needs a second probe. With perception's start-up profile (this machine's median
    per level) the same frames predict level 6 within its target at once: one probe, to the level that holds.

    Why these numbers: at σ 0.25 the p98 is 1.67x the median; level 6 really reaches 37.4 x 1.67 = 62.5 ms
    against the probe bar 72 x 0.92 = 66.2 ms (fits); carried from level 0 it reads 17 x 2.6 x 1.67 = 73.8 ms
    (does not), level 5 65.1 ms (does)."""
    file_ms = [5.0, 7.0, 9.0, 11.0, 13.0, 15.0, 17.0]
    levels = [LevelSpec(70.0 + i, ms) for i, ms in enumerate(file_ms)]
    true_ms = [ms * (2.6 - 0.4 * i / 6) for i, ms in enumerate(file_ms)]
    target = 72.0
    cfg = PolicyConfig(measure_first=1, latency_margin=0.05, up_hysteresis=0.03, prior_log_spread=0.25)
    ups = {}
    for measured in (False, True):
        moves = []
        for seed in (1, 2, 3):
            pol = make_policy("joint", levels, config=cfg)
            if measured:
                assert pol.use_measured_profile(true_ms) == pytest.approx(true_ms)
            frames, misses, _, up = run_plant(pol, true_ms, target, seconds=40.0, seed=seed, start_level=0)
            moves.append([lv for _, lv in up])
            if measured:
                assert frames[-1] == 6 and sum(misses) / len(misses) < 0.02, (seed, up)
        ups[measured] = moves
    # both first take the early probe a handful of frames allows (a level far inside the plan: level 1); then the
    # file's ratios stop at level 5 and need one more probe, the measured ones go to level 6 at once
    assert all(m[-1] == 6 and 5 not in m for m in ups[True]), ups
    assert all(5 in m and len(m) > len(n) for m, n in zip(ups[False], ups[True], strict=True)), ups


def test_a_measured_profile_keeps_every_level_at_least_as_costly_as_the_one_below_and_needs_every_level():
    levels = [LevelSpec(70.0 + i, ms) for i, ms in enumerate([5.0, 7.0, 9.0])]
    pol = make_policy("joint", levels)
    # level 2 measured a little faster than level 1 (two close levels, noise): planned at level 1's cost
    assert pol.use_measured_profile([10.0, 14.0, 13.5]) == [10.0, 14.0, 14.0]
    assert [lv.latency_ms for lv in pol.levels] == [10.0, 14.0, 14.0]
    assert pol.tails.profile_ms == [10.0, 14.0, 14.0]
    with pytest.raises(ValueError, match="2 latencies for 3 levels"):
        pol.use_measured_profile([10.0, 14.0])
    # the paper's manager keeps the file's table, as published
    step = make_policy("step", levels)
    assert step.use_measured_profile([10.0, 14.0, 13.5]) is None and step.measured_profile is None
    assert [lv.latency_ms for lv in step.levels] == [5.0, 7.0, 9.0]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_overrun_fallback_names_the_drop_the_policy_then_makes_on_one_late_frame_and_only_that(seed):
    """``policy.overrun`` tells perception, in advance, what to do after a late frame (``OverrunFallback``): a
    frame at ``from_level`` slower than ``limit_ms`` → ``to_level`` at once. It must never send perception where
    the policy would not go: every time a frame it covers arrives, the policy's own decision on that frame goes to
    ``to_level`` or below. And it is only issued where that decision is known from one frame: never before a
    slowdown has ended (the first burst needs two late frames, and where they send the manager is planned from
    them). Bursts as in :func:`run_bursts`, a decision per frame."""
    levels = [LevelSpec(70.0 + 2 * i, ms) for i, ms in enumerate(BURST_PROFILE)]
    pol = make_policy("joint", levels, config=PolicyConfig(latency_margin=0.05, up_hysteresis=0.03))
    covered, issued = [], []

    def see(inp, d, before):
        if before is not None and any(s.level == before.from_level and s.latency_ms > before.limit_ms
                                      for s in inp.latencies):
            covered.append((inp.now, before, d.level))
        if pol.overrun is not None:
            issued.append((inp.now, pol.overrun))

    watch_decisions(pol, see, before=lambda: pol.overrun)
    run_plant(pol, BURST_PROFILE, 40.0, seconds=32.0, start_level=4, decide_hz=20.0, seed=seed,
              slowdown=lambda t: 2.2 if any(a <= t < b for a, b in BURSTS) else 1.0)
    assert len(covered) >= len(BURSTS) - 1, ("every burst after the first starts with a covered late frame", covered)
    assert all(level <= fb.to_level for _, fb, level in covered), covered
    assert all(fb.to_level < fb.from_level and fb.limit_ms == 40.0 for _, fb in issued), issued
    assert min(t for t, _ in issued) > BURSTS[0][1], "issued before any slowdown ended"


def test_perception_following_the_overrun_fallback_saves_the_frame_after_each_bursts_first_late_one():
    """The simulated graph, bursts of 2.6x contention every 3 s: the frame after a burst's first late frame
    starts before the manager's drop can arrive (``CMD_DELAY_S``), and without the instruction it runs at the
    level that just missed. With it, perception drops by itself, so fewer frames miss, at no more switches."""
    from dynofa_ros.offline import sim

    levels = sim.bench_levels()
    machine = [1.8 * lv.latency_ms for lv in levels]
    plant = sim.LearnedPlant.lognormal(machine, 0.12, {0: 1.0, 2: 2.6}, n=600, switch_factor=1.14)
    plant.level_profile_ms = machine
    busy = ((0.0, 0), *[(8.0 + 3.0 * i, 2 * ((i + 1) % 2)) for i in range(10)])
    scn = sim.GraphScenario("bursts", 40.0, 20.0, busy, ((0.0, 30.0),))
    cfg, rate = sim.bench_policy_config()
    late, switches = {}, {}
    for follow in (False, True):
        runs = []
        for seed in range(4):
            pol = make_policy("joint", levels, config=cfg)
            pol.use_measured_profile(machine)
            runs.append(sim.simulate_graph(scn, plant, pol, decision_rate_hz=rate, seed=seed, overrun_fallback=follow))
        late[follow] = sum(int((r.latency_ms > r.target_ms).sum()) for r in runs)
        switches[follow] = sum(r.switches for r in runs)
    assert late[True] < late[False], late
    assert switches[True] <= switches[False] + 4, switches   # at most one more switch per run
