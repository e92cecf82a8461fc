"""The perception node's pure parts, without rclpy: slots, fairness, stage timing, config checks, the worker."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from devtools.processes import poll_until
from dynofa_ros.perception.frame_slots import FrameSlots
from dynofa_ros.perception.image_codec import encode_image
from dynofa_ros.perception.pipeline import (
    PerceptionConfig,
    Pipeline,
    PipelineModel,
    check_cameras,
    classification_json,
    load_family,
    resolve_family_path,
)
from dynofa_ros.perception.stage_timing import STAGES, StageTiming
from dynofa_ros.problems import ConfigError, KeyedThrottle, incompatible_qos_message
from dynofa_ros.topics import camera_topic

REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_slot_keeps_only_the_newest_frame_and_counts_drops() -> None:
    slots = FrameSlots(["a"])
    assert slots.put(0, "f1") is False
    assert slots.put(0, "f2") is True
    assert slots.put(0, "f3") is True
    frame = slots.take(threading.Event(), timeout=0.01)
    assert frame is not None and frame.payload == "f3"
    assert slots.take(threading.Event(), timeout=0.01) is None
    st = slots.stats()[0]
    assert (st.received, st.dropped) == (3, 2)


def test_stream_waiting_longest_is_served_first_so_a_slow_stream_is_never_starved() -> None:
    clock = FakeClock()
    slots = FrameSlots(["fast", "slow"], clock=clock)
    stop = threading.Event()
    served = []
    for tick in range(60):
        clock.t = tick / 60
        slots.put(0, f"fast{tick}")          # fast stream: a frame every tick
        if tick % 6 == 0:
            slots.put(1, f"slow{tick}")      # slow stream: every 6th tick
        if tick % 2 == 0:                    # the worker takes one frame every other tick
            frame = slots.take(stop, timeout=0)
            served.append(frame.payload)
    slow_sent = 10
    assert sum(p.startswith("slow") for p in served) == slow_sent
    # The fast stream still gets the rest, always its newest frame.
    assert all(p == f"fast{int(p[4:])}" for p in served if p.startswith("fast"))


def test_take_returns_on_stop() -> None:
    slots = FrameSlots(["a"])
    stop = threading.Event()
    stop.set()
    assert slots.take(stop, timeout=5.0) is None


def test_stage_timing_percentiles_and_age_is_the_sum() -> None:
    timing = StageTiming(window=100)
    for i in range(100):
        timing.add({s: float(i) for s in STAGES})
    table = timing.percentiles()
    assert set(table) == {*STAGES, "age"}
    assert table["inference"][0] == pytest.approx(49.5)
    assert table["age"][0] == pytest.approx(49.5 * len(STAGES))
    assert "p90" in timing.table().splitlines()[0]


def test_keyed_throttle_logs_first_then_suppresses_with_count() -> None:
    clock = FakeClock()
    throttle = KeyedThrottle(period_s=10, clock=clock)
    assert throttle.check("a") == 0
    assert throttle.check("a") is None
    assert throttle.check("b") == 0
    clock.t = 11
    assert throttle.check("a") == 1


def test_config_checks_name_the_parameter() -> None:
    with pytest.raises(ConfigError, match="parameter device: 'tpu'; allowed"):
        PerceptionConfig(device="tpu").check()
    with pytest.raises(ConfigError, match="parameter backend"):
        PerceptionConfig(backend="tensorflow").check()
    with pytest.raises(ConfigError, match="parameter fp16"):
        PerceptionConfig(device="cpu", fp16=True).check()
    with pytest.raises(ConfigError, match="duplicate"):
        check_cameras(["a", "a"])
    with pytest.raises(ConfigError, match="not a valid name"):
        check_cameras(["front/left"])
    assert camera_topic("", "image_raw") == "image_raw"
    assert camera_topic("rear", "dynofa/classification") == "rear/dynofa/classification"


def test_family_path_resolution_and_initial_level(tmp_path: Path) -> None:
    rel = "config/families/xavier_nx_six_levels.json"
    assert resolve_family_path(rel, None, REPO) == REPO / rel
    assert resolve_family_path(rel, str(REPO), "/nonexistent") == REPO / rel
    with pytest.raises(ConfigError, match=r"parameter family_file: 'nope.json' not found"):
        resolve_family_path("nope.json", str(tmp_path), tmp_path)
    with pytest.raises(ConfigError, match=r"parameter initial_level: 9 .* allowed: 0\.\.5"):
        load_family(PerceptionConfig(family_file=str(REPO / rel), initial_level=9), None)


def test_classification_json_carries_stamp_frame_and_topk() -> None:
    res = SimpleNamespace(level=2, total_ms=3.5,
                          predictions=[SimpleNamespace(index=7, name="cock", probability=0.5)])
    out = json.loads(classification_json(12, 34, "cam", "front", res, True))
    assert out == {"stamp": {"sec": 12, "nanosec": 34}, "frame_id": "cam", "camera": "front", "level": 2,
                   "weights": "random", "model_ms": 3.5, "top_k": [{"index": 7, "name": "cock", "prob": 0.5}]}
    assert "publish with reliability RELIABLE" in incompatible_qos_message("/x", "RELIABILITY", "reliable")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The real DynamicOFA on two levels (smallest and largest of the Xavier NX six), one thread."""
    from dynofa_ros.inference import family as fm
    from dynofa_ros.inference.model import DynamicOFA

    raw = json.loads((REPO / "config/families/xavier_nx_six_levels.json").read_text(encoding="utf-8"))
    raw["levels"] = [raw["levels"][0], raw["levels"][5]]
    path = tmp_path_factory.mktemp("fam") / "tiny.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    return DynamicOFA(fm.load(path), threads=1)


