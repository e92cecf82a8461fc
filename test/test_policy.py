"""Policy rules (pure Python, no ROS): step, joint, thermal, battery, stale inputs, dwell, and the simulator."""

from __future__ import annotations

import itertools
import math

import pytest

from dynofa_ros.control.platforms import XAVIER_NX
from dynofa_ros.control.policy import (
    JointPolicy,
    LatencySample,
    LevelSpec,
    PolicyConfig,
    PolicyConfigError,
    PolicyInputs,
    Reading,
    StepPolicy,
    make_policy,
)
from dynofa_ros.offline import sim

LEVELS = sim.reference_levels()  # Xavier NX six levels: 41.2 .. 61.7 ms, 74.2 .. 79.0 %
CPU, GPU = XAVIER_NX.cpu_khz, XAVIER_NX.gpu_hz


def joint(**cfg: float) -> JointPolicy:
    p = make_policy("joint", LEVELS, CPU, GPU, PolicyConfig(**cfg), XAVIER_NX.cpu, XAVIER_NX.gpu)
    assert isinstance(p, JointPolicy)
    return p


def step(**cfg: float) -> StepPolicy:
    p = make_policy("step", LEVELS, CPU, GPU, PolicyConfig(**cfg))
    assert isinstance(p, StepPolicy)
    return p


def measured(policy, level: int, slowdown: float, t: float) -> LatencySample:
    """What the platform would measure for ``level`` at the clocks the policy has commanded."""
    return LatencySample(policy.predict_ms(level, policy.state.cpu, policy.state.gpu, slowdown=slowdown), level, t)


def inputs(t: float, target: float | None = 60.0, samples=(), **kw) -> PolicyInputs:
    return PolicyInputs(now=t, target_latency_ms=target, latencies=tuple(samples), **kw)


# ------------------------------------------------------------------------------------------- step
def test_step_goes_down_one_level_on_a_miss_and_keeps_clocks_at_maximum():
    p = step()
    d = p.decide(inputs(0.0, 50.0, [LatencySample(61.0, 5, 0.0)]))
    assert d.level == 4
    assert (d.cpu_freq_khz, d.gpu_freq_hz) == (CPU[-1], GPU[-1])
    assert "down one" in d.reason


def test_step_goes_up_one_level_with_headroom_and_holds_without_new_measurement():
    p = step()
    p.state.level = 1
    d = p.decide(inputs(0.0, 60.0, [LatencySample(45.0, 1, 0.0)]))
    assert d.level == 2 and "headroom" in d.reason
    # samples of the old level say nothing about the new one: hold
    d = p.decide(inputs(0.2, 60.0, [LatencySample(45.0, 1, 0.1)]))
    assert d.level == 2 and "hold" in d.reason


def test_step_respects_the_accuracy_floor():
    p = step()
    p.state.level = 3  # 77.54 %
    d = p.decide(inputs(0.0, 40.0, [LatencySample(55.0, 3, 0.0)], min_accuracy=77.0))
    assert d.level == 3 and d.mode == "infeasible"
    p.state.level = 0
    d = p.decide(inputs(1.0, 80.0, [], min_accuracy=77.0))
    assert d.level == 1 and "floor" in d.reason


# ------------------------------------------------------------------------------------------- joint
def test_joint_reaches_a_feasible_level_in_one_decision_where_step_needs_several():
    target = 50.0
    j, s = joint(latency_margin=0.1), step()
    samples_j = [measured(j, 5, 1.0, 0.0)]
    d = j.decide(inputs(0.0, target, samples_j))
    assert j.predict_ms(d.level, d.cpu_freq_khz, d.gpu_freq_hz, slowdown=1.0) <= target * 0.9
    assert d.level == 0  # level 0 (41.2 ms) is the only one within 45 ms (target - 10 %) at maximum clocks
    assert j.predict_ms(1, CPU[-1], GPU[-1], slowdown=1.0) > target * 0.9
    steps, t = 0, 0.0
    while True:
        lvl = s.state.level
        lat = LEVELS[lvl].latency_ms
        d_s = s.decide(inputs(t, target, [LatencySample(lat, lvl, t)]))
        steps += 1
        t += 0.2
        if LEVELS[d_s.level].latency_ms <= target:
            break
        assert steps < 10
    assert steps >= 3  # 5 -> 4 -> 3 -> 2 (49.4 ms): several decisions


