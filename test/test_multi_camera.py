"""Two cameras, one model: results on each stream's own topic with its own stamps, the slow stream never starved,
and a second stream costs far less memory than a second model would (one model serves both).

Memory is compared within one process: the RSS of the two-camera node after traffic on the first camera only,
then after the second camera has started and run (its first frame, its slot, its diagnostics). Comparing two
processes was not a test: the same node's RSS varied by hundreds of MiB between runs on a loaded machine
(allocator arenas, runtime thread pools), far more than the effect measured.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import psutil
from perception_helpers import frame_rgb, image_msg, key, node_args, publish_paced, result, result_key, tiny_family
from ros_harness import NodeProcess, RosProbe, diagnostic_values, ros_env

WAIT = 60.0


def _sensor_qos() -> Any:
    from rclpy.qos import qos_profile_sensor_data

    return qos_profile_sensor_data


def _first_result(probe: RosProbe, pub: Any, results: Any, frame_id: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        msg = image_msg(probe, frame_rgb(0), frame_id)
        pub.publish(msg)
        want = key(msg)
        if results.wait_until(lambda ms, k=want: any(result_key(result(m)) == k for m in ms), 2.0):
            return
    raise AssertionError(f"no result for {frame_id}")


def _rss_after_traffic(node: NodeProcess, probe: RosProbe, streams: list[tuple[Any, Any, str]]) -> int:
    """RSS once every stream has run 40 frames through the node (steady state, buffers allocated)."""
    threads = [threading.Thread(target=publish_paced, args=(probe, pub, frame_rgb(4), 40, 20.0, f"{name}_rss"))
               for pub, _, name in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _, results, name in streams:
        assert results.wait_until(lambda ms, n=name: any(result(m)["frame_id"].startswith(f"{n}_rss") for m in ms),
                                  WAIT)
    return psutil.Process(node.pid).memory_info().rss


def test_two_cameras_one_model(isolated_network: None, domain_id: int, tmp_path: Any) -> None:
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    family = tiny_family(tmp_path / "tiny.json")

    with contextlib.ExitStack() as stack:
        node = stack.enter_context(NodeProcess(
            "perception_node", node_args(family, "-p", "cameras:=['front', 'rear']"), env=ros_env(domain_id)))
        probe = stack.enter_context(RosProbe(domain_id))
        pubs = {c: probe.publisher(f"{c}/image_raw", Image, _sensor_qos()) for c in ("front", "rear")}
        results = {c: probe.collect(f"{c}/dynofa/classification", String) for c in ("front", "rear")}
        diagnostics = probe.collect("/diagnostics", DiagnosticArray)
        for c in pubs:
            assert probe.wait_for_subscribers(pubs[c], timeout=WAIT), node.output()
        # Reference, in this process: only the front camera has ever carried a frame.
        _first_result(probe, pubs["front"], results["front"], "front_warm")
        rss_one = _rss_after_traffic(node, probe, [(pubs["front"], results["front"], "front")])
        assert not results["rear"].snapshot(), "the rear camera answered a frame it was never sent"
        _first_result(probe, pubs["rear"], results["rear"], "rear_warm")
        for r in results.values():
            r.clear()

        # 30 Hz and 5 Hz for 3 s, at the same time
        sent: dict[str, list[tuple]] = {}

        def run(camera: str, count: int, hz: float) -> None:
            sent[camera] = publish_paced(probe, pubs[camera], frame_rgb(5), count, hz, f"{camera}_")

        threads = [threading.Thread(target=run, args=("front", 90, 30.0)),
                   threading.Thread(target=run, args=("rear", 15, 5.0))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        last_rear = sent["rear"][-1]
        assert results["rear"].wait_until(lambda ms: any(result_key(result(m)) == last_rear for m in ms), WAIT)

        for camera, other in (("front", "rear"), ("rear", "front")):
            got = [result(m) for m in results[camera].snapshot()]
            assert got, f"no results for {camera}"
            assert all(r["camera"] == camera for r in got)
            keys = {result_key(r) for r in got}
            assert keys <= set(sent[camera]), f"{camera} topic carries frames it was never sent"
            assert not keys & set(sent[other])
        # Never starved: each camera has its own one-frame slot and the worker takes them in turn, so the slow
        # stream is served at least as large a share of its frames as the fast one, however slow inference is
        # (on an idle machine both are near 100 %: two rear frames of slack for the first and last frame).
        # A count in a time window would measure the machine's load, not the scheduling.
        rear_done = {result_key(result(m)) for m in results["rear"].snapshot()}
        front_done = {result_key(result(m)) for m in results["front"].snapshot()}
        rear_share, front_share = len(rear_done) / len(sent["rear"]), len(front_done) / len(sent["front"])
        assert rear_share >= min(front_share, 1 - 2 / len(sent["rear"])), (
            f"rear served {len(rear_done)} of {len(sent['rear'])}, front {len(front_done)} of {len(sent['front'])}")
        assert len(front_done) >= len(rear_done) - 1, "fast stream starved instead"

        assert diagnostics.wait_until(
            lambda ms: bool(ms) and "rear/image_raw.fps" in diagnostic_values(ms[-1], "dynofa"), WAIT)
        values = diagnostic_values(diagnostics.snapshot()[-1], "dynofa")
        for c in ("front", "rear"):
            assert {f"{c}/image_raw.{k}" for k in ("fps", "dropped", "age_ms_p50", "age_ms_p90")} <= set(values)
        model_bytes = float(values["model_memory_mb"]) * 2**20

        rss_two = _rss_after_traffic(node, probe, [(pubs[c], results[c], c) for c in ("front", "rear")])

    print(f"RSS one stream {rss_one / 2**20:.0f} MiB, two streams {rss_two / 2**20:.0f} MiB, "
          f"model {model_bytes / 2**20:.0f} MiB")
    # A second model (or a copy of the weights per stream) would add model_bytes; a frame slot, a publisher
    # and a few buffers for the second stream add a small fraction of it.
    assert model_bytes > 0
    assert rss_two - rss_one < 0.5 * model_bytes, (
        f"two streams use {(rss_two - rss_one) / 2**20:.0f} MiB more than one; one model is "
        f"{model_bytes / 2**20:.0f} MiB")
