"""Every latency sample the manager reads carries the level that produced it, across level switches.

A real perception_node (tiny two-level family: 5 ms and 62 ms levels on the Xavier NX profile, so a
sample of one level looks nothing like the other) runs frames while the test switches levels back and
forth. For every frame, ``dynofa/inference_stats`` must name the same level and latency as the frame's
own classification message (which the worker builds from the result of that very inference).
"""

from __future__ import annotations

import contextlib
import threading

import pytest
from perception_helpers import frame_rgb, image_msg, module_domain, node_args, result, tiny_family
from ros_harness import NodeProcess, RosProbe, ros_env

from devtools.processes import network_is_isolated

WAIT = 60.0


def test_stats_name_the_level_that_ran_each_frame(tmp_path):
    if not network_is_isolated():
        pytest.skip("not in a loopback-only network namespace: run through scripts/test.sh")
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float64MultiArray, String, UInt8

    from dynofa_ros import topics
    from dynofa_ros.nodes import inference_stats
    from dynofa_ros.nodes.common import STATS_QOS

    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    family = tiny_family(tmp_path / "tiny.json")
    domain = module_domain()
    with contextlib.ExitStack() as stack:
        node = stack.enter_context(NodeProcess("perception_node", node_args(family), env=ros_env(domain)))
        probe = stack.enter_context(RosProbe(domain, "stats_probe"))
        images = probe.publisher("image_raw", Image, qos_profile_sensor_data)
        cmd = probe.publisher("dynofa/subnet_cmd", UInt8, latched)
        results = probe.collect("dynofa/classification", String, 100)
        stats = probe.collect(topics.INFERENCE_STATS, Float64MultiArray, STATS_QOS)
        active = probe.collect("dynofa/active_level", UInt8, latched)
        assert probe.wait_for_subscribers(images, timeout=WAIT), node.output()
        assert active.wait_for(1, WAIT), f"node never became ready:\n{node.output()}"

        stop = threading.Event()

        def camera() -> None:
            rgb = frame_rgb(3)
            i = 0
            while not stop.wait(0.02):  # 50 Hz offered: the node keeps the newest frame, drops the rest
                images.publish(image_msg(probe, rgb, f"f{i}"))
                i += 1

        feeder = threading.Thread(target=camera, daemon=True)
        feeder.start()
        try:
            for k in range(6):  # 0 -> 1 -> 0 -> ...: switches while frames are in flight
                level = (k + 1) % 2
                seen = len(results.snapshot())
                cmd.publish(UInt8(data=level))
                assert results.wait_until(lambda m, s=seen, lv=level: any(
                    result(x)["level"] == lv for x in m[s:]), WAIT), node.output()
            n = len(results.snapshot())
            assert stats.wait_until(lambda m: len(m) >= n, WAIT)
        finally:
            stop.set()
            feeder.join(5.0)

        by_stamp = {}
        for m in stats.snapshot():
            s = inference_stats.from_msg(m, 2)
            by_stamp[round(s.frame_stamp_s, 6)] = s
        checked = 0
        for r in map(result, results.snapshot()):
            stamp = round(r["stamp"]["sec"] + r["stamp"]["nanosec"] * 1e-9, 6)
            s = by_stamp.get(stamp)
            if s is None:
                continue  # a stats message may still be in flight for the newest frame
            assert s.level == r["level"], (stamp, s, r["level"])
            assert s.latency_ms == pytest.approx(r["model_ms"], abs=1e-3)
            checked += 1
        levels = {r["level"] for r in map(result, results.snapshot())}
        assert checked >= len(results.snapshot()) - 2 and levels == {0, 1}
        assert m.layout.dim[0].label == ",".join(inference_stats.FIELDS)