def test_joint_picks_the_clocks_with_the_least_energy_per_frame_predicted_to_meet_the_target():
    j = joint(latency_margin=0.1)
    # results every 100 ms (a 10 fps camera): the cycle the energy per frame integrates over
    samples = [measured(j, 5, 1.0, 0.1 * i) for i in range(12)]
    d = j.decide(inputs(1.2, 100.0, samples))
    budget = 90.0
    assert j.frame_period_s() == pytest.approx(0.1)
    assert d.level == 5
    assert j.predict_ms(d.level, d.cpu_freq_khz, d.gpu_freq_hz) <= budget
    assert d.cpu_freq_khz < CPU[-1] and d.gpu_freq_hz < GPU[-1]

    def energy(c: int, g: int) -> float:
        return j.frame_energy_j(j.predict_ms(5, c, g, 1.0), c, g, 0.1)

    chosen = energy(d.cpu_freq_khz, d.gpu_freq_hz)
    for c, g in itertools.product(CPU, GPU):  # brute force: nothing feasible costs less per frame
        if j.predict_ms(5, c, g, 1.0) <= budget:
            assert energy(c, g) >= chosen - 1e-12


def test_a_relaxed_target_does_not_crawl_at_the_lowest_busy_power():
    """A 1 s deadline at 2 fps: the lowest-power pair (both domains at their lowest clocks) stretches a frame so
    far that it costs more energy than a slightly faster CPU clock does: the least busy power is not the least
    energy per frame (the argument is the leakage drawn over the longer busy time)."""
    j = joint(latency_margin=0.1)
    samples = [measured(j, 5, 1.0, 0.5 * i) for i in range(8)]  # 2 fps
    d = j.decide(inputs(4.0, 1000.0, samples))
    assert d.level == 5
    feasible = [(c, g) for c, g in itertools.product(CPU, GPU) if j.predict_ms(5, c, g, 1.0) <= 900.0]

    def energy(c: int, g: int) -> float:
        return j.frame_energy_j(j.predict_ms(5, c, g, 1.0), c, g, 0.5)

    lowest_power = min(feasible, key=lambda cg: j.power_w(*cg))
    assert (d.cpu_freq_khz, d.gpu_freq_hz) != lowest_power
    assert energy(d.cpu_freq_khz, d.gpu_freq_hz) < 0.95 * energy(*lowest_power)


def test_energy_per_frame_counts_the_idle_rest_of_the_cycle():
    j = joint()
    c, g = CPU[-1], GPU[-1]
    busy_only = j.frame_energy_j(50.0, c, g, None)
    assert busy_only == pytest.approx(j.power_w(c, g) * 0.05)
    # idle until the next frame draws leakage only: more than nothing, less than busy power
    with_idle = j.frame_energy_j(50.0, c, g, 0.1)
    assert busy_only < with_idle < j.power_w(c, g) * 0.1
    assert with_idle - busy_only == pytest.approx(j.power_w(c, g, 0.0) * 0.05)
    assert j.frame_energy_j(150.0, c, g, 0.1) == pytest.approx(j.power_w(c, g) * 0.15)  # frames queue: no idle


def test_accuracy_slack_trades_a_bounded_accuracy_loss_for_energy_without_ratcheting_down():
    """A relaxed target: every level fits. With no slack the most accurate level runs; with a 1-point slack a
    less accurate level within 1 point of it runs when it costs less per frame, and stays there: the slack is
    measured from the deadline logic's level, not from the level running (which would step down forever)."""
    top = len(LEVELS) - 1
    runs = {}
    for slack in (0.0, 1.0):
        j = joint(accuracy_slack=slack)
        t, d, seen = 0.0, None, []
        for _ in range(150):  # 30 s at 5 Hz, results at 10 fps measured as predicted
            samples = [measured(j, j.state.level, 1.0, t + 0.1 * i) for i in range(2)]
            t += 0.2
            d = j.decide(inputs(t, 100.0, samples))
            seen.append(d.level)
        runs[slack] = (j, d, seen)
    j0, d0, seen0 = runs[0.0]
    assert set(seen0) == {top}
    j1, d1, seen1 = runs[1.0]
    acc_top = LEVELS[top].accuracy
    assert all(LEVELS[lv].accuracy >= acc_top - 1.0 for lv in seen1)
    assert d1.level < top and "accuracy slack" in d1.reason
    assert len(set(seen1[10:])) == 1  # it settles; no flapping between near-equal levels

    def energy(j: JointPolicy, d) -> float:
        return j.frame_energy_j(j.predict_ms(d.level, d.cpu_freq_khz, d.gpu_freq_hz, 1.0), d.cpu_freq_khz,
                                d.gpu_freq_hz, 0.1)

    assert energy(j1, d1) < energy(j0, d0)


