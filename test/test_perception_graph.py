"""perception_node over real DDS: stamps carried, level switches between frames, no backlog, bad input survived.

One node process (tiny two-level family: level 0 smallest, 1 largest of the Xavier NX six) serves the
module; tests that need a node in a particular state (not ready yet) start their own. Every wait is
bounded; nothing asserts on wall-clock durations.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pytest
from perception_helpers import (
    SIX_LEVELS,
    frame_rgb,
    image_msg,
    key,
    module_domain,
    node_args,
    result,
    result_key,
    ros_minus_monotonic,
    tiny_family,
)
from ros_harness import NodeProcess, RosProbe, diagnostic_values, publish_paced_until, ros_env

from devtools.processes import network_is_isolated

#: Six levels exported into an empty ONNX cache: about 35 s on a quiet 2-core machine, over 60 s beside two busy loops.
COLD_EXPORT_WAIT = 300.0
WAIT = 60.0  # generous bound for anything the node does once (model start-up included, on a loaded machine)


@dataclass
class Graph:
    node: NodeProcess
    probe: RosProbe
    images: Any
    compressed: Any
    cmd: Any
    results: Any
    levels: Any
    latency: Any
    diagnostics: Any


def _qos() -> tuple[Any, Any]:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return qos_profile_sensor_data, latched


def _open_graph(stack: Any, node: NodeProcess, domain: int) -> Graph:
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Float32, String, UInt8

    sensor, latched = _qos()
    stack.enter_context(node)
    probe = stack.enter_context(RosProbe(domain))
    g = Graph(node, probe,
              images=probe.publisher("image_raw", Image, sensor),
              compressed=probe.publisher("image_raw/compressed", CompressedImage, sensor),
              cmd=probe.publisher("dynofa/subnet_cmd", UInt8, latched),
              results=probe.collect("dynofa/classification", String),
              levels=probe.collect("dynofa/active_level", UInt8, latched),
              latency=probe.collect("dynofa/inference_latency_ms", Float32),
              diagnostics=probe.collect("/diagnostics", DiagnosticArray))
    assert probe.wait_for_subscribers(g.images, timeout=WAIT), node.output()
    return g


def _wait_ready(g: Graph, timeout: float = WAIT) -> None:
    """Ready = the node published its active level (it does so once the model is prepared)."""
    assert g.levels.wait_for(1, timeout), f"node never became ready:\n{g.node.output()}"


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not network_is_isolated():
        pytest.skip("not in a loopback-only network namespace: run through scripts/test.sh")
    import contextlib

    family = tiny_family(tmp_path_factory.mktemp("family") / "tiny.json")
    domain = module_domain()
    with contextlib.ExitStack() as stack:
        node = NodeProcess("perception_node", node_args(family), env=ros_env(domain))
        g = _open_graph(stack, node, domain)
        _wait_ready(g)
        _good_frame_processed(g, "warm-up")  # first inference allocates; keep it out of the tests
        yield g


def _set_level(g: Graph, level: int) -> None:
    from std_msgs.msg import UInt8

    g.cmd.publish(UInt8(data=level))
    assert g.node.wait_for_output(f"level command {level}", WAIT)


def _good_frame_processed(g: Graph, frame_id: str, seed: int = 7) -> dict:
    """Publish one good frame (again if best-effort lost it) and return its result."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        msg = image_msg(g.probe, frame_rgb(seed), frame_id)
        g.images.publish(msg)
        want = key(msg)
        if g.results.wait_until(lambda ms, k=want: any(result_key(result(m)) == k for m in ms), 5.0):
            return next(result(m) for m in g.results.snapshot() if result_key(result(m)) == want)
    raise AssertionError(f"good frame {frame_id} never processed; node alive={g.node.alive()}\n{g.node.output()}")


# ---------------------------------------------------------------------- results carry the source frame
def _publisher(g: Graph, rgb: np.ndarray, prefix: str) -> Any:
    """``publish_one(i)`` for :func:`publish_paced_until`: one stamped frame, its key."""
    def publish_one(i: int) -> tuple[int, int, str]:
        msg = image_msg(g.probe, rgb, f"{prefix}{i}")
        g.images.publish(msg)
        return key(msg)
    return publish_one


