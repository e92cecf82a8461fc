"""CI replay: scenario bag → running perception + manager nodes → recorded outputs → report.

Real node processes over real DDS in a loopback-only namespace (``scripts/test.sh``), started with the
generic_cpu params file exactly as ``launch/dynofa.launch.py`` would (``launch_config.node_specs``), a
rosbag2 bag written by ``make_scenario_bag``, played by ``replay`` and recorded by ``record``.

The scenario (config/scenarios/ci_short.yaml) encodes the contention step as a latency-target drop at
6 s (1000 ms → 0.5 ms), so the level switch it must cause does not depend on how busy the CI machine
is; the demo (scripts/demo.sh) uses real competing processes instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from perception_helpers import tiny_family

from devtools.demo import Graph, Proc, find_executable
from dynofa_ros import launch_config as lc
from dynofa_ros.replay import bagio, scoring
from dynofa_ros.replay import scenario as scn
from dynofa_ros.tools import make_scenario_bag as msb
from dynofa_ros.tools import report

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "config/scenarios/ci_short.yaml"
STEP_S = 6.0  # the scenario's target drop


@pytest.mark.usefixtures("isolated_network")
def test_replayed_scenario_is_scored(tmp_path: Path, domain_id: int, capsys: pytest.CaptureFixture) -> None:
    sc = scn.load_scenario(SCENARIO)
    bag = tmp_path / "scenario"
    msb.write_bag(sc, bag, "mcap")
    frame_stamps = {bagio.stamp_ns(m) for t, _, m in bagio.read_messages(bag, ["image_raw"])}
    family = tiny_family(tmp_path / "tiny.json")

    args = lc.LaunchArgs(platform="generic_cpu", family_file=str(family), use_dvfs=False, use_monitor=False)
    common = {"threads": 1, "diagnostics_period_s": 0.5}
    graph = Graph(args, domain_id=domain_id, log_dir=tmp_path / "logs",
                  overrides={"perception_node": common})
    assert [s.name for s in graph.specs] == ["perception_node", "manager_node"]
    out = tmp_path / "recorded"
    topics = ["dynofa/inference_latency_ms", "dynofa/active_level", "dynofa/classification", "dynofa/subnet_cmd",
              "dynofa/target_latency_ms", "battery_state", "load/cpu", "thermal/cpu"]
    record = replay = None
    try:
        graph.start()
        perception = graph.proc("perception_node")
        assert perception.wait_for_output("ready:", 150), perception.output()[-3000:]
        record = Proc("record", [find_executable("dynofa-record"), "-o", str(out), "--topics", *topics], graph.env,
                      tmp_path / "logs")
        assert record.wait_for_output("record: subscribed dynofa/subnet_cmd", 120), record.output()
        assert record.wait_for_output("record: subscribed dynofa/inference_latency_ms", 120), record.output()
        # Play only once perception, manager and recorder all listen, so no replayed message is missed.
        waits = ["image_raw:1", "battery_state:2", "load/cpu:2", "thermal/cpu:2", "dynofa/target_latency_ms:2"]
        replay = Proc("replay", [find_executable("dynofa-replay"), str(bag), *[f"--wait-for={w}" for w in waits]],
                      graph.env, tmp_path / "logs")
        rc = replay.wait(sc.duration_s + 60)
        assert rc == 0, replay.output()
        assert not graph.dead(), [(p.name, p.output()[-2000:]) for p in graph.dead()]
    finally:
        if replay is not None:
            replay.stop()
        if record is not None:
            assert record.stop() == 0, record.output()
        graph.stop()

    # Recorded inputs: exactly what the bag holds (reliable replay → reliable recorder).
    info = bagio.bag_info(out)["topics"]
    expected = scn.expected_counts(sc)
    for topic in ("battery_state", "load/cpu", "thermal/cpu", "dynofa/target_latency_ms"):
        assert info[topic]["count"] == expected[topic], (topic, info)

    # Outputs: one latency per result, never more results than frames. How many frames are processed is the
    # machine's speed (the depth-1 input keeps the newest frame and drops the rest by design), so it is not
    # asserted: a count in the replay's time window would measure the load, not the node. Results on both
    # sides of the step are required by the level checks below.
    results = [json.loads(m.data) for t, _, m in bagio.read_messages(out, ["dynofa/classification"])]
    n_frames = expected["image_raw"]
    assert 0 < len(results) <= n_frames, len(results)
    assert info["dynofa/inference_latency_ms"]["count"] == len(results)

    # Every result carries the stamp of a frame the replay published (never an invented or reused one).
    stamps = [r["stamp"]["sec"] * 1_000_000_000 + r["stamp"]["nanosec"] for r in results]
    assert set(stamps) <= frame_stamps
    assert len(set(stamps)) == len(stamps)
    assert all(r["frame_id"] == "ci_camera" for r in results)

    # The step: the manager's level before it is above the level after it, and the switch follows the step.
    # The step's time is the recorded target drop: the run's clock starts at its first recorded input, tens of
    # ms off the scenario's (recorded drops at 5.94-5.97 s), and the manager now plans a new target the moment
    # it arrives, so the command follows the recorded drop by a few ms and the nominal 6 s is inside that skew.
    run = report.load_run(out, "ci")
    drops = [t for (t, v), (_, prev) in zip(run.target_ms[1:], run.target_ms, strict=False) if v < prev]
    assert len(drops) == 1 and abs(drops[0] - STEP_S) < 1.0, run.target_ms
    step_t = drops[0]
    before = scoring.value_at(run.active_level, step_t - 0.01)
    after = run.active_level[-1][1]
    assert before is not None and after < before, (step_t, run.active_level)
    switch_times = [t for (t, v), (_, prev) in zip(run.active_level[1:], run.active_level, strict=False)
                    if v != prev]
    assert any(t >= step_t for t in switch_times), (step_t, run.active_level)
    assert run.subnet_cmd, "the manager published no command"

    # The report scores the run and draws it.
    png = tmp_path / "timeline.png"
    rc = report.main([str(out), "--family", str(family), "--png", str(png), "--json", str(tmp_path / "r.json")])
    assert rc == 0 and png.stat().st_size > 10_000
    scores = json.loads((tmp_path / "r.json").read_text())
    assert scores[0]["frames"] == len(results) and scores[0]["switches"] >= 1
    # After the drop to 0.5 ms, every frame misses: the miss rate counts them against the target in force.
    assert scores[0]["misses"] >= sum(1 for t, _ in run.latency_ms if t >= STEP_S + 0.5)

    # Two runs split by a mark: misses per phase with their counts, and the first run compared with the
    # second phase by phase (here the same bag twice: no worse in either phase).
    capsys.readouterr()
    assert report.main([str(out), str(out), "--labels", "a,b", "--mark", f"{STEP_S:g}:step"]) == 0
    text = capsys.readouterr().out
    after = next(ln for ln in text.splitlines() if ln.strip().startswith("after step"))
    assert after.endswith(f" of {sum(1 for t, _ in run.latency_ms if t >= STEP_S)})"), after
    assert "[a vs b]" in text and text.count(": no worse") == 2, text


@pytest.mark.usefixtures("isolated_network")
def test_the_live_monitor_check_from_two_threads_destroys_the_bags_publisher_once(domain_id: int) -> None:
    """The player's poll timer (the executor's thread) and its main thread (right before the first message)
    both run ``Player.check_monitor``. When a live monitor publishes the bag's ``load/cpu``, one of them
    destroys the bag's publisher; the other must then see the topic as skipped, not read the destroyed
    handle (a demo's replay died with rclpy's InvalidHandle there). Real rclpy, the two calls released
    together from a barrier 1000 times, with a thread switch interval short enough to interleave them."""
    import threading

    import rclpy
    from std_msgs.msg import Float32

    from dynofa_ros import topics
    from dynofa_ros.tools import replay

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node("monitor_check_test", context=context)
    interval = sys.getswitchinterval()
    try:
        node.create_publisher(Float32, topics.LOAD_CPU, 10)    # the live monitor's publisher
        args = replay.parse_args(["unused_bag"])
        msgs = [bagio.BagMessage(topics.LOAD_CPU, "std_msgs/msg/Float32", 0, b"")]
        errors: list[BaseException] = []
        sys.setswitchinterval(1e-6)
        for _ in range(1000):
            player = replay.Player(node, args, msgs, {topics.LOAD_CPU: Float32})
            barrier = threading.Barrier(2)

            def check(p: replay.Player = player, b: threading.Barrier = barrier) -> None:
                b.wait()
                try:
                    p.check_monitor()
                except Exception as exc:  # any exception here is the failure being tested
                    errors.append(exc)

            threads = [threading.Thread(target=check) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30.0)
            assert not any(t.is_alive() for t in threads), "check_monitor hung"
            assert player.skipped == {topics.LOAD_CPU}
        assert not errors, f"{len(errors)} of 1000 concurrent checks raised: {errors[0]!r}"
    finally:
        sys.setswitchinterval(interval)
        node.destroy_node()
        rclpy.shutdown(context=context)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
