"""The clairvoyant energy oracle (pure Python, no ROS): its arithmetic is the simulator's, its choices are the
most accurate level that fits at the cheapest clocks, and joint comes near it where DVFS has room."""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import pytest

from dynofa_ros.control.platforms import XAVIER_NX
from dynofa_ros.control.policy import PolicyConfig, make_policy
from dynofa_ros.offline import energy_oracle as eo
from dynofa_ros.offline import sim

LEVELS = sim.reference_levels()  # Xavier NX six levels: 41.2 .. 61.7 ms, 74.2 .. 79.0 %
TRUTH = sim.PlatformTruth()
RELAXED = sim.Segment(0.0, 100.0, fps=10.0)  # the largest level fits well below the highest clocks
TIGHT = sim.Segment(0.0, 60.0, fps=15.0)      # the largest level does not fit at all


def one_segment(seg: sim.Segment, seconds: float = 60.0) -> sim.Trace:
    return sim.Trace("steady", seconds, (seg,))


@pytest.mark.parametrize("seg", [RELAXED, TIGHT, sim.Segment(0.0, 60.0, cpu_contention=0.3, gpu_contention=0.35)])
def test_the_oracle_choice_costs_in_the_simulator_what_the_oracle_says(seg):
    """The oracle's energy is the simulator's integral, not a model of its own. Run the chosen level at the chosen
    clocks for 60 s (600-900 frames): the simulator's energy differs only by the noise of the mean latency, whose
    relative standard error is σ/√N = 0.03/√600 = 0.12 %; 1 % is eight of them. Its misses: the oracle fits the
    98th percentile, so about 2 % of the frames, binomial sd √(0.02·0.98/600) = 0.57 points; 5 % is five sd."""
    trace = one_segment(seg)
    choice = eo.energy_oracle(trace, LEVELS, TRUTH).choices[0]
    assert choice.fits
    ran = sim.simulate(trace, LEVELS, sim.Controller("oracle", fixed_level=choice.level,
                                                     fixed_clocks=(choice.cpu_khz, choice.gpu_hz)), TRUTH)
    assert ran.processed == pytest.approx(choice.frames, abs=1)
    assert ran.energy_j == pytest.approx(choice.energy_j, rel=0.01)
    assert ran.miss_rate <= 0.05
    assert ran.dropped == 0


def test_accuracy_first_is_the_most_accurate_level_that_fits_at_the_cheapest_clocks():
    """Checked against the definition by brute force: no more accurate level fits at the highest clocks (the truth's
    quantile computed here), and every other pair of clocks that fits the chosen level, run in the simulator,
    costs at least as much. The runs share one seed, so their noise is the same draws scaled: 0.5 % is ample."""
    seconds = 20.0
    trace = one_segment(TIGHT, seconds)
    choice = eo.energy_oracle(trace, LEVELS, TRUTH).choices[0]
    z = NormalDist().inv_cdf(0.98)

    def tail(level: int, c: int, g: int) -> float:
        return sum(TRUTH.parts_ms(LEVELS[level], c, g, TIGHT)) * math.exp(z * TRUTH.noise_sigma)

    def energy(c: int, g: int) -> float:
        return sim.simulate(trace, LEVELS, sim.Controller("pair", fixed_level=choice.level, fixed_clocks=(c, g)),
                            TRUTH).energy_j

    b = XAVIER_NX
    assert choice.level < len(LEVELS) - 1  # not trivial: the largest level does not fit 60 ms
    assert all(tail(lv, b.cpu_khz[-1], b.gpu_hz[-1]) > TIGHT.target_ms for lv in range(choice.level + 1, len(LEVELS)))
    assert tail(choice.level, choice.cpu_khz, choice.gpu_hz) <= TIGHT.target_ms
    mine = energy(choice.cpu_khz, choice.gpu_hz)
    fitting = [(c, g) for c in b.cpu_khz for g in b.gpu_hz if tail(choice.level, c, g) <= TIGHT.target_ms]
    assert len(fitting) > 10
    assert min(energy(c, g) for c, g in fitting) >= mine * 0.995