def test_accuracy_slack_never_costs_the_deadline():
    """A target only the smallest levels meet at full clocks: the slack may not pick a level that does not fit."""
    j = joint(accuracy_slack=5.0)
    t = 0.0
    for _ in range(50):
        samples = [measured(j, j.state.level, 1.0, t + 0.05 * i) for i in range(4)]
        t += 0.2
        d = j.decide(inputs(t, 47.0, samples))
        assert j.predict_ms(d.level, d.cpu_freq_khz, d.gpu_freq_hz, 1.0) <= 47.0 * (1 - j.config.latency_margin)


def test_joint_learns_the_latency_ratio_from_latency_measured_at_reduced_clocks():
    j = joint(latency_margin=0.1)
    d0 = j.decide(inputs(0.0, 100.0, []))
    assert d0.cpu_freq_khz < CPU[-1]
    # the platform is 1.5x slower than profiled: measured at the clocks commanded at t=0
    samples = [measured(j, d0.level, 1.5, 0.5 + 0.05 * i) for i in range(8)]
    d1 = j.decide(inputs(1.0, 100.0, samples))
    assert d1.slowdown == pytest.approx(1.5, rel=1e-6)   # the clock factor is taken out of the ratio
    # every frame of level 5 misses at those clocks: it drops at once, to a level whose predicted tail fits
    assert d1.level < 5 and d1.predicted_latency_ms <= 90.0
    assert j.predict_ms(d1.level, d1.cpu_freq_khz, d1.gpu_freq_hz, 1.5) <= 90.0