def _stamp_s(res: dict) -> float:
    return res["stamp"]["sec"] + res["stamp"]["nanosec"] / 1e9


def test_every_result_carries_a_published_frames_stamp_and_frame_id(graph: Graph) -> None:
    graph.results.clear()
    # At least 60 frames at 30 Hz, and on until 3 results came back (fewer per second on a loaded machine).
    sent = publish_paced_until(_publisher(graph, frame_rgb(1), "stamp"), 30.0,
                               lambda: len(graph.results.snapshot()) >= 3, min_count=60, timeout=WAIT)
    # The last frame is normally processed (it is the newest); bounded, in case best effort lost it.
    graph.results.wait_until(lambda ms: any(result(m)["frame_id"] == sent[-1][2] for m in ms), 10.0)
    got = [result_key(result(m)) for m in graph.results.snapshot()]
    assert len(got) >= 3, f"only {len(got)} results for {len(sent)} frames"
    unknown = [k for k in got if k not in set(sent)]
    assert not unknown, f"results for frames never published: {unknown[:3]}"
    assert len(set(got)) == len(got), "a frame produced two results"
    first = result(graph.results.snapshot()[0])
    assert first["camera"] == "" and first["weights"] == "random" and len(first["top_k"]) == 5
    assert all({"index", "name", "prob"} <= set(p) for p in first["top_k"])


def test_the_start_up_level_profile_is_latched_one_median_per_level(graph: Graph) -> None:
    """``dynofa/level_profile_ms`` reaches a subscriber that joins after start-up (a manager restarted on a
    running robot): one positive value per level of the tiny family, the larger level slower (its 224 px
    frames and deeper blocks cost 1.5x level 0 on the Xavier GPU, more on a CPU), and said in the log."""
    from std_msgs.msg import Float64MultiArray

    _, latched = _qos()
    late = graph.probe.collect("dynofa/level_profile_ms", Float64MultiArray, latched)
    assert late.wait_for(1, WAIT), graph.node.output()
    values = list(late.snapshot()[-1].data)
    assert len(values) == 2 and all(v > 0 for v in values) and values[1] > values[0], values
    assert "level profile (20 frames per level" in graph.node.output()


def test_subnet_cmd_changes_active_level_within_one_processed_frame(graph: Graph) -> None:
    _set_level(graph, 0)
    _good_frame_processed(graph, "warm0")
    # Exact: with no frame in flight, the very next processed frame runs the commanded level.
    graph.levels.clear()
    _set_level(graph, 1)
    res = _good_frame_processed(graph, "after_cmd_1")
    assert res["level"] == 1
    assert graph.levels.wait_until(lambda ms: ms and ms[-1].data == 1, WAIT)
    # Under a 30 Hz stream: every frame stamped after the node logged the command runs the new level. The node's
    # log time and the frame stamps are the same (system) clock, so this holds however late the command or the
    # results travel on a loaded machine (a count of results after the command was sent would not).
    import threading

    from std_msgs.msg import UInt8

    graph.results.clear()
    stop = threading.Event()
    pub_thread = threading.Thread(target=publish_paced_until, daemon=True,
                                  args=(_publisher(graph, frame_rgb(2), "sw"), 30.0, stop.is_set),
                                  kwargs={"timeout": 3 * WAIT})
    pub_thread.start()
    try:
        assert graph.results.wait_for(3, WAIT)
        pattern = re.compile(r"\[(\d+\.\d+)\] \[[^\]]*\]: level command 0: takes effect")
        logged_before = len(pattern.findall(graph.node.output()))
        graph.cmd.publish(UInt8(data=0))
        deadline = time.monotonic() + WAIT
        while len(pattern.findall(graph.node.output())) <= logged_before and time.monotonic() < deadline:
            time.sleep(0.05)
        times = pattern.findall(graph.node.output())
        assert len(times) > logged_before, graph.node.output()[-2000:]
        applied_at = float(times[logged_before])
        assert graph.results.wait_until(lambda ms: any(_stamp_s(result(m)) > applied_at for m in ms), WAIT)
        assert graph.levels.wait_until(lambda ms: ms and ms[-1].data == 0, WAIT)
    finally:
        stop.set()
        pub_thread.join(WAIT)
    got = [result(m) for m in graph.results.snapshot()]
    later = [r["level"] for r in got if _stamp_s(r) > applied_at]
    assert later and all(lv == 0 for lv in later), f"frames sent after the command ran levels {later}"
    levels = [r["level"] for r in got]
    assert all(lv == 0 for lv in levels[levels.index(0):]), f"level went back after the switch: {levels}"