def test_a_target_nothing_meets_runs_the_lowest_allowed_level_at_the_highest_clocks():
    seg = sim.Segment(0.0, 20.0, min_accuracy=74.5)  # level 0 (74.2 %) is below the floor; none fits 20 ms
    choice = eo.energy_oracle(one_segment(seg), LEVELS, TRUTH).choices[0]
    assert not choice.fits
    assert choice.level == 1
    assert (choice.cpu_khz, choice.gpu_hz) == (XAVIER_NX.cpu_khz[-1], XAVIER_NX.gpu_hz[-1])
    assert eo.energy_oracle(one_segment(seg), LEVELS, TRUTH).infeasible_s == pytest.approx(60.0)


@pytest.fixture(scope="module")
def tight_frontier() -> list[eo.OracleResult]:
    return eo.frontier(sim.tight_trace(), LEVELS, TRUTH)


def test_the_frontier_gives_up_accuracy_only_for_less_energy(tight_frontier):
    points = tight_frontier
    assert len(points) >= 3
    for a, b in itertools.pairwise(points):
        assert b.energy_j < a.energy_j
        assert b.mean_accuracy <= a.mean_accuracy + 1e-9
    assert points[0].mean_accuracy > points[-1].mean_accuracy
    best = eo.least_energy_at(points, points[1].mean_accuracy)
    assert best is not None and best.energy_j <= points[1].energy_j
    assert eo.least_energy_at(points, 100.0) is None


@pytest.mark.parametrize("seg", [RELAXED, sim.Segment(0.0, 90.0, fps=10.0)])
def test_joint_comes_near_the_oracle_where_dvfs_has_room(seg):
    """Where the target leaves room below the highest clocks, joint's clocks are nearly the oracle's. What joint
    may spend on top: its plan keeps the tail within target·(1 - latency_margin - up_hysteresis) = 8 % below
    the target, on a clock split (CPU 0.2, GPU 0.7) that is not the truth's (0.25, 0.62), and its first
    decisions run at the highest clocks: 15 % above the oracle. The highest clocks cost 35-46 % more here, so a
    joint that left them high would fail. And the oracle is a floor: joint, at least as accurate, is not below
    it beyond the 1 % of the simulator's noise (first test)."""
    trace = one_segment(seg)
    b = XAVIER_NX
    pol = make_policy("joint", LEVELS, b.cpu_khz, b.gpu_hz, sim.bench_policy_config(sim.REFERENCE_PARAMS)[0],
                      b.cpu, b.gpu)
    joint = sim.simulate(trace, LEVELS, sim.Controller("joint", pol), TRUTH)
    oracle = eo.energy_oracle(trace, LEVELS, TRUTH)
    assert joint.mean_accuracy >= oracle.mean_accuracy - 1e-9
    assert joint.miss_rate <= PolicyConfig().miss_budget
    assert oracle.energy_j * 0.99 <= joint.energy_j <= oracle.energy_j * 1.15
    top = sim.simulate(trace, LEVELS, sim.Controller("max", fixed_level=oracle.choices[0].level), TRUTH)
    assert top.energy_j > oracle.energy_j * 1.15


def test_the_summary_says_what_each_goal_costs_in_accuracy(tight_frontier):
    """On the tight trace (50-60 ms at 15 fps) even the oracle at its least accurate cannot save 15 % against
    step + schedutil, which saves by missing most deadlines: the summary says so instead of naming an accuracy."""
    results = sim.run_table(sim.tight_trace(), LEVELS, TRUTH)
    text = eo.format_summary(results, tight_frontier)
    lines = {name: line for line in text.splitlines()[1:] for name in ("joint (ours)", "step + schedutil",
                                                                      "step + performance")
             if line.strip().startswith(name)}
    assert set(lines) == {"joint (ours)", "step + schedutil", "step + performance"}
    assert "out of reach at every accuracy" in lines["step + schedutil"]
    sched = next(r for r in results if r.name == "step + schedutil")
    assert tight_frontier[-1].energy_j > 0.85 * sched.energy_j  # what "out of reach" claims, from the numbers


def test_bad_miss_budget_is_refused():
    with pytest.raises(ValueError, match="miss_budget"):
        eo.energy_oracle(one_segment(RELAXED), LEVELS, TRUTH, miss_budget=0.0)