def _until(predicate: Any, timeout: float = 30.0) -> bool:
    return poll_until(predicate, timeout, 0.01)


class Sink:
    def __init__(self) -> None:
        self.results: list[tuple[int, dict]] = []
        self.levels: list[int] = []
        self.done = threading.Condition()

    def publish_result(self, stream: int, classification: str, model_ms: float, level: int,
                       stamp_s: float) -> None:
        with self.done:
            self.results.append((stream, json.loads(classification)))
            self.done.notify_all()

    def publish_level(self, level: int) -> None:
        self.levels.append(level)


def _image(frame_id: str, **override: Any) -> Any:
    fields = encode_image(np.zeros((4, 6, 3), np.uint8), "bgr8")
    fields.update(override)
    return SimpleNamespace(header=SimpleNamespace(frame_id=frame_id, stamp=SimpleNamespace(sec=1, nanosec=2)),
                           **fields)


def test_dynamic_ofa_has_every_member_of_the_pipeline_model_contract(tiny_model: Any) -> None:
    """PipelineModel is checked by no type checker at run time: the real model must have what it names."""
    members = {n for n in vars(PipelineModel) if not n.startswith("_")} | set(PipelineModel.__annotations__)
    assert {"infer", "switch", "level", "num_levels", "random_weights", "top_k"} <= members
    missing = [n for n in sorted(members) if not hasattr(tiny_model, n)]
    assert missing == []


def test_pipeline_holds_level_until_ready_and_survives_bad_frames(tiny_model: Any) -> None:
    logs: list[tuple[str, str]] = []
    tiny_model.switch(0)
    pipeline = Pipeline(["", "rear"], 2, logger=lambda sev, msg: logs.append((sev, msg)))
    assert pipeline.request_level(7)[0] is False
    ok, text = pipeline.request_level(1)
    assert ok and "held" in text
    sink = Sink()
    pipeline.set_sink(sink)
    pipeline.start(lambda: tiny_model)
    try:
        pipeline.submit(0, _image("bad", encoding="weird"), 0)
        assert _until(lambda: pipeline.slots.stats()[0].rejected == 1)
        pipeline.submit(1, _image("good"), 0)
        assert _until(lambda: sink.results)
    finally:
        assert pipeline.stop()
    assert sink.levels[0] == 1, "held level must be announced (and applied) before the first frame"
    assert [(s, r["frame_id"], r["level"]) for s, r in sink.results] == [(1, "good", 1)]
    assert any("unknown encoding 'weird'" in msg for sev, msg in logs if sev == "warning")
    _, _, values = pipeline.diagnostics()
    keys = dict(values)
    assert keys["rear/image_raw.processed"] == "1" and keys["image_raw.rejected"] == "1"


def test_invalid_level_commands_share_one_throttled_warning() -> None:
    """200 bad commands in a burst: one warning (the README promises one throttled warning), valid ones still work."""
    pipeline = Pipeline([""], 3)
    texts = [pipeline.request_level(200 + i % 50) for i in range(200)]
    assert all(ok is False for ok, _ in texts)
    said = [text for _, text in texts if text]
    assert len(said) == 1 and "level command 200 ignored" in said[0] and "allowed 0..2" in said[0], said
    ok, text = pipeline.request_level(2)
    assert ok and text, "a valid command is never throttled"


def test_untrusted_strings_in_log_lines_are_clipped() -> None:
    from dynofa_ros.perception.pipeline import MAX_ECHO, clip_untrusted

    huge = "x" * 100_000
    line = clip_untrusted(f"raw frame dropped: unknown encoding {huge!r}; supported: rgb8")
    assert line == f"raw frame dropped: unknown encoding '{'x' * MAX_ECHO}'…(100000 chars); supported: rgb8"
    assert clip_untrusted("encoding 'rgb8'") == "encoding 'rgb8'"
    assert len(clip_untrusted("y" * 100_000)) < 1100  # an unquoted echo is capped as a whole


def _stamped(frame_id: str, sec: int, nanosec: int = 0) -> Any:
    msg = _image(frame_id)
    msg.header.stamp = SimpleNamespace(sec=sec, nanosec=nanosec)
    return msg


