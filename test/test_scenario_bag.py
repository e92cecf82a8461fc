"""Scenario bags: written by make_scenario_bag, read back with rosbags, every topic/type/count intact.

No ROS needed: rosbags writes and reads rosbag2 sqlite3 and mcap bags in pure Python. Damaged bags
(truncated storage file, garbage, missing metadata) must give one clear error, not a traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dynofa_ros.replay import bagio
from dynofa_ros.replay import scenario as scn
from dynofa_ros.tools import make_scenario_bag as msb

REPO = Path(__file__).resolve().parents[1]

SMALL = {
    "name": "small",
    "duration_s": 3,
    "camera": {"fps": 4, "width": 32, "height": 24, "encoding": "bgr8"},
    "battery": {"rate_hz": 2, "start_percent": 90, "end_percent": 80},
    "thermal": {"rate_hz": 1, "cpu": [[0, 40], [3, 70]], "gpu": 50},
    "load": {"rate_hz": 2, "cpu": [[0, 10], [1.5, 90]], "gpu": [[0, 0]]},
    "targets": {"latency_ms": [[0, 50], [2, 25]], "min_accuracy": [[0, 70]]},
}


@pytest.fixture(scope="module")
def small() -> scn.Scenario:
    return scn.scenario_from_dict(SMALL)


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory, small: scn.Scenario) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bags")
    paths = msb.output_paths(out / "small", "both")
    for storage, path in paths.items():
        msb.write_bag(small, path, storage)
    return paths


# ------------------------------------------------------------------------------------- pure model
def test_step_and_ramp_values() -> None:
    pts = ((0.0, 10.0), (5.0, 90.0))
    assert scn.step_value(pts, 4.99) == 10.0
    assert scn.step_value(pts, 5.0) == 90.0
    assert scn.ramp_value(pts, 2.5) == pytest.approx(50.0)
    assert scn.ramp_value(pts, 99) == 90.0


def test_expected_counts(small: scn.Scenario) -> None:
    counts = scn.expected_counts(small)
    assert counts == {"image_raw": 12, "battery_state": 6, "thermal/cpu": 3, "thermal/gpu": 3, "load/cpu": 6,
                      "load/gpu": 6, "dynofa/target_latency_ms": 2, "dynofa/min_accuracy": 1}


@pytest.mark.parametrize("patch, needle", [
    ({"duration_s": None}, "duration_s"),
    ({"camera": {"encoding": "yuv9"}}, "camera.encoding"),
    ({"load": {"cpu": [[0, 150]]}}, "load.cpu[0]"),
    ({"targets": {"latency_ms": [[0, -1]]}}, "targets.latency_ms[0]"),
    ({"targets": {"latency_ms": [[2, 5], [1, 6]]}}, "times must not decrease"),
    ({"thermal": {"cpu": [[0, "hot"]]}}, "thermal.cpu[0][1]"),
    ({"bogus": 1}, "unknown keys ['bogus']"),
])
def test_invalid_scenarios_name_the_key(patch: dict, needle: str) -> None:
    data = {**SMALL, **patch}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(scn.ScenarioError, match=None) as info:
        scn.scenario_from_dict(data, "bad.yaml")
    assert needle in str(info.value) and "bad.yaml" in str(info.value)


def test_shipped_scenarios_are_valid() -> None:
    files = sorted((REPO / "config" / "scenarios").glob("*.yaml"))
    assert {p.name for p in files} >= {"demo.yaml", "ci_short.yaml"}
    for f in files:
        sc = scn.load_scenario(f)
        assert sc.camera is not None and sc.duration_s > 0


# ------------------------------------------------------------------------------------- bags
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_reads_back_intact(bags: dict[str, Path], small: scn.Scenario, storage: str) -> None:
    path = bags[storage]
    info = bagio.bag_info(path)
    expected = scn.expected_counts(small)
    assert {t: v["count"] for t, v in info["topics"].items()} == expected
    types = {t: v["type"] for t, v in info["topics"].items()}
    assert types == {small.topic(k): scn.TOPIC_TYPES[k] for k in small.kinds()}

    got: dict[str, list] = {}
    for topic, t_ns, msg in bagio.read_messages(path):
        got.setdefault(topic, []).append((t_ns, msg))
    assert {t: len(v) for t, v in got.items()} == expected

    frames = got["image_raw"]
    assert [t for t, _ in frames] == scn.frame_times_ns(small)
    for i, (t_ns, img) in enumerate(frames):
        assert bagio.stamp_ns(img) == t_ns  # header stamp == bag time: replayed results can be matched
        assert (img.width, img.height, img.encoding, img.step) == (32, 24, "bgr8", 96)
        assert np.array_equal(np.asarray(img.data).reshape(24, 32, 3), scn.synthetic_frame(i, 32, 24, "bgr8"))
    lat = [m.data for _, m in got["dynofa/target_latency_ms"]]
    assert lat == [50.0, 25.0]
    loads = [round(m.data) for _, m in got["load/cpu"]]
    assert loads == [10, 10, 10, 90, 90, 90]
    pct = [m.percentage for _, m in got["battery_state"]]
    assert pct[0] == pytest.approx(0.90) and pct[-1] < pct[0]
    temps = [m.temperature for _, m in got["thermal/cpu"]]
    assert temps == pytest.approx([40.0, 50.0, 60.0])


def test_both_storages_hold_identical_messages(bags: dict[str, Path]) -> None:
    a = [(m.topic, m.t_ns, m.rawdata) for m in bagio.read_raw(bags["sqlite3"])]
    b = [(m.topic, m.t_ns, m.rawdata) for m in bagio.read_raw(bags["mcap"])]
    assert a == b and len(a) == 39


def test_frames_from_image_folder(tmp_path: Path) -> None:
    import cv2

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        img = np.full((50, 70, 3), 40 * (i + 1), np.uint8)
        cv2.imwrite(str(folder / f"f{i}.png"), img)
    sc = scn.scenario_from_dict({"duration_s": 2, "camera": {"fps": 4, "width": 16, "height": 8}})
    msb.write_bag(sc, tmp_path / "b", "mcap", source=str(folder))
    values = [int(np.asarray(m.data)[0]) for t, _, m in bagio.read_messages(tmp_path / "b") if t == "image_raw"]
    assert values == [40, 80, 120, 40, 80, 120, 40, 80]  # folder order, looped


def test_cli_writes_both_storages(tmp_path: Path) -> None:
    rc = msb.main([str(REPO / "config/scenarios/ci_short.yaml"), "-o", str(tmp_path / "ci"), "--storage", "both"])
    assert rc == 0
    for s in ("sqlite3", "mcap"):
        info = bagio.bag_info(tmp_path / f"ci_{s}")
        assert info["topics"]["image_raw"]["count"] == 60
    assert msb.main([str(REPO / "config/scenarios/ci_short.yaml"), "-o", str(tmp_path / "ci_mcap"),
                     "--storage", "mcap"]) == 2  # exists, no --overwrite


# ------------------------------------------------------------------------------------- damaged bags
def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("damage", ["truncate", "garbage", "no_metadata"])
def test_damaged_bag_gives_one_clear_error(bags: dict[str, Path], tmp_path: Path, storage: str, damage: str) -> None:
    bag = _copy(bags[storage], tmp_path / "damaged")
    (data,) = bagio.find_bag_file(bag)
    raw = data.read_bytes()
    if damage == "truncate":
        data.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        data.write_bytes(b"\x00garbage" * 64)
    else:
        (bag / "metadata.yaml").unlink()
    with pytest.raises(bagio.BagError) as info:
        bagio.bag_info(bag)
        list(bagio.read_raw(bag))
    msg = str(info.value)
    assert str(bag) in msg and "\n" not in msg
    assert any(w in msg for w in ("truncated", "corrupt", "not a readable")), msg


def test_report_cli_prints_one_error_line_for_corrupt_bag(bags: dict[str, Path], tmp_path: Path) -> None:
    bag = _copy(bags["mcap"], tmp_path / "cut")
    (data,) = bagio.find_bag_file(bag)
    data.write_bytes(data.read_bytes()[:3000])
    for tool in ("report", "replay"):
        extra = ["--dry-run"] if tool == "replay" else []
        proc = subprocess.run([sys.executable, "-m", f"dynofa_ros.tools.{tool}", str(bag), *extra],
                              capture_output=True, text=True, timeout=120, cwd=REPO)
        assert proc.returncode == 2, (tool, proc.stdout, proc.stderr)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "error" in lines[0] and str(bag) in lines[0], (tool, proc.stderr)