def test_same_frame_and_level_give_the_same_classification(graph: Graph) -> None:
    _set_level(graph, 1)
    a = _good_frame_processed(graph, "det_a", seed=11)
    b = _good_frame_processed(graph, "det_b", seed=11)
    other = _good_frame_processed(graph, "det_c", seed=12)
    assert a["level"] == b["level"] == 1
    assert a["top_k"] == b["top_k"]
    assert other["top_k"] != a["top_k"], "a different frame gave the same output: the comparison proves nothing"


# ---------------------------------------------------------------------- no backlog
def test_result_age_stays_bounded_with_input_faster_than_inference(graph: Graph) -> None:
    _set_level(graph, 1)  # largest level
    graph.latency.clear()
    for i in range(3):
        _good_frame_processed(graph, f"age_warm{i}")
    # 60 Hz, or faster on a machine where the largest level keeps up with 60 Hz: input must outrun inference.
    warm_ms = float(np.median([m.data for m in graph.latency.snapshot()]))
    hz = min(500.0, max(60.0, 2.5 * 1000.0 / warm_ms))
    assert graph.diagnostics.wait_for(1, WAIT)
    before = diagnostic_values(graph.diagnostics.snapshot()[-1], "dynofa")
    graph.results.clear()
    graph.latency.clear()
    offset = ros_minus_monotonic(graph.probe)
    # At least 300 frames, and on until 15 results came back (fewer per second on a loaded machine).
    sent = publish_paced_until(_publisher(graph, frame_rgb(3), "age"), hz, lambda: len(graph.results.snapshot()) >= 15,
                               min_count=300, timeout=WAIT)
    last = sent[-1][2]
    graph.results.wait_until(lambda ms: any(result(m)["frame_id"] == last for m in ms), WAIT)
    msgs, stamps = graph.results.snapshot(), list(graph.results.stamps)
    ages = [(t + offset) - (r["stamp"]["sec"] + r["stamp"]["nanosec"] / 1e9)
            for r, t in zip(map(result, msgs), stamps, strict=False)]
    assert len(ages) >= 15, f"only {len(ages)} results for {len(sent)} frames"
    third = len(ages) // 3
    first, last_third = float(np.median(ages[:third])), float(np.median(ages[-third:]))
    model_ms = float(np.median([m.data for m in graph.latency.snapshot()]))
    # A queue would make ages grow linearly (by ~1 s per second here); a newest-frame slot keeps them flat.
    assert last_third <= 2 * first + 4 * model_ms / 1e3, (first, last_third, model_ms)
    # Dropped frames are counted, not queued.
    assert graph.diagnostics.wait_until(
        lambda ms: int(diagnostic_values(ms[-1], "dynofa").get("processed_frames", 0))
        >= int(before["processed_frames"]) + len(msgs), WAIT)
    after = diagnostic_values(graph.diagnostics.snapshot()[-1], "dynofa")
    received = int(after["image_raw.received"]) - int(before["image_raw.received"])
    processed = int(after["image_raw.processed"]) - int(before["image_raw.processed"])
    dropped = int(after["dropped_frames"]) - int(before["dropped_frames"])
    assert processed < received, "inference kept up with 60 Hz: the premise of this test does not hold"
    # at the moment of the snapshot at most two received frames are neither processed nor dropped: one being
    # inferred by the worker, one waiting in the slot
    assert dropped >= received - processed - 2, (received, processed, dropped)
    for stage in ("conversion", "preprocess", "inference", "postprocess", "publish", "age", "wait", "transport"):
        assert f"{stage}_ms_p50" in after and f"{stage}_ms_p90" in after


# ---------------------------------------------------------------------- bad input
def _bad_then_good(g: Graph, publish_bad: Any, warning: str, name: str) -> None:
    deadline = time.monotonic() + WAIT
    seen = False
    while not seen and time.monotonic() < deadline:
        publish_bad()
        seen = g.node.wait_for_output(warning, 3.0)
    assert seen, f"no warning {warning!r} for {name}:\n{g.node.output()[-3000:]}"
    assert g.node.alive()
    _good_frame_processed(g, f"after_{name}")
    assert g.node.alive()


