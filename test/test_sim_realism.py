"""The simulator of the real graph (``dynofa_ros.offline.sim.simulate_graph``) against a recorded real run.

Why: the old simulator (3 % noise, contention ×1.3, the true level handed to the policy at once) said the
``joint`` controller made 0-1 switches where the machine made 20, so no decision about the controller could
be taken from it. Here the simulator learns its plant from a real ``bench/contention.py`` run on this
2-core machine (``test/data/contention_real_run.json``: per level, the latencies the fixed-level columns
measured, per number of busy processes; extracted by ``dynofa_ros.offline.sim.extract_realism_data``), and is
checked on what it was *not* fitted to: the miss rates of the managed columns of the same run (closed
loop: the policy's decisions change which levels run, so the simulated frames-in-flight timing, decision
timer, switch cost and spread all matter).

Re-record after changing the controller or the machine (about 36 minutes per round at full length, see
bench/contention.py; the recorded file is a full-length set of two rounds, 70.6 min)::

    . scripts/isolated.sh; run_isolated .venv/bin/python bench/contention.py --threads 1 --rounds 2 \
        --sim-data test/data/contention_real_run.json

No wall-clock assertions: everything here is simulated, seeded and deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dynofa_ros.control.policy import LevelSpec, PolicyConfig, StepPolicy, make_policy
from dynofa_ros.offline import sim

DATA = Path(__file__).parent / "data" / "contention_real_run.json"
#: Stop 50's set on an Intel Xeon VM (2 cores): joint over four rounds (16.9 min), then every fixed level in one
#: round with ``--fixed-managed`` (31 min: each beside a joint manager whose commands perception did not hear,
#: so the plant learned from those columns pays the manager's CPU as the managed columns do), then step (5 min);
#: merged and extracted with ``bench/contention.py --from-runs --sim-data``. It judges ``joint`` (the controller
#: as shipped now; pooled over four rounds, 2900-3600 frames a pattern: real / simulated misses 1.2 / 1.3,
#: 1.3 / 2.0, 0.9 / 1.1, 0.6 / 0.5, 0.9 / 1.1 %). ``step`` is judged on the AMD recording above and not here: on
#: this machine the simulator's step miss rates are off by 2.1-12.3 points (real 14.8-26.1 %, simulated
#: 16.9-33.5 %, the 640x480 pattern furthest; stop 47's recording: up to 12.9), a gap in how the simulator
#: replays a controller that switches at almost every decision, reported in the closing notes of stops 45-51,
#: not hidden by a wider tolerance. Stop 47's single round (replaced) gave joint 0.6-2.5 points per pattern.
DATA_INTEL = Path(__file__).parent / "data" / "contention_real_run_intel.json"
#: Which controllers each recording judges (joint only while its fingerprint is the one recorded).
JUDGED = {DATA: ("step", "joint"), DATA_INTEL: ("joint",)}
SEEDS = tuple(range(6))

#: Allowed |sim − real| miss rate, in points: per run, and averaged over the patterns. Why 10 and 5: one
#: real column of ~30 s is 500-600 frames (binomial standard error up to 2.2 points at 30-50 % misses; the
#: 640x480 column, whose large frames mostly never reach the node, ~120 frames: 4.5 points); the simulated
#: figure is a mean over 6 seeds (±1-2 points). Above all, the fixed-level columns the plant is learned from
#: were recorded minutes apart from the managed ones on a machine shared with other work: in an earlier
#: recording (Intel Xeon VM, load average 5-12 on 2 cores) the same level under the same contention differed
#: between two runs by a median of 15 points. Per-run errors are therefore allowed up to 10 points, and the
#: mean over patterns, where that drift averages out, to 5. Two real runs of the same controller and
#: pattern, 10-40 minutes apart, differed by 5.5 points on average there (0.2-9.6 points on the 160x120
#: patterns); the simulator is asked to agree with reality about as well as reality agrees with itself.
#: The committed recording: stop 43's full set on an AMD EPYC VM (two rounds per column, load average
#: 0.10-1.56, the controller with the stay test and the burst record; policy fingerprints in the file; stop
#: 41's set before it gave step 0.9-4.8, joint 0.1-0.6; stop 38's step 0.2-1.3, joint 0.1-0.5; stop 36's step
#: 1.0-5.7, joint 0.1-0.3). Measured when committed: step 1.0-4.0 points per pattern (2.3 on average), joint
#: 0.0-0.4 (0.2); with the machine-wide slow factor (stop 50) step 0.2-3.9 (2.3). The old parametric model
#: predicts no miss at all for step on these runs (real 5.0-14.2 %, 7.7 points off on average: test below), so
#: the bounds still tell it apart.
TOLERANCE = 0.10
MEAN_TOLERANCE = 0.05
#: The noise the old simulator assumed (σ of log latency); the learned plant must replay the machine's.
OLD_LOG_SPREAD = 0.03
#: Real columns with fewer frames are reported (bench --sim-data) but not judged here: on this machine ~80 %
#: of the 640x480 frames never reach the node, leaving ~100 frames per column (binomial standard error ~5
#: points, and two real runs of the same controller differed by 24 points there).
MIN_FRAMES = 300


@pytest.fixture(scope="module")
def data() -> dict:
    return json.loads(DATA.read_text(encoding="utf-8"))


def _sim_miss(scn: sim.GraphScenario, plant: sim.LearnedPlant, controller: str) -> float:
    return float(np.mean([r.miss_rate for r in sim.simulate_controller(scn, plant, controller, seeds=SEEDS)]))


def _compared(data: dict, judged: tuple[str, ...] = ("step", "joint")) -> list[str]:
    """step always where judged (the paper's baseline, unchanged); joint only while policy.py is the recorded
    one."""
    out = ["step"] if "step" in judged else []
    if "joint" in judged and data["policy_fingerprint"].get("joint") == sim.policy_fingerprint("joint"):
        out.append("joint")
    return out


def test_the_shipped_joint_is_judged_on_a_recording_of_itself():
    """Guard: the Intel recording holds the controller as it is now, so the agreement test below judges joint
    (a policy change must re-record; until then joint is not judged at all, which this test makes loud)."""
    data = json.loads(DATA_INTEL.read_text(encoding="utf-8"))
    assert _compared(data, JUDGED[DATA_INTEL]) == ["joint"], data["policy_fingerprint"]


def test_recorded_data_is_small_and_complete(data):
    assert DATA.stat().st_size < 1_000_000
    for name, p in data["patterns"].items():
        assert "step" in p["real"], name
        assert p["camera"] in data["plants"]


def test_learned_contention_slowdown_grows_with_busy_processes(data):
    plant = sim.LearnedPlant.from_json(data["plants"]["160x120"])
    s1, s2 = plant.slowdown(1), plant.slowdown(2)
    # two busy processes take both cores: the inference slows. One leaves a core free for the bench's 1-thread
    # inference, so it may not slow it at all (stop 41's recording: 0.98; stop 43's: 1.01; stop 38's: above 1).
    # Its median ratio is then 1 within the drift between columns recorded minutes apart, which the tolerances
    # above put at a few points; 5 % below 1 would be a faster machine under load, which no recording has shown
    assert s2 > 1.0 and s1 < s2 and s1 > 0.95, (s1, s2)
    # the spread the plant replays is the machine's, at least twice the old 3 % (AMD EPYC recordings: σ 0.06-0.12
    # per idle level, median 0.09; the Intel recordings before it: above 0.1)
    sig = [float(np.std(np.log(v))) for v in plant.sequences[0].values()]
    assert np.median(sig) > 2 * OLD_LOG_SPREAD


@pytest.mark.parametrize("path", [DATA, DATA_INTEL], ids=["amd_epyc_s43", "intel_xeon_s50"])
def test_sim_miss_rates_agree_with_the_real_run(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = []
    for name, (scn, plant) in sim.realism_scenarios(data).items():
        for col in _compared(data, JUDGED[path]):
            real = data["patterns"][name]["real"].get(col)
            if real is None or real["frames"] < MIN_FRAMES:
                continue
            rows.append((name, col, real["miss_rate"], _sim_miss(scn, plant, col)))
    assert rows
    bad = [r for r in rows if abs(r[2] - r[3]) > TOLERANCE]
    table = "\n".join(f"{n:<14} {c:<6} real {100 * a:5.1f} %  sim {100 * b:5.1f} %" for n, c, a, b in rows)
    assert not bad, f"sim and real disagree by more than {100 * TOLERANCE:g} points:\n{table}"
    for col in {r[1] for r in rows}:
        mean_err = float(np.mean([abs(a - b) for _, c, a, b in rows if c == col]))
        assert mean_err <= MEAN_TOLERANCE, f"{col}: mean |sim − real| {100 * mean_err:.1f} points:\n{table}"


def test_the_old_parametric_model_does_not_agree(data):
    """The test above can fail: the plant the simulator used to assume (profile × ×1.3 under contention ×
    3 % log-normal noise, no switch cost) predicts miss rates too far from the real ones to pass it."""
    levels = sim.bench_levels()
    old = sim.LearnedPlant.lognormal([lv.latency_ms for lv in levels], OLD_LOG_SPREAD, {0: 1.0, 1: 1.15, 2: 1.3})
    errors = []
    for name, (scn, _) in sim.realism_scenarios(data).items():
        real = data["patterns"][name]["real"]["step"]["miss_rate"]
        errors.append(abs(_sim_miss(scn, old, "step") - real))
    assert float(np.mean(errors)) > MEAN_TOLERANCE, errors


# ---------------------------------------------------------------------------------------------- mechanics
class RecordingStep(StepPolicy):
    """The real step policy, keeping every input it was given (to see what the graph hands it)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.seen: list = []

    def decide(self, inp):
        self.seen.append(inp)
        return super().decide(inp)


def _two_level_plant() -> tuple[list[LevelSpec], sim.LearnedPlant]:
    levels = [LevelSpec(70.0, 5.0), LevelSpec(80.0, 20.0)]
    seqs = {0: {0: np.full(50, 5.0), 1: np.full(50, 20.0)}}
    return levels, sim.LearnedPlant(seqs, 2, switch_factor=1.5)


def test_frames_in_flight_switch_at_next_frame_and_first_frame_slower():
    levels, plant = _two_level_plant()
    scn = sim.GraphScenario("t", 4.0, 20.0, ((0.0, 0),), ((0.0, 15.0),))
    pol = RecordingStep(levels)
    run = sim.simulate_graph(scn, plant, pol, initial_level=1, decision_rate_hz=5.0, seed=3)
    # level 1 (20 ms) misses 15 ms: step goes down to level 0 and stays
    first0 = int(np.argmax(run.level == 0))
    assert run.level[0] == 1 and first0 > 0 and np.all(run.level[first0:] == 0)
    assert run.latency_ms[first0] == pytest.approx(5.0 * 1.5)      # the first frame after a switch is slower
    assert run.latency_ms[first0 + 1] == pytest.approx(5.0)
    # one frame at a time, each sample delivered after its own latency
    starts = run.t_s - run.latency_ms / 1000.0
    assert np.all(starts[1:] >= run.t_s[:-1] - 1e-9)
    # a sample reaches the manager only once its frame is done: no decision sees a sample from its future
    for inp in pol.seen:
        assert all(s.stamp <= inp.now + 1e-9 for s in inp.latencies)


def test_the_machine_factor_keeps_a_stall_of_several_frames_and_leaves_a_one_frame_spike_to_the_level():
    """The split the plant replays: median × exp(machine factor + the level's own residual) is the recorded
    sequence exactly, a stall as long as half the window or more is the machine's (it slows whatever level runs),
    and one slow frame is the level's own."""
    seq = np.full(60, 10.0)
    seq[20:25] = 30.0     # five frames in a row 3x: a neighbour's stall
    seq[45] = 40.0        # one frame 4x
    plant = sim.LearnedPlant({0: {0: seq}}, 1, machine_window=9)
    med, slow, own = plant.machine_factor(seq)
    assert med == pytest.approx(10.0)
    assert np.allclose(med * np.exp(slow + own), seq)
    assert np.allclose(slow[21:24], np.log(3.0)) and np.allclose(own[20:25], 0.0)
    assert slow[45] == pytest.approx(0.0) and own[45] == pytest.approx(np.log(4.0))


@pytest.mark.parametrize("window", [0, sim.MACHINE_WINDOW])
def test_a_slow_stretch_recorded_in_one_levels_column_slows_every_level_only_with_the_machine_factor(window):
    """Level 1's column holds a slow minute (60 of its 600 frames at 3x), level 0's none: they were recorded
    minutes apart. Replaying each column as recorded (window 0), level 0 never runs slow, so a manager that
    leaves level 1 escapes the machine's slowdown; with the machine factor both levels meet it, each about as
    often as the slow frames' share of all the factors (60 of 1200 frames: 5 %). Bounds: the block bootstrap
    draws ~1 block of 20 frames in 20, so 4000 draws are ~200 blocks and a 5 % share has a standard error of
    about 1.5 points; 1 % is 2.7 of them below (0, what no factor gives, 3.3) and 12 % 4.7 above."""
    rng = np.random.default_rng(0)
    quiet = 10.0 * np.exp(rng.normal(0.0, 0.05, 600))
    slow_minute = 20.0 * np.exp(rng.normal(0.0, 0.05, 600))
    slow_minute[300:360] *= 3.0
    plant = sim.LearnedPlant({0: {0: quiet, 1: slow_minute}}, 2, machine_window=window)
    draw = plant.sampler(seed=1)
    level0 = np.array([draw(0, 0) for _ in range(4000)])
    share = float(np.mean(level0 > 20.0))
    if window:
        assert 0.01 < share < 0.12, share
    else:
        assert share == 0.0, share


def test_samples_tagged_with_the_true_level_unless_paired_with_active_level():
    levels, plant = _two_level_plant()
    scn = sim.GraphScenario("t", 4.0, 20.0, ((0.0, 0),), ((0.0, 15.0),))
    wrong = {}
    for tagging in ("true", "active_level"):
        pol = RecordingStep(levels)
        sim.simulate_graph(scn, plant, pol, initial_level=1, seed=3, tagging=tagging)
        samples = [s for inp in pol.seen for s in inp.latencies]
        # level 1 always takes 20 ms, level 0 at most 7.5 ms: a sample's latency names its true level
        wrong[tagging] = sum(1 for s in samples if (s.latency_ms > 10.0) != (s.level == 1))
    assert wrong["true"] == 0
    assert wrong["active_level"] >= 1   # the first frame after the switch is read as the old level


def test_extraction_splits_by_busy_processes_and_keeps_real_scores_apart():
    """extract_realism_data: fixed-level frames go to the cell of the busy processes in force when the
    frame *started*; managed columns give only the switch factor and the real scores."""
    def run(level, lat, t, busy_changes, ok=True):
        return {"ok": ok, "level": level, "latency_ms": lat, "t_s": t, "frame_t_s": [x - 0.01 for x in t],
                "busy_changes": busy_changes, "loadavg_before": [1.0, 1.0, 1.0], "loadavg_after": [1.0, 1.0, 1.0]}

    t = [0.05 * i for i in range(1, 201)]          # 10 s at 20 fps, 2 busy processes from 5 s
    changes = [[0.0, 0], [5.0, 2]]
    fixed = run([0] * 200, [5.0 if x < 5.01 else 15.0 for x in t], t, changes)
    managed = run([1 if x < 3.0 else 0 for x in t], [12.0 if x < 3.0 else 5.0 for x in t], t, changes)
    runs_json = {"family": "config/families/generic_cpu.json",
                 "patterns": [{"name": "p", "duration_s": 10.0, "fps": 20.0, "width": 160, "height": 120,
                               "busy": [[0.0, 0], [5.0, 2]], "targets": [[0.0, 10.0]]}],
                 "runs": {"p": {"L0": fixed, "step": managed, "joint": run([], [], [], [], ok=False)}}}
    d = sim.extract_realism_data(runs_json)
    cells = d["plants"]["160x120"]["busy"]
    # the frame received at 5.00 s started before the change: it is idle; the first frame is left out
    assert set(cells) == {"0", "2"} and set(cells["0"]) == {"0"}
    assert all(x == 5.0 for x in cells["0"]["0"]) and all(x == 15.0 for x in cells["2"]["0"])
    assert len(cells["0"]["0"]) + len(cells["2"]["0"]) == 199
    real = d["patterns"]["p"]["real"]
    assert set(real) == {"L0", "step"}
    assert real["step"]["miss_rate"] == pytest.approx(np.mean([x < 3.0 for x in t]), abs=1e-3)
    assert real["L0"]["miss_rate"] == pytest.approx(0.5, abs=0.01)
    assert d["patterns"]["p"]["busy"] == changes


def test_extraction_of_several_rounds_learns_from_every_round_and_pools_the_real_scores():
    """A ``bench/contention.py --rounds 2`` recording: both rounds' fixed columns teach the plant, and each real
    score is over both rounds of its column (frames and seconds pooled), not round 1's alone."""
    def run(level, lat, t, ok=True):
        return {"ok": ok, "level": level, "latency_ms": lat, "t_s": t, "frame_t_s": [x - 0.01 for x in t],
                "busy_changes": [[0.0, 0]], "loadavg_before": [1.0, 1.0, 1.0], "loadavg_after": [2.0, 2.0, 2.0]}

    t = [0.05 * i for i in range(1, 201)]          # 10 s at 20 fps, idle
    first = {"L0": run([0] * 200, [5.0] * 200, t),
             "step": run([1 if x < 3.0 else 0 for x in t], [12.0 if x < 3.0 else 5.0 for x in t], t)}
    second = {"L0": run([0] * 200, [6.0] * 200, t), "step": run([0] * 200, [5.0] * 200, t)}
    runs_json = {"family": "config/families/generic_cpu.json",
                 "patterns": [{"name": "p", "duration_s": 10.0, "fps": 20.0, "width": 160, "height": 120,
                               "busy": [[0.0, 0]], "targets": [[0.0, 10.0]]}],
                 "runs": {"p": first}, "rounds": [{"p": second}]}
    d = sim.extract_realism_data(runs_json)
    cell = d["plants"]["160x120"]["busy"]["0"]["0"]
    assert sorted(set(cell)) == [5.0, 6.0] and len(cell) == 2 * 199   # each round's first frame left out
    real = d["patterns"]["p"]["real"]["step"]
    late = sum(x < 3.0 for x in t)
    assert real["frames"] == 400 and real["rounds"] == 2
    assert real["miss_rate"] == pytest.approx(late / 400, abs=1e-4)
    assert real["switches_per_min"] == pytest.approx(60.0 * 1 / (2 * (t[-1] - t[0])), abs=0.01)
    # one round: as before, round 1 only
    one = sim.extract_realism_data({**runs_json, "rounds": []})
    assert set(one["plants"]["160x120"]["busy"]["0"]["0"]) == {5.0}
    assert one["patterns"]["p"]["real"]["step"]["miss_rate"] == pytest.approx(late / 200, abs=1e-4)


def test_the_manager_decides_when_the_target_changes_not_only_on_its_timer():
    """As ``ManagerNode._on_target``: joint plans a new target at once. Level 1 takes 20 ms in every frame, so
    a target of 20.5 ms is never missed, but the plan keeps a margin (``latency_margin``: 20.5 · 0.95 < 20):
    the next decision moves to level 0. With one timer tick per 30 s, only the decision at the change makes
    it within the second; ``step`` decides on its period only."""
    levels, plant = _two_level_plant()
    scn = sim.GraphScenario("t", 20.0, 20.0, ((0.0, 0),), ((0.0, 40.0), (10.0, 20.5)))
    cfg = PolicyConfig(prior_log_spread=0.25, measure_first=0)
    pol = make_policy("joint", levels, config=cfg)
    run = sim.simulate_graph(scn, plant, pol, initial_level=1, decision_rate_hz=1 / 30, seed=3)
    assert run.miss_rate == 0.0
    assert np.all(run.level[run.t_s < 10.0] == 1)
    after = run.t_s > 10.2
    assert np.all(run.level[after] == 0), "the new target was not planned at once"
    slow = sim.simulate_graph(scn, plant, make_policy("step", levels), initial_level=1, decision_rate_hz=1 / 30,
                              seed=3)
    assert slow.switches <= 1 and np.all(slow.level[(slow.t_s > 10.2) & (slow.t_s < 15.0)] == slow.level[0])
