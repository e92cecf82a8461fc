"""perception_lifecycle_node driven through the standard lifecycle services (lifecycle_msgs ChangeState/GetState).

One process walks every transition: a broken family fails configure with the reason and the node stays
alive and unconfigured; after fixing the parameter, configure prepares the model, no results flow while
inactive, results flow after activate, stop after deactivate, and cleanup gives the memory back.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psutil
from perception_helpers import frame_rgb, image_msg, node_args, result, tiny_family
from ros_harness import NodeProcess, RosProbe, change_lifecycle_state, diagnostic_values, lifecycle_state, ros_env

WAIT = 60.0
NODE = "/perception_lifecycle_node"


def _state(probe: RosProbe) -> str:
    state = lifecycle_state(probe, NODE, WAIT)
    assert state is not None, "get_state did not answer"
    return state


def _change(probe: RosProbe, transition: int) -> bool:
    ok = change_lifecycle_state(probe, NODE, transition, WAIT)
    assert ok is not None, "neither change_state nor get_state answered"
    return ok


def _set_string(probe: RosProbe, name: str, value: str) -> Any:
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    request = SetParameters.Request(parameters=[Parameter(
        name=name, value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value))])
    answer = probe.call(SetParameters, f"{NODE}/set_parameters", request, timeout=WAIT, resend=True)
    assert answer is not None
    return answer.results[0]


def _rss(node: NodeProcess) -> int:
    return psutil.Process(node.pid).memory_info().rss


def _publish_for(probe: RosProbe, pub: Any, frames: int, prefix: str) -> None:
    """A short burst of frames at about 20 Hz (a rate loop; nothing waits on the node here)."""
    for i in range(frames):
        pub.publish(image_msg(probe, frame_rgb(i % 3), f"{prefix}{i}"))
        time.sleep(0.05)


def _results_after_frames(probe: RosProbe, pub: Any, results: Any, prefix: str) -> bool:
    deadline = time.monotonic() + WAIT
    i = 0
    while time.monotonic() < deadline:
        pub.publish(image_msg(probe, frame_rgb(1), f"{prefix}{i}"))
        i += 1
        if results.wait_until(lambda ms: any(result(m)["frame_id"].startswith(prefix) for m in ms), 0.2):
            return True
    return False


def test_lifecycle_transitions(isolated_network: None, domain_id: int, tmp_path: Any) -> None:
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.msg import Transition
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    broken = tmp_path / "broken.json"
    broken.write_text('{"format_version": 1, "name": "broken", "supernet": "no_such_supernet", "levels": []}',
                      encoding="utf-8")
    good = tiny_family(tmp_path / "tiny.json")
    with contextlib.ExitStack() as stack:
        node = stack.enter_context(NodeProcess("perception_lifecycle_node", node_args(broken),
                                               env=ros_env(domain_id)))
        probe = stack.enter_context(RosProbe(domain_id))
        images = probe.publisher("image_raw", Image, qos_profile_sensor_data)
        results = probe.collect("dynofa/classification", String)
        diagnostics = probe.collect("/diagnostics", DiagnosticArray)
        assert _state(probe) == "unconfigured"

        # configure with a broken family: fails with the reason, node alive, still unconfigured
        assert not _change(probe, Transition.TRANSITION_CONFIGURE)
        assert node.wait_for_output("configure failed: parameter family_file", WAIT), node.output()
        assert "no_such_supernet" in node.output()
        assert node.alive() and _state(probe) == "unconfigured"
        rss_unconfigured = _rss(node)

        # fix the parameter (allowed while unconfigured), configure: every level prepared, still no results
        assert _set_string(probe, "family_file", str(good)).successful
        assert _change(probe, Transition.TRANSITION_CONFIGURE), node.output()
        assert _state(probe) == "inactive"
        refused = _set_string(probe, "family_file", str(broken))
        assert not refused.successful and "unconfigured" in refused.reason
        _publish_for(probe, images, 15, "inactive")
        assert results.snapshot() == [], "results while inactive"

        # activate: results within a bounded wait
        assert _change(probe, Transition.TRANSITION_ACTIVATE)
        assert _state(probe) == "active"
        assert _results_after_frames(probe, images, results, "active"), node.output()[-2000:]
        assert diagnostics.wait_until(lambda ms: bool(ms) and "model_memory_mb" in diagnostic_values(ms[-1], "dynofa"),
                                     WAIT)
        model_bytes = float(diagnostic_values(diagnostics.snapshot()[-1], "dynofa")["model_memory_mb"]) * 2**20
        rss_active = _rss(node)

        # deactivate: results stop, model kept (re-activation needs no configure)
        assert _change(probe, Transition.TRANSITION_DEACTIVATE)
        assert _state(probe) == "inactive"
        results.clear()
        _publish_for(probe, images, 15, "deactivated")
        assert not any(result(m)["frame_id"].startswith("deactivated") for m in results.snapshot())
        assert _change(probe, Transition.TRANSITION_ACTIVATE)
        assert _results_after_frames(probe, images, results, "reactivated")
        assert _change(probe, Transition.TRANSITION_DEACTIVATE)

        # cleanup: the model is freed
        assert _change(probe, Transition.TRANSITION_CLEANUP)
        assert _state(probe) == "unconfigured"
        assert node.wait_for_output("model freed", WAIT)
        rss_clean = _rss(node)
        freed = rss_active - rss_clean
        print(f"RSS unconfigured {rss_unconfigured / 2**20:.0f} MiB, active {rss_active / 2**20:.0f} MiB, after "
              f"cleanup {rss_clean / 2**20:.0f} MiB, model {model_bytes / 2**20:.0f} MiB")
        assert freed >= 0.5 * model_bytes, (
            f"cleanup freed {freed / 2**20:.0f} MiB of a {model_bytes / 2**20:.0f} MiB model "
            f"(unconfigured {rss_unconfigured / 2**20:.0f}, active {rss_active / 2**20:.0f}, "
            f"after cleanup {rss_clean / 2**20:.0f} MiB)")
        assert node.alive()