BAD_IMAGES = {
    "empty": (dict(height=0, width=0, step=0, data=b""), "empty image"),
    "step_too_small": (dict(height=4, width=4, step=11, data=bytes(48)), "step 11 < width*channels"),
    "data_too_short": (dict(height=4, width=4, step=12, data=bytes(47)), "data too short: 47 bytes"),
    "unknown_encoding": (dict(height=4, width=4, step=12, data=bytes(48), encoding="weird9"),
                         "unknown encoding 'weird9'"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_malformed_image_warns_and_node_keeps_running(graph: Graph, case: str) -> None:
    fields, warning = BAD_IMAGES[case]
    fields = {"encoding": "rgb8", "is_bigendian": 0, **fields}
    encoding = fields.pop("encoding")
    _bad_then_good(graph, lambda: graph.images.publish(
        image_msg(graph.probe, None, f"bad_{case}", encoding=encoding, **fields)),
                   warning, case)


def test_one_pixel_image_is_classified(graph: Graph) -> None:
    msg = image_msg(graph.probe, frame_rgb(5, 1, 1), "one_pixel")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        graph.images.publish(msg)
        if graph.results.wait_until(lambda ms: any(result(m)["frame_id"] == "one_pixel" for m in ms), 3.0):
            break
    assert any(result(m)["frame_id"] == "one_pixel" for m in graph.results.snapshot()), graph.node.output()[-2000:]
    _good_frame_processed(graph, "after_one_pixel")


def test_huge_image_is_refused_and_node_keeps_running(graph: Graph) -> None:
    """8000x8000: a real PNG of that size (DDS cannot carry a 64 MB raw frame best-effort: message lost), and a
    raw Image header of that size; both refused by max_image_pixels before any pixel is decoded."""
    from sensor_msgs.msg import CompressedImage

    _, enc = cv2.imencode(".png", np.zeros((8000, 8000), np.uint8))
    png = CompressedImage(format="png", data=enc.tobytes())
    png.header.frame_id = "huge_png"
    _bad_then_good(graph, lambda: graph.compressed.publish(png), "compressed frame dropped: image too large: 8000x8000",
                   "huge_png")
    raw = image_msg(graph.probe, None, "huge_raw", height=8000, width=8000, step=8000, encoding="mono8",
                    is_bigendian=0, data=bytes(8000))
    _bad_then_good(graph, lambda: graph.images.publish(raw), "raw frame dropped: image too large: 8000x8000",
                   "huge_raw")


def test_corrupted_jpeg_warns_and_node_keeps_running(graph: Graph) -> None:
    from sensor_msgs.msg import CompressedImage

    _, enc = cv2.imencode(".jpg", frame_rgb(6))
    data = bytearray(enc.tobytes())
    data[2:] = bytes(len(data) - 2)
    msg = CompressedImage(format="jpeg", data=bytes(data))
    msg.header.frame_id = "corrupted"
    _bad_then_good(graph, lambda: graph.compressed.publish(msg), "dimensions unreadable, not decoded", "jpeg")


def test_good_jpeg_is_classified(graph: Graph) -> None:
    from sensor_msgs.msg import CompressedImage

    _, enc = cv2.imencode(".jpg", frame_rgb(6))
    msg = CompressedImage(format="jpeg", data=enc.tobytes())
    msg.header.frame_id = "good_jpeg"
    msg.header.stamp = graph.probe.node.get_clock().now().to_msg()
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        graph.compressed.publish(msg)
        if graph.results.wait_until(lambda ms: any(result(m)["frame_id"] == "good_jpeg" for m in ms), 3.0):
            return
    raise AssertionError(graph.node.output()[-2000:])


def test_unknown_level_is_refused_and_level_kept(graph: Graph) -> None:
    _set_level(graph, 1)
    _good_frame_processed(graph, "before_255")
    from std_msgs.msg import UInt8

    graph.cmd.publish(UInt8(data=255))
    assert graph.node.wait_for_output("level command 255 ignored: not in the family (allowed 0..1)", WAIT)
    res = _good_frame_processed(graph, "after_255")
    assert res["level"] == 1 and graph.node.alive()


def test_incompatible_command_publisher_gives_exactly_one_warning(graph: Graph) -> None:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import UInt8

    text = "incompatible QoS on '/dynofa/subnet_cmd'"
    assert graph.node.output().count(text) == 0
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub = graph.probe.publisher("dynofa/subnet_cmd", UInt8, best_effort)
    try:
        assert graph.node.wait_for_output(text, WAIT), graph.node.output()[-2000:]
        pub.publish(UInt8(data=0))
        _good_frame_processed(graph, "after_qos")  # a full round trip after the event: no second warning
        log = graph.node.output()
        line = next(ln for ln in log.splitlines() if text in ln)
        assert "RELIABILITY" in line and "publish with reliability RELIABLE" in line, line
        assert log.count(text) == 1, log[-3000:]
    finally:
        graph.probe.node.destroy_publisher(pub)


# ---------------------------------------------------------------------- before the model is ready
def test_level_command_before_ready_is_held_then_applied(isolated_network: None, domain_id: int,
                                                         tmp_path: Any) -> None:
    import contextlib

    from std_msgs.msg import UInt8

    # All six levels exported into an empty ONNX cache: preparing them takes seconds, time for both commands to
    # arrive first. With the shared cache warm from earlier tests the model was ready in 0.5 s, and under load the
    # second command could come after it.
    env = ros_env(domain_id, {"DYNOFA_CACHE_DIR": str(tmp_path / "onnx")})
    with contextlib.ExitStack() as stack:
        g = _open_graph(stack, NodeProcess("perception_node", node_args(SIX_LEVELS), env=env), domain_id)
        assert g.probe.wait_for_subscribers(g.cmd, timeout=WAIT)
        g.cmd.publish(UInt8(data=255))  # depth 1: wait for it before the next command replaces it
        assert g.node.wait_for_output("level command 255 ignored: not in the family (allowed 0..5)", WAIT), \
            g.node.output()
        g.cmd.publish(UInt8(data=4))
        assert g.node.wait_for_output("level command 4 held: model still loading", WAIT), g.node.output()
        _wait_ready(g, COLD_EXPORT_WAIT)
        assert g.levels.snapshot()[0].data == 4, "the first level announced is not the held one"
        assert _good_frame_processed(g, "first")["level"] == 4
        assert g.node.alive()
        assert g.node.stop() == 0, "SIGINT must be a normal exit (STYLE.md #13)"
        assert "Traceback" not in g.node.output(), g.node.output()[-2000:]


def test_bad_family_file_fails_fast_naming_the_parameter(isolated_network: None, domain_id: int,
                                                        tmp_path: Any) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format_version": 1, "name": "x"', encoding="utf-8")
    with NodeProcess("perception_node", node_args(bad), env=ros_env(domain_id)) as node:
        assert node.proc is not None
        node.proc.wait(WAIT)
        assert node.returncode == 1
        assert "parameter family_file" in node.output() and "not valid JSON" in node.output()
    with NodeProcess("perception_node", node_args(tiny_family(tmp_path / "t.json"), "-p", "device:=tpu"),
                     env=ros_env(domain_id)) as node:
        node.proc.wait(WAIT)
        assert node.returncode == 1 and "parameter device: 'tpu'; allowed" in node.output()


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() "
                    "is False on this machine; the fp16/CUDA path runs only where a GPU exists")
def test_cuda_fp16_node_classifies(isolated_network: None, domain_id: int, tmp_path: Any) -> None:
    import contextlib

    family = tiny_family(tmp_path / "tiny.json")
    with contextlib.ExitStack() as stack:
        node = NodeProcess("perception_node", node_args(family, "-p", "device:=cuda", "-p", "fp16:=true"),
                           env=ros_env(domain_id))
        g = _open_graph(stack, node, domain_id)
        _wait_ready(g)
        res = _good_frame_processed(g, "cuda")
        assert res["level"] == 0
        assert g.diagnostics.wait_until(
            lambda ms: bool(ms) and "fp16" in diagnostic_values(ms[-1], "dynofa").get("backend", ""), WAIT)
