"""``dynofa/overrun_fallback`` end to end: the manager issues it, perception follows it, the manager takes over.

Two real processes, each against the test playing the other side (run through ``scripts/test.sh``: loopback-only
network namespace):

- a perception node (tiny two-level family) follows the instruction the test publishes: after a frame at the
  instruction's level slower than its limit it runs the lower level from the next frame, with no level command,
  once; an instruction it cannot follow is dropped with one line;
- a manager node (``joint``) fed by the test's samples issues the instruction once a burst of contention has
  driven it down and ended, for the level it then runs, and commands its level again after perception reports
  having followed it.

Every wait is bounded and on the condition itself; nothing asserts on durations.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from perception_helpers import frame_rgb, image_msg, module_domain, node_args, tiny_family
from ros_harness import NodeProcess, RosProbe, diagnostic_values, ros_env

from devtools.processes import network_is_isolated, poll_until

WAIT = 90.0  # a bound, not an expectation


def test_perception_follows_the_overrun_fallback_once_and_drops_one_it_cannot_follow(tmp_path):
    if not network_is_isolated():
        pytest.skip("not in a loopback-only network namespace: run through scripts/test.sh")
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float64MultiArray, UInt8

    from dynofa_ros import topics
    from dynofa_ros.nodes import inference_stats
    from dynofa_ros.nodes.common import IMAGE_QOS, LATCHED_QOS, STATS_QOS

    family = tiny_family(tmp_path / "tiny.json")
    domain = module_domain()
    with contextlib.ExitStack() as stack:
        node = stack.enter_context(NodeProcess("perception_node", node_args(family, "-p", "profile_runs:=0"),
                                               env=ros_env(domain)))
        probe = stack.enter_context(RosProbe(domain, "overrun_probe"))
        images = probe.publisher(topics.IMAGE_RAW, Image, IMAGE_QOS)
        cmd = probe.publisher(topics.SUBNET_CMD, UInt8, LATCHED_QOS)
        fallback = probe.publisher(topics.OVERRUN_FALLBACK, Float64MultiArray, LATCHED_QOS)
        stats = probe.collect(topics.INFERENCE_STATS, Float64MultiArray, STATS_QOS)
        active = probe.collect(topics.ACTIVE_LEVEL, UInt8, LATCHED_QOS)
        assert probe.wait_for_subscribers(images, timeout=WAIT), node.output()
        assert active.wait_for(1, WAIT), f"node never became ready:\n{node.output()}"
        rgb = frame_rgb(4)
        sent = [0]

        def frame() -> int:
            """One frame through the node (sent again while none comes back: images are best effort); its level."""
            n = len(stats.snapshot())

            def back() -> bool:
                if len(stats.snapshot()) > n:
                    return True
                images.publish(image_msg(probe, rgb, f"f{sent[0]}"))
                sent[0] += 1
                return False

            assert poll_until(back, WAIT, 0.3), node.output()
            return inference_stats.from_msg(stats.snapshot()[n], 2).level

        cmd.publish(UInt8(data=1))
        assert poll_until(lambda: frame() == 1, WAIT, 0.0), node.output()
        fallback.publish(inference_stats.overrun_to_msg((1, 10.0, 1)))  # not a move down: refused
        assert node.wait_for_output("'dynofa/overrun_fallback': to_level 1 is not below from_level 1", WAIT), \
            node.output()
        fallback.publish(inference_stats.overrun_to_msg((1, 0.001, 0)))  # every frame of level 1 is slower
        # the instruction is latched, but nothing says when it has arrived: frames run at level 1 until it has
        assert poll_until(lambda: frame() == 0, WAIT, 0.0), node.output()
        assert active.wait_until(lambda ms: ms[-1].data == 0, WAIT), node.output()
        assert node.wait_for_output("(the manager's overrun fallback, before its own command)", WAIT), node.output()
        cmd.publish(UInt8(data=1))
        assert poll_until(lambda: frame() == 1, WAIT, 0.0), node.output()
        assert [frame() for _ in range(3)] == [1, 1, 1], "used once: later late frames of level 1 stay at level 1"
        assert node.output().count("overrun fallback, before its own command") == 1, node.output()
        assert node.output().count("message dropped") == 1, node.output()


def test_the_manager_issues_the_overrun_fallback_after_a_burst_and_commands_again_once_it_was_followed(
        isolated_network, domain_id):
    """The test plays perception for a ``joint`` manager: the level it commands runs frames of 0.25 x the target
    until a burst makes them 2.5 x; after the drop, the level it then runs takes 0.9 x (no level above it would
    hold that burst), then 0.2 x (the burst has ended). The manager goes back up and, for the level it runs once
    that level has frames of its own, issues ``[from_level, target, to_level]``: that level, the target, a lower
    level. The test then reports (active level) that perception followed it: the manager commands its level
    again and counts it in its diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import Float64MultiArray, UInt8

    from dynofa_ros import topics
    from dynofa_ros.nodes import inference_stats
    from dynofa_ros.nodes.common import LATCHED_QOS, STATS_QOS

    target = 100.0  # the Xavier NX profile (the default family): every level fits when idle
    params = {"board": "generic", "min_dwell_s": 0.0, "probe_quiet_s": 0.0, "stale_timeout_s": 600.0,
              "decision_rate_hz": 10.0,
              "window_s": 8.0, "measure_first": 0, "target_latency_ms": target}
    manager = NodeProcess("manager_node", [a for k, v in params.items() for a in ("-p", f"{k}:={v}")],
                          env=ros_env(domain_id), name="manager_node")
    with manager, RosProbe(domain_id, "overrun_manager_probe") as probe:
        level_cmd = probe.collect(topics.SUBNET_CMD, UInt8, LATCHED_QOS)
        issued = probe.collect(topics.OVERRUN_FALLBACK, Float64MultiArray, LATCHED_QOS)
        diags = probe.collect(topics.DIAGNOSTICS, DiagnosticArray, 50)
        samples = probe.publisher(topics.INFERENCE_STATS, Float64MultiArray, STATS_QOS)
        active = probe.publisher(topics.ACTIVE_LEVEL, UInt8, LATCHED_QOS)
        assert probe.wait_for_subscribers(samples, 1, WAIT), manager.output()
        assert level_cmd.wait_for(1, WAIT) and issued.wait_for(1, WAIT), manager.output()
        assert inference_stats.overrun_from_msg(issued.snapshot()[0], 6) is None, "a manager starts by clearing it"

        def running() -> int:
            return level_cmd.snapshot()[-1].data

        def play(ms: float, until: Any) -> bool:
            """A frame every 50 ms at the level commanded, ``ms`` long, until ``until()`` (bounded)."""
            return poll_until(lambda: until() or samples.publish(inference_stats.to_msg(running(), ms, 0.0, 0)),
                              WAIT, 0.05)

        top = running()
        assert top > 0, manager.output()
        before = len(level_cmd.snapshot())
        n_frames = [0]

        def idle_then(k: int) -> Any:
            def done() -> bool:
                n_frames[0] += 1
                return n_frames[0] > k
            return done

        assert play(0.25 * target, idle_then(60)), manager.output()          # 3 s idle at whatever it runs
        held = running()
        assert play(2.5 * target, lambda: running() < held), manager.output()  # the burst: a drop
        dropped = running()
        n_frames[0] = 0
        assert play(0.9 * target, idle_then(30)), manager.output()         # the burst goes on at the level it allows
        # the burst ends: the frames get clearly faster, the manager goes back up and, for the level it runs once
        # that level has frames of its own, issues the instruction
        def armed() -> bool:
            last = inference_stats.overrun_from_msg(issued.snapshot()[-1], 6)
            return last is not None and last[0] == running()

        assert play(0.2 * target, armed), ([m.data for m in level_cmd.snapshot()[before:]],
                                           [list(m.data) for m in issued.snapshot()], manager.output())
        src, limit, dst = inference_stats.overrun_from_msg(issued.snapshot()[-1], 6)
        assert dst < src and limit == pytest.approx(target) and running() > dropped, (src, limit, dst, manager.output())
        commands = len(level_cmd.snapshot())
        active.publish(UInt8(data=dst))                             # perception followed it
        assert level_cmd.wait_until(lambda ms: len(ms) > commands, WAIT), manager.output()

        def followed() -> int:
            vals = [diagnostic_values(a, "dynofa manager").get("overrun_fallbacks_followed")
                    for a in diags.snapshot()]
            return max((int(v) for v in vals if v is not None), default=0)

        assert diags.wait_until(lambda ms: followed() == 1, WAIT), manager.output()