def test_up_moves_respect_the_dwell_time_and_the_probe_blocks_a_flapping_load():
    dwell = 2.0
    j = joint(min_dwell_s=dwell)
    changes = []
    level = j.state.level
    for k in range(200):  # 20 s of decisions at 10 Hz, the load flips every 0.3 s
        t = k * 0.1
        slow = 1.6 if (k // 3) % 2 else 1.0
        d = j.decide(inputs(t, 60.0, [measured(j, level, slow, t - 0.05)]))
        if d.level != level:
            changes.append((t, d.level > level))
            level = d.level
    assert len(changes) >= 2, "the load must make the policy want to switch, or the test proves nothing"
    for (a, _), (b, up) in itertools.pairwise(changes):
        if up:
            assert b - a >= dwell - 1e-9, changes
    # the paper's step manager (no memory, no dwell) flaps on the same load
    naive = step()
    naive_changes, level = 0, naive.state.level
    for k in range(200):
        t = k * 0.1
        slow = 1.6 if (k // 3) % 2 else 1.0
        d = naive.decide(inputs(t, 60.0, [LatencySample(LEVELS[level].latency_ms * slow, level, t - 0.05)]))
        naive_changes += d.level != level
        level = d.level
    assert naive_changes > 3 * len(changes)


def test_up_hysteresis_keeps_a_level_that_just_fits():
    j = joint(min_dwell_s=0.0, up_hysteresis=0.1)
    j.state.level = 2
    # level 3 (51.1 ms) fits 54 ms (target 60 - 10 %) but not 48 ms (with hysteresis): stay at 2
    d = j.decide(inputs(0.0, 60.0, []))
    assert d.level == 2


def test_accuracy_floor_and_no_target():
    j = joint()
    d = j.decide(inputs(0.0, 45.0, [], min_accuracy=77.0))
    assert d.level == 3 and d.mode == "infeasible"  # floor wins over the target in normal mode
    j2 = joint()
    d = j2.decide(inputs(0.0, None, []))
    assert d.level == 5 and d.mode == "no_target" and d.gpu_freq_hz == GPU[-1]


# ------------------------------------------------------------------------------------------- safety
@pytest.mark.parametrize("kind", ["joint", "step"])
@pytest.mark.parametrize("target", [None, 30.0, 60.0, 1000.0])
@pytest.mark.parametrize("floor", [None, 79.0])
def test_thermal_hard_limit_wins_over_every_target(kind, target, floor):
    p = joint() if kind == "joint" else step()
    hot = Reading(95.0, 0.0)
    d = p.decide(inputs(0.0, target, [LatencySample(30.0, 5, 0.0)], min_accuracy=floor, gpu_temp_c=hot,
                        battery_soc=Reading(0.9, 0.0)))
    assert (d.level, d.cpu_freq_khz, d.gpu_freq_hz) == (0, CPU[0], GPU[0])
    assert d.mode == "thermal_hard" and "GPU 95.0 °C" in d.reason


def test_thermal_hard_limit_is_held_until_below_the_hysteresis():
    j = joint(thermal_hard_c=90.0, thermal_hysteresis_c=5.0, min_dwell_s=0.0)
    assert j.decide(inputs(0.0, cpu_temp_c=Reading(91.0, 0.0))).mode == "thermal_hard"
    assert j.decide(inputs(1.0, cpu_temp_c=Reading(87.0, 1.0))).mode == "thermal_hard"
    d = j.decide(inputs(2.0, cpu_temp_c=Reading(84.0, 2.0)))
    assert d.mode != "thermal_hard"


def test_thermal_soft_limit_caps_the_clocks():
    j = joint(thermal_soft_c=80.0, thermal_soft_freq_fraction=0.7)
    d = j.decide(inputs(0.0, None, cpu_temp_c=Reading(82.0, 0.0)))
    assert d.mode == "thermal_soft"
    assert d.cpu_freq_khz <= 0.7 * CPU[-1] and d.gpu_freq_hz <= 0.7 * GPU[-1]
    assert "soft limit" in d.reason


def test_battery_low_enters_energy_saving_mode_and_leaves_with_hysteresis():
    j = joint(battery_low=0.2, battery_hysteresis=0.05, saver_freq_fraction=0.6, min_dwell_s=0.0)
    normal = j.decide(inputs(0.0, 100.0, [], min_accuracy=79.0, battery_soc=Reading(0.5, 0.0)))
    assert normal.level == 5 and normal.mode == "normal"
    d = j.decide(inputs(1.0, 100.0, [], min_accuracy=79.0, battery_soc=Reading(0.15, 1.0)))
    assert d.mode == "saver" and "energy saving" in d.reason
    assert d.cpu_freq_khz <= 0.6 * CPU[-1] and d.gpu_freq_hz <= 0.6 * GPU[-1]
    assert j.power_w(d.cpu_freq_khz, d.gpu_freq_hz) < j.power_w(normal.cpu_freq_khz, normal.gpu_freq_hz)
    # floor relaxed: a level below 79 % is now allowed when the capped clocks cannot run level 5 in time
    d = j.decide(inputs(2.0, 60.0, [], min_accuracy=79.0, battery_soc=Reading(0.15, 2.0)))
    assert d.level < 5 and d.predicted_latency_ms <= 60.0 * (1 - j.config.latency_margin)
    assert j.decide(inputs(3.0, 60.0, battery_soc=Reading(0.22, 3.0))).mode == "saver"   # inside hysteresis
    assert j.decide(inputs(4.0, 60.0, battery_soc=Reading(0.26, 4.0))).mode != "saver"


@pytest.mark.parametrize("kind", ["joint", "step"])
def test_stale_inputs_give_the_safe_default_with_a_reason(kind):
    p = joint(stale_timeout_s=2.0, safe_level=1) if kind == "joint" else step(stale_timeout_s=2.0, safe_level=1)
    p.decide(inputs(0.0, 60.0, [LatencySample(50.0, 5, 0.0)], battery_soc=Reading(0.9, 0.0)))
    d = p.decide(inputs(3.0, 60.0, [], battery_soc=Reading(0.9, 3.0)))
    assert (d.level, d.cpu_freq_khz, d.gpu_freq_hz) == (1, CPU[-1], GPU[-1])
    assert d.mode == "stale" and "latency feedback 3.0 s old" in d.reason
    d = p.decide(inputs(3.2, 60.0, [LatencySample(45.0, 1, 3.1)], battery_soc=Reading(0.9, 0.5)))
    assert d.mode == "stale" and "battery" in d.reason
    d = p.decide(inputs(3.4, 60.0, [LatencySample(45.0, 1, 3.3)], battery_soc=Reading(0.9, 3.4)))
    assert d.mode != "stale"


def test_never_received_inputs_are_not_stale():
    d = joint().decide(inputs(1000.0, 60.0, []))
    assert d.mode == "normal"


def test_decisions_are_deterministic():
    def run() -> list:
        j = joint()
        out = []
        for k in range(50):
            t = k * 0.2
            out.append(j.decide(inputs(t, 55.0 + (k % 7), [measured(j, j.state.level, 1.0 + 0.05 * (k % 5), t)],
                                       cpu_temp_c=Reading(70.0 + k * 0.3, t))))
        return out
    assert run() == run()


def test_bad_samples_are_ignored_by_the_policy():
    j = joint()
    d = j.decide(inputs(0.0, 60.0, [LatencySample(math.nan, 5, 0.0), LatencySample(-1.0, 5, 0.0),
                                    LatencySample(50.0, 17, 0.0)]))
    assert d.slowdown == 1.0


@pytest.mark.parametrize("bad, rule", [
    ({"thermal_soft_c": 95.0, "thermal_hard_c": 90.0}, "thermal_soft_c"),
    ({"cpu_fraction": 0.5, "gpu_fraction": 0.6}, "must not exceed 1"),
    ({"miss_budget": 0.0}, "miss_budget"),
    ({"latency_margin": math.nan}, "finite"),
    ({"safe_level": 6}, "safe_level"),
])
def test_config_errors_name_the_rule(bad, rule):
    with pytest.raises(PolicyConfigError, match=rule):
        make_policy("joint", LEVELS, CPU, GPU, PolicyConfig(**bad))


def test_unknown_policy_and_empty_family():
    with pytest.raises(PolicyConfigError, match="allowed"):
        make_policy("fastest", LEVELS)
    with pytest.raises(PolicyConfigError):
        make_policy("step", [])


def test_clocks_not_controlled_without_frequency_lists():
    j = make_policy("joint", [LevelSpec(70.0, 10.0), LevelSpec(75.0, 20.0)])
    d = j.decide(inputs(0.0, 15.0, []))
    assert (d.level, d.cpu_freq_khz, d.gpu_freq_hz) == (0, None, None)


# ------------------------------------------------------------------------------------------- simulator
def test_simulated_joint_meets_deadlines_at_least_as_well_as_step_with_less_energy():
    results = {r.name: r for r in sim.run_table(sim.default_trace())}
    j, s = results["joint (ours)"], results["step + performance"]
    assert j.miss_rate <= s.miss_rate
    assert j.energy_j < s.energy_j
    assert j.switches < s.switches


def test_simulated_accuracy_slack_saves_energy_at_the_accuracy_it_gives_up():
    levels = sim.reference_levels()
    b = XAVIER_NX
    out = {}
    for slack in (0.0, 2.0):
        pol = make_policy("joint", levels, b.cpu_khz, b.gpu_hz, PolicyConfig(accuracy_slack=slack), b.cpu, b.gpu)
        out[slack] = sim.simulate(sim.default_trace(), levels, sim.Controller("joint", pol))
    assert out[2.0].energy_j < out[0.0].energy_j
    assert out[2.0].mean_accuracy >= out[0.0].mean_accuracy - 2.0
    assert out[2.0].miss_rate <= PolicyConfig().miss_budget


def test_governor_rules():
    f = list(GPU)
    assert sim.governor_freq("performance", f, f[0], 0.0) == f[-1]
    assert sim.governor_freq("powersave", f, f[-1], 1.0) == f[0]
    assert sim.governor_freq("ondemand", f, f[0], 0.9) == f[-1]
    assert sim.governor_freq("schedutil", f, f[-1], 0.4) == sim._snap_up(f, 0.5 * f[-1])
    with pytest.raises(ValueError):
        sim.governor_freq("conservative", f, f[0], 0.5)