def test_zero_and_future_stamps_warn_once_and_stay_out_of_the_age_statistics(tiny_model: Any) -> None:
    logs: list[tuple[str, str]] = []
    now_ns = 1_700_000_000 * 10**9
    pipeline = Pipeline([""], 2, now_ns=lambda: now_ns, logger=lambda sev, msg: logs.append((sev, msg)))
    sink = Sink()
    pipeline.set_sink(sink)
    pipeline.start(lambda: tiny_model)
    try:
        frames = [_stamped("zero0", 0), _stamped("zero1", 0), _stamped("ahead0", 1_700_000_005),
                  _stamped("ahead1", 1_700_000_009)]
        for i, msg in enumerate(frames):  # one at a time: the newest-frame slot would drop a waiting one
            pipeline.submit(0, msg, now_ns)
            assert _until(lambda i=i: pipeline.slots.stats()[0].processed == i + 1)
        assert pipeline.slots.stats()[0].age_ms_p50 is None, "zero/future stamps must not enter the age statistics"
        pipeline.submit(0, _stamped("good", 1_699_999_999, 500_000_000), now_ns)
        assert _until(lambda: pipeline.slots.stats()[0].processed == 5)
    finally:
        assert pipeline.stop()
    assert [r["frame_id"] for _, r in sink.results] == ["zero0", "zero1", "ahead0", "ahead1", "good"]
    warnings = [msg for sev, msg in logs if sev == "warning"]
    assert sum("zero stamp" in m for m in warnings) == 1, warnings
    ahead = [m for m in warnings if "ahead of this node's clock" in m]
    assert len(ahead) == 1 and "5000.0 ms in the future" in ahead[0], warnings
    assert pipeline.slots.stats()[0].age_ms_p50 == pytest.approx(500.0)


def test_level_profile_times_every_level_on_the_real_model_and_leaves_the_running_level(tiny_model: Any) -> None:
    """``perception/level_profile.py`` on the real DynamicOFA: one median per level, the larger level slower (the
    Xavier NX family's level 5 takes 224 px frames, 1.6x level 0's pixels, through deeper and wider blocks: 1.5x
    its latency on the Xavier GPU, more on a CPU; the rounds interleave the levels, so load on a shared machine
    falls on both alike), and the model back at the level it ran."""
    from dynofa_ros.perception import level_profile

    tiny_model.switch(1)
    ms = level_profile.measure(tiny_model, runs=8)
    assert tiny_model.level == 1
    assert len(ms) == 2 and all(v > 0 for v in ms)
    assert ms[1] > ms[0], ms
    # what the manager accepts of it (the message check lives beside the stats message's, nodes/inference_stats)
    from std_msgs.msg import Float64MultiArray

    from dynofa_ros.nodes.inference_stats import level_profile_from_msg

    assert level_profile_from_msg(Float64MultiArray(data=ms), 2) == ms
    with pytest.raises(ValueError, match="3 values for a family of 2 levels"):
        level_profile_from_msg(Float64MultiArray(data=[1.0, 2.0, 3.0]), 2)
    with pytest.raises(ValueError, match="level 1: nan ms"):
        level_profile_from_msg(Float64MultiArray(data=[1.0, float("nan")]), 2)
    assert level_profile.describe([10.0, 30.0], [5.0, None]) == "L0 10.0 ms (2.00x), L1 30.0 ms"


def test_a_frame_slower_than_the_overrun_fallbacks_limit_switches_the_level_before_the_next_frame_once(
        tiny_model: Any) -> None:
    """The manager's standing instruction (``set_overrun_fallback``): a frame at ``from_level`` slower than the
    limit switches to ``to_level`` at once, announced on the level topic before the next frame; used once. A
    frame of another level, or one within the limit, changes nothing. The real model (a limit of 0.001 ms: every
    frame of level 1 is over it)."""
    logs: list[tuple[str, str]] = []
    tiny_model.switch(1)
    pipeline = Pipeline([""], 2, logger=lambda sev, msg: logs.append((sev, msg)))
    sink = Sink()
    pipeline.set_sink(sink)
    pipeline.start(lambda: tiny_model)

    def run_frame(name: str) -> int:
        n = len(sink.results)
        pipeline.submit(0, _image(name), 0)
        assert _until(lambda: len(sink.results) > n)
        return sink.results[-1][1]["level"]

    try:
        pipeline.set_overrun_fallback((1, 60000.0, 0))  # no frame takes a minute
        assert run_frame("within") == 1 and tiny_model.level == 1
        pipeline.set_overrun_fallback((0, 0.001, 0))     # ... and this one covers another level (not a move)
        assert run_frame("other level") == 1 and tiny_model.level == 1
        pipeline.set_overrun_fallback((1, 0.001, 0))
        assert run_frame("late") == 1
        assert tiny_model.level == 0 and sink.levels[-1] == 0, "switched and announced before the next frame"
        assert run_frame("next") == 0
        assert pipeline.request_level(1)[0]
        assert run_frame("late again") == 1 and tiny_model.level == 1, "used once: the next late frame stays"
    finally:
        assert pipeline.stop()
    said = [msg for sev, msg in logs if "overrun fallback" in msg]
    assert len(said) == 1 and "level 0 from the next frame on" in said[0], said
    assert dict(pipeline.diagnostics()[2])["overrun_fallbacks"] == "1"
