"""The contention bench's oracles, on hand-made runs (no ROS: the scoring is plain numpy).

The hindsight oracle picks, per condition, the most accurate fixed level within the miss budget in the run
it scores. ``oracle×2`` also asks the level to have held in a second run: a level that held in one run by
luck of its tail is not an answer a controller could have known.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def contention():
    spec = importlib.util.spec_from_file_location("bench_contention", REPO / "bench" / "contention.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _runs(contention, pattern, late_share: dict[int, float], seed: int) -> dict:
    """Fixed columns L0-L2 of ``pattern``: 20 fps, every frame 20 ms, except a share of level-given frames 40 ms."""
    rng = np.random.default_rng(seed)
    n = int(pattern.duration_s * 20)
    out = {}
    for lvl in range(3):
        t = [i / 20 for i in range(n)]
        lat = np.where(rng.random(n) < late_share.get(lvl, 0.0), 40.0, 20.0).tolist()
        out[f"L{lvl}"] = contention.RunRecord(pattern.name, f"L{lvl}", True, t_s=t, frame_t_s=t, level=[lvl] * n,
                                              latency_ms=lat, busy_changes=[(0.0, 0)])
    return out


def test_the_second_oracle_keeps_only_levels_that_held_in_both_runs(contention):
    pattern = contention.Pattern("flat", 30.0, ((0.0, 0),), ((0.0, 30.0),))
    accuracy = [70.0, 72.0, 74.0]
    this_run = _runs(contention, pattern, {2: 0.01}, seed=1)     # level 2 held here (1 % late) ...
    other_run = _runs(contention, pattern, {2: 0.10}, seed=2)    # ... and missed 10 % in the other run
    scores, choice = contention.score_pattern(pattern, this_run, accuracy, 0.02, 3.0, other_run)
    by_name = {s.column: s for s in scores}
    assert choice["busy=0 target=30ms"]["level"] == "L2"
    assert choice["busy=0 target=30ms (×2)"]["level"] == "L1"
    assert by_name["oracle"].accuracy == pytest.approx(74.0)
    assert by_name["oracle×2"].accuracy == pytest.approx(72.0)
    # without a second run there is one oracle, as before
    scores, choice = contention.score_pattern(pattern, this_run, accuracy, 0.02, 3.0)
    assert [s.column for s in scores if s.column.startswith("oracle")] == ["oracle"]
    assert list(choice) == ["busy=0 target=30ms"]


def test_the_cpu_each_node_used_is_measured_from_the_real_process_and_shown_per_column(contention, tmp_path):
    """The manager decides on the cores the inference shares: the bench says what each node cost there."""
    import os

    from devtools.processes import Proc, poll_until

    spin = Proc("manager_node", [sys.executable, "-c", "while True: pass"], dict(os.environ), tmp_path)
    idle = Proc("monitor_node", [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), tmp_path)
    try:
        start = contention.cpu_seconds([spin, idle])
        assert set(start) == {"manager_node", "monitor_node"}
        # bounded wait on the condition: the spinning process accrues CPU time, the sleeping one next to none
        assert poll_until(lambda: contention.cpu_seconds([spin])["manager_node"] - start["manager_node"] > 1.0, 60.0)
        assert contention.cpu_seconds([idle])["monitor_node"] - start["monitor_node"] < 0.5
    finally:
        spin.stop()
        idle.stop()
    assert contention.cpu_seconds([spin]) == {}  # an ended process has nothing to report

    pattern = contention.Pattern("flat", 30.0, ((0.0, 0),), ((0.0, 30.0),))
    runs = _runs(contention, pattern, {}, seed=3)
    runs["L1"].cpu_pct = {"manager_node": 6.2, "perception_node": 33.4}
    scores, _ = contention.score_pattern(pattern, runs, [70.0, 72.0, 74.0], 0.02, 3.0)
    table = contention.format_table(pattern.name, scores, runs)
    assert "CPU % of one core while the bag played: L1: manager 6, perception 33" in table


def test_the_table_says_how_many_switches_and_seconds_the_steady_rate_rests_on(contention):
    """Phases of 2-4 s leave a few seconds of steady time (a phase minus its first 3 s): the rate alone made one
    switch read as 10 a minute. The table gives the count and the seconds beside it."""
    pattern = contention.Pattern("two", 20.0, ((0.0, 0), (10.0, 2)), ((0.0, 30.0),))
    runs = _runs(contention, pattern, {}, seed=4)
    t = runs["L1"].t_s
    lvl = [0 if x < 5.0 else 1 if x < 15.0 else 2 for x in t]   # one switch in each phase's steady part
    runs["joint"] = contention.RunRecord("two", "joint", True, t_s=t, frame_t_s=t, level=lvl,
                                         latency_ms=[20.0] * len(t), busy_changes=[(0.0, 0), (10.0, 2)])
    scores, _ = contention.score_pattern(pattern, runs, [70.0, 72.0, 74.0], 0.02, 3.0)
    joint = next(s for s in scores if s.column == "joint")
    assert joint.steady_switches == 2
    assert joint.steady_s == pytest.approx(14.0, abs=0.2)   # 20 s minus the first 3 s of each of two phases
    assert joint.steady_switches_per_min == pytest.approx(60.0 * 2 / joint.steady_s)
    table = contention.format_table(pattern.name, scores, runs)
    line = f"switches in the steady part (each phase minus its first seconds): joint 2 in {joint.steady_s:.1f} s"
    assert line in table
    # the switch at 5 s is the cold start's climb (the first phase, nothing went down yet), the one at 15 s is not
    assert joint.steady_climb == 1
    assert f"1 the cold start's climb, {60.0 / joint.steady_s:.1f}/min without)" in table


def test_rounds_alternate_their_column_order_so_a_drift_reaches_every_column_alike(contention):
    cols = ["joint", "step", "L0", "L1"]
    assert contention.round_order(cols, 0) == cols
    assert contention.round_order(cols, 1) == ["L1", "L0", "step", "joint"]
    assert contention.round_order(cols, 2) == cols


def test_the_pooled_oracle_asks_a_level_to_keep_the_budget_over_every_round(contention):
    """A level that held in one round by luck (1 % late) and missed in the other (6 %) misses 3.5 % over both:
    the pooled oracle does not choose it. The managed column is scored over all its frames and seconds."""
    pattern = contention.Pattern("flat", 30.0, ((0.0, 0),), ((0.0, 30.0),))
    accuracy = [70.0, 72.0, 74.0]
    rounds = [_runs(contention, pattern, {2: 0.01}, seed=5), _runs(contention, pattern, {2: 0.06}, seed=6)]
    n = len(rounds[0]["L0"].t_s)
    t = rounds[0]["L0"].t_s
    for i, (lvl, late) in enumerate(((2, 0), (0, n // 10))):   # round 1: level 2, no miss; round 2: level 0, 10 % late
        lat = [40.0] * late + [20.0] * (n - late)
        switch = [lvl] * (n // 2) + [1] * (n - n // 2)           # one switch to level 1 half-way
        rounds[i]["joint"] = contention.RunRecord("flat", "joint", True, t_s=t, frame_t_s=t, level=switch,
                                                  latency_ms=lat, busy_changes=[(0.0, 0)])
    _, choice_one = contention.score_pattern(pattern, rounds[0], accuracy, 0.02, 3.0)
    assert choice_one["busy=0 target=30ms"]["level"] == "L2"   # within the budget in round 1 alone
    scores, choice = contention.pool_scores(pattern, rounds, accuracy, 0.02, 3.0)
    by_name = {s.column: s for s in scores}
    assert choice["busy=0 target=30ms"]["level"] == "L1"
    assert by_name["oracle"].frames == 2 * n
    assert by_name["oracle"].accuracy == pytest.approx(72.0)
    joint = by_name["joint"]
    assert joint.frames == 2 * n
    assert joint.miss_rate == pytest.approx((n // 10) / (2 * n))
    assert joint.accuracy == pytest.approx((74.0 + 72.0 + 70.0 + 72.0) / 4, abs=0.05)
    assert joint.switches == 2
    durations = [next(s for s in contention.score_pattern(pattern, r, accuracy, 0.02, 3.0)[0]
                      if s.column == "joint").duration_s for r in rounds]
    assert joint.switches_per_min == pytest.approx(60.0 * 2 / sum(durations))
    assert joint.levels == {0: n // 2, 1: 2 * (n - n // 2), 2: n // 2}


def test_a_bench_of_several_rounds_keeps_them_in_its_runs_file_and_rescores_them(contention, tmp_path):
    pattern = contention.Pattern("step", 30.0, ((0.0, 0),), ((0.0, 30.0),))
    first = _runs(contention, pattern, {2: 0.01}, seed=7)
    second = _runs(contention, pattern, {2: 0.06}, seed=8)
    path = tmp_path / "runs.json"
    contention.save_runs(path, [pattern], {"step": first}, {"runs": {}, "patterns": []},
                         more_rounds=[{"step": second}])
    runs, patterns = contention.load_runs(path)
    more = contention.load_rounds(path)
    assert [p.name for p in patterns] == ["step"] and list(runs["step"]) == ["L0", "L1", "L2"]
    assert len(more) == 1 and more[0]["step"]["L2"].latency_ms == second["L2"].latency_ms
    # one round: no "rounds" key, as before
    contention.save_runs(path, [pattern], {"step": first}, {"runs": {}, "patterns": []})
    assert contention.load_rounds(path) == []


def test_runs_files_of_several_sets_pool_as_more_rounds_of_the_same_patterns(contention, tmp_path):
    """Two sets of two rounds each, an hour apart, pool as four rounds: the oracle must then hold over all four
    (level 2 held in both rounds of the first set and missed 10 % in one round of the second), and a pattern that one
    set defined differently (another duration) is refused by name rather than pooled."""
    pattern = contention.Pattern("step", 30.0, ((0.0, 0),), ((0.0, 30.0),))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path, (late1, late2), seed in ((a, (0.01, 0.01), 11), (b, (0.10, 0.0), 13)):
        contention.save_runs(path, [pattern], {"step": _runs(contention, pattern, {2: late1}, seed)},
                             {"runs": {}, "patterns": []},
                             more_rounds=[{"step": _runs(contention, pattern, {2: late2}, seed + 1)}])
    first_only = [contention.load_runs(a)[0]["step"], *[r["step"] for r in contention.load_rounds(a)]]
    _, choice_a = contention.pool_scores(pattern, first_only, [70.0, 72.0, 74.0], 0.02, 3.0)
    assert choice_a["busy=0 target=30ms"]["level"] == "L2"

    merged = contention.merge_runs_files([a, b])
    runs, patterns = contention.load_runs(merged)
    more = contention.load_rounds(merged)
    assert [p.name for p in patterns] == ["step"] and len(more) == 3
    rounds = [runs["step"], *[r["step"] for r in more]]
    assert [r["L2"].latency_ms for r in rounds[2:]] == [contention.load_runs(b)[0]["step"]["L2"].latency_ms,
                                                      contention.load_rounds(b)[0]["step"]["L2"].latency_ms]
    scores, choice = contention.pool_scores(pattern, rounds, [70.0, 72.0, 74.0], 0.02, 3.0)
    assert {s.column: s for s in scores}["oracle"].frames == 4 * len(runs["step"]["L0"].t_s)
    # four rounds of 600 frames, 1 + 1 + 10 + 0 % late: about 3 % (± 0.4 at 1 σ) over all of them
    late = np.mean([np.mean(np.asarray(r["L2"].latency_ms) > 30.0) for r in rounds])
    assert late > 0.02
    assert choice["busy=0 target=30ms"]["level"] == "L1"

    longer = contention.Pattern("step", 40.0, ((0.0, 0),), ((0.0, 30.0),))
    c = tmp_path / "c.json"
    contention.save_runs(c, [longer], {"step": _runs(contention, longer, {}, seed=15)}, {"runs": {}, "patterns": []})
    with pytest.raises(ValueError, match="pattern 'step' is defined differently"):
        contention.merge_runs_files([a, c])


def test_runs_of_different_transports_are_not_pooled(contention, tmp_path, monkeypatch):
    """With Fast DDS' default transports most 640x480 frames never reach the node; with the large-frame profile all
    do. runs.json says which carried its frames (the same profile from any folder reads the same), and sets that
    say different ones are refused by name; a file from before the label is taken as it is."""
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    assert contention.transport_label() == "default"
    labels = []
    for folder in ("one", "two"):
        profile = tmp_path / folder / "profile.xml"
        profile.parent.mkdir()
        profile.write_text("<dds/>")
        monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
        labels.append(contention.transport_label())
    assert labels[0] == labels[1] and labels[0].startswith("profile:")

    pattern = contention.Pattern("step", 30.0, ((0.0, 0),), ((0.0, 30.0),))
    paths = {}
    for name, transport in (("a", "default"), ("b", labels[0]), ("c", labels[0]), ("old", None)):
        paths[name] = tmp_path / f"{name}.json"
        contention.save_runs(paths[name], [pattern], {"step": _runs(contention, pattern, {}, seed=20)},
                             {"runs": {}, "patterns": []}, transport=transport)
    with pytest.raises(ValueError, match="different transports"):
        contention.merge_runs_files([paths["a"], paths["b"]])
    assert len(contention.load_rounds(contention.merge_runs_files([paths["b"], paths["c"], paths["old"]]))) == 2


def test_the_table_counts_the_steady_switches_the_next_one_undid(contention):
    """Flapping is a move taken back: a probe up that held is one steady switch and no reversal; in a sawtooth
    every move but the last is undone by the next. Two switches with unsteady frames between them (a phase change)
    are no reversal."""
    pattern = contention.Pattern("two", 20.0, ((0.0, 0), (10.0, 2)), ((0.0, 30.0),))
    runs = _runs(contention, pattern, {}, seed=5)
    t = runs["L1"].t_s

    def level(x: float) -> int:
        if x < 4.0:
            return 1
        if x < 6.0:
            return 2          # up at 4 s, down at 6 s, up at 8 s, down at 9.5 s: a sawtooth, 3 reversals
        if x < 8.0:
            return 1
        if x < 9.5:
            return 2
        if x < 10.5:
            return 1          # 10.0-13.0 s is not steady: the switch at 10.5 s and the one before it pair with nothing
        if x < 16.0:
            return 0
        return 1              # a probe up that held to the end

    runs["joint"] = contention.RunRecord("two", "joint", True, t_s=t, frame_t_s=t, level=[level(x) for x in t],
                                         latency_ms=[20.0] * len(t), busy_changes=[(0.0, 0), (10.0, 2)])
    scores, _ = contention.score_pattern(pattern, runs, [70.0, 72.0, 74.0], 0.02, 3.0)
    joint = next(s for s in scores if s.column == "joint")
    assert joint.switches == 6
    assert joint.steady_switches == 5           # 4, 6, 8, 9.5 and 16 s; 10.5 s lies in the second phase's settling
    assert joint.steady_reversals == 3          # 4, 6 and 8 s; 9.5 s (down) and 16 s (up) span unsteady frames
    table = contention.format_table(pattern.name, scores, runs)
    assert f"joint 5 in {joint.steady_s:.1f} s (3 undone by the next; 1 the cold start's climb" in table
    pooled, _ = contention.pool_scores(pattern, [runs, runs], [70.0, 72.0, 74.0], 0.02, 3.0)
    pooled_joint = next(s for s in pooled if s.column == "joint")
    assert (pooled_joint.steady_reversals, pooled_joint.steady_climb) == (6, 2)


def test_the_cold_starts_climb_ends_at_the_first_switch_down_or_the_first_change_of_conditions(contention):
    """A managed run starts at level 0 and probes up: those moves happen once per launch, not flapping. The climb
    is every switch up before the first switch down and before the conditions first change; nothing after."""
    up_then_down = np.array([0, 0, 2, 2, 4, 4, 3, 3, 5, 5])
    everywhere = np.ones(len(up_then_down), dtype=bool)
    assert contention.climb_end(up_then_down, everywhere) == 6          # the switch down at index 6
    assert contention.climb_end(up_then_down, np.arange(10) < 4) == 4   # conditions changed at index 4 first
    assert contention.climb_end(np.array([0, 1, 2, 3]), np.ones(4, dtype=bool)) == 4   # all up, one phase
    # a run whose targets change: the first phase ends at the first target change, at the frame's stamp
    pattern = contention.Pattern("targets", 10.0, ((0.0, 0),), ((0.0, 30.0), (4.0, 18.0)))
    t = [i / 10 for i in range(100)]
    rec = contention.RunRecord("targets", "joint", True, t_s=t, frame_t_s=t, level=[0] * 100, latency_ms=[9.0] * 100,
                               busy_changes=[(0.0, 0)])
    assert int(np.sum(contention.first_phase(rec, pattern))) == 40


def test_the_must_show_sets_apart_the_conditions_beyond_the_floor_and_judges_the_rest(contention):
    """A phase whose target no fixed level keeps (level 0 itself late) fails any controller that only chooses
    levels: the verdict names it, with level 0's miss rate beside the column's, and gives the column's miss rate
    over the phases where some level kept the budget, so neither hides the other."""
    pattern = contention.Pattern("steps", 30.0, ((0.0, 0),), ((0.0, 30.0), (15.0, 18.0)))
    runs = _runs(contention, pattern, {}, seed=7)    # every fixed frame 20 ms: all late at 18 ms, none at 30 ms
    t = runs["L0"].t_s
    n_first = sum(1 for x in t if x < 15.0)
    n_second = len(t) - n_first
    # joint: 3 late frames of the 30 ms phase (40 ms), and 30 of the 18 ms phase (20 ms; the rest 15 ms)
    lat = [40.0 if i < 3 else 20.0 for i in range(n_first)] + [20.0 if i < 30 else 15.0 for i in range(n_second)]
    runs["joint"] = contention.RunRecord("steps", "joint", True, t_s=t, frame_t_s=t, level=[0] * len(t),
                                         latency_ms=lat, busy_changes=[(0.0, 0)])
    scores, choice = contention.score_pattern(pattern, runs, [70.0, 72.0, 74.0], 0.02, 3.0)
    assert not choice["busy=0 target=18ms"]["within_budget"]
    assert choice["busy=0 target=30ms"]["within_budget"]
    v = contention.joint_verdict(pattern, [runs], scores, choice)
    assert v.miss_rate == pytest.approx(33 / len(t))
    assert set(v.infeasible) == {"busy=0 target=18ms"}
    joint_there, floor_there = v.infeasible["busy=0 target=18ms"]
    assert joint_there == pytest.approx(30 / n_second)
    assert floor_there == pytest.approx(1.0)
    assert v.feasible_miss_rate == pytest.approx(3 / n_first)
    # the oracle is level 2 at 30 ms and level 0 at 18 ms; joint ran level 0 throughout
    oracle = next(s for s in scores if s.column == "oracle")
    assert v.accuracy_gap == pytest.approx(70.0 - oracle.accuracy)
    text = "\n".join(v.lines())
    assert v.miss_rate > 0.05 and "required < 5: NO" in text   # 33 of 600 frames
    assert f"busy=0 target=18ms: {100 * joint_there:.2f} % vs level 0's 100.00 %" in text
    # where every condition was feasible nothing is set apart, and the verdict says nothing about a floor
    flat = contention.Pattern("flat", 30.0, ((0.0, 0),), ((0.0, 30.0),))
    runs = _runs(contention, flat, {}, seed=8)
    runs["joint"] = contention.RunRecord("flat", "joint", True, t_s=runs["L0"].t_s, frame_t_s=runs["L0"].t_s,
                                         level=[1] * len(runs["L0"].t_s), latency_ms=[20.0] * len(runs["L0"].t_s),
                                         busy_changes=[(0.0, 0)])
    scores, choice = contention.score_pattern(flat, runs, [70.0, 72.0, 74.0], 0.02, 3.0)
    v = contention.joint_verdict(flat, [runs], scores, choice)
    assert v.infeasible == {} and v.feasible_miss_rate == 0.0
    assert "beyond the floor" not in "\n".join(v.lines())
