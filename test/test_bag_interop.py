"""Bags other rosbag2 releases write, and bags Humble must be able to read.

The bags under test/bags/ are made by test/bags/make_bags.py (the project's writer, then hand-edited
to each rosbag2 release's layout); they stand for what ``ros2 bag record`` writes on Humble (metadata
4/5), Jazzy (8) and Kilted (9), sqlite3 and mcap, split and compressed, with QoS text that differs
between metadata.yaml and the storage file (as in rosbag2's own talker test bag).

The Humble check applies the rules of Humble's ``rosbag2_storage/src/rosbag2_storage/metadata_io.cpp``
and ``rosbag2_transport/src/rosbag2_transport/qos.cpp`` to the metadata.yaml we write: the types each
field is converted to by yaml-cpp (a scalar where a string is expected, unsigned integers, ...),
then the QoS string parsed as the list of integer-enum profiles Humble's player reads.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from dynofa_ros.replay import bagio
from dynofa_ros.replay import scenario as scn
from dynofa_ros.tools import make_scenario_bag as msb

REPO = Path(__file__).resolve().parents[1]
BAGS = REPO / "test" / "bags"
PLAYABLE = sorted(p.name for p in BAGS.iterdir() if p.is_dir() and not p.name.startswith("only_unknown"))


def test_every_kind_of_bag_is_shipped() -> None:
    assert {"humble_v4_sqlite3", "humble_v5_sqlite3", "humble_v5_mcap", "jazzy_v8_mcap", "jazzy_v8_sqlite3",
            "kilted_v9_mcap", "kilted_v9_sqlite3", "split_v8_mcap", "split_v5_sqlite3",
            "compressed_file_v5_sqlite3", "compressed_message_v8_mcap", "unknown_types_v8_mcap"} <= set(PLAYABLE)
    for name in PLAYABLE:
        version = yaml.safe_load((BAGS / name / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["version"]
        assert f"_v{version}_" in name, (name, version)


@pytest.mark.parametrize("name", PLAYABLE)
def test_reader_opens_every_kind_matching_topics_by_name(name: str) -> None:
    bag = BAGS / name
    msgs = list(bagio.read_raw(bag))
    by_topic: dict[str, list[bagio.BagMessage]] = {}
    for m in msgs:
        by_topic.setdefault(m.topic, []).append(m)
    assert len(by_topic["image_raw"]) == 3 and len(by_topic["dynofa/target_latency_ms"]) == 1
    assert [m.t_ns for m in msgs] == sorted(m.t_ns for m in msgs)
    frames = [img for t, _, img in bagio.read_messages(bag, ["image_raw"])]
    for i, img in enumerate(frames):
        expect = ((np.arange(6 * 8 * 3, dtype=np.uint16) * 7 + 40 * i) % 256).astype(np.uint8)
        assert (img.width, img.height, img.encoding) == (8, 6, "rgb8")
        np.testing.assert_array_equal(np.asarray(img.data), expect)
    info = bagio.bag_info(bag)
    assert info["topics"]["image_raw"] == {"type": "sensor_msgs/msg/Image", "count": 3}
    if name.startswith("split"):
        assert info["files"] == 2


def test_metadata_and_storage_qos_really_differ_in_the_hand_edited_bags() -> None:
    """The case that made valid bags read as empty: rosbags' own pairing finds nothing here."""
    from rosbags.rosbag2 import Reader

    with Reader(BAGS / "humble_v5_mcap") as reader:
        assert sum(1 for _ in reader.messages()) == 0
    assert len(list(bagio.read_raw(BAGS / "humble_v5_mcap"))) == 4


# ------------------------------------------------------------------------- Humble's rules
def _uint(node: Any, what: str) -> int:
    assert isinstance(node, int) and not isinstance(node, bool) and node >= 0, f"{what}: {node!r} is not uint64"
    return node


def _string(node: Any, what: str) -> str:
    # yaml-cpp's as<std::string>() accepts any scalar and fails ("bad conversion") on a map or a list.
    assert node is not None and not isinstance(node, (dict, list)), f"{what}: {type(node).__name__} is not a scalar"
    return str(node)


def humble_reads(metadata_yaml: str) -> dict[str, Any]:
    """What Humble's MetadataIo::read_metadata and Rosbag2QoS decoding do with the file (AssertionError if not)."""
    info = yaml.safe_load(metadata_yaml)["rosbag2_bagfile_information"]
    version = info["version"]
    assert isinstance(version, int)
    _string(info["storage_identifier"], "storage_identifier")
    _uint(info["duration"]["nanoseconds"], "duration")
    _uint(info["starting_time"]["nanoseconds_since_epoch"], "starting_time")
    _uint(info["message_count"], "message_count")
    assert isinstance(info["topics_with_message_count"], list)
    for t in info["topics_with_message_count"]:
        meta = t["topic_metadata"]
        for key in ("name", "type", "serialization_format"):
            _string(meta[key], key)
        _uint(t["message_count"], "message_count")
        if version >= 4:
            text = _string(meta["offered_qos_profiles"], f"{meta['name']}: offered_qos_profiles")
            for p in yaml.safe_load(text) or []:  # rosbag2_transport/qos.cpp: integer enums, uint64 times
                for key in ("history", "reliability", "durability", "liveliness", "depth"):
                    assert isinstance(p[key], int), (meta["name"], key, p[key])
                for key in ("deadline", "lifespan", "liveliness_lease_duration"):
                    _uint(p[key]["sec"], key)
                    _uint(p[key]["nsec"], key)
                assert isinstance(p["avoid_ros_namespace_conventions"], bool)
    assert all(isinstance(_string(f, "relative_file_paths"), str) for f in info["relative_file_paths"])
    if version >= 3:
        _string(info["compression_format"], "compression_format")
        _string(info["compression_mode"], "compression_mode")
    if version >= 5:
        for f in info["files"]:
            _string(f["path"], "files.path")
            _uint(f["starting_time"]["nanoseconds_since_epoch"], "files.starting_time")
            _uint(f["duration"]["nanoseconds"], "files.duration")
            _uint(f["message_count"], "files.message_count")
    return info


SMALL = {"duration_s": 1, "camera": {"fps": 4, "width": 16, "height": 8},
         "targets": {"latency_ms": [[0, 50]]}, "load": {"rate_hz": 2, "cpu": 30}}


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_scenario_bags_are_version_8_and_humble_reads_them(tmp_path: Path, storage: str) -> None:
    bag = tmp_path / "b"
    msb.write_bag(scn.scenario_from_dict(SMALL), bag, storage)
    info = humble_reads((bag / "metadata.yaml").read_text())
    assert info["version"] == 8
    assert any(t["topic_metadata"]["offered_qos_profiles"] for t in info["topics_with_message_count"])
    assert len(list(bagio.read_raw(bag))) == sum(scn.expected_counts(scn.scenario_from_dict(SMALL)).values())


def test_version_9_on_request_and_humble_rule_catches_it(tmp_path: Path) -> None:
    """The check can fail: version 9's QoS list is what Humble's yaml-cpp refuses (ros2/rosbag2#2013)."""
    sc = str(tmp_path / "s.yaml")
    Path(sc).write_text(yaml.safe_dump(SMALL))
    assert msb.main([sc, "-o", str(tmp_path / "v9"), "--bag-version", "9"]) == 0
    text = (tmp_path / "v9" / "metadata.yaml").read_text()
    assert yaml.safe_load(text)["rosbag2_bagfile_information"]["version"] == 9
    with pytest.raises(AssertionError, match="offered_qos_profiles"):
        humble_reads(text)
    assert len(list(bagio.read_raw(tmp_path / "v9"))) > 0


def test_writer_refuses_other_versions(tmp_path: Path) -> None:
    with pytest.raises(bagio.BagError, match="allowed: \\[8, 9\\]"):
        bagio.BagWriter(tmp_path / "x", "mcap", version=5)


def test_replay_dry_run_skips_unknown_types_with_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "dynofa_ros.tools.replay", str(BAGS / "unknown_types_v8_mcap"),
                           "--dry-run"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    skipped = [ln for ln in proc.stderr.splitlines() if "skipped" in ln]
    assert len(skipped) == 1 and "/chatter_int (example_interfaces/msg/Int64)" in skipped[0], proc.stderr
    assert "/strings (test_msgs/msg/Strings)" in skipped[0]
    assert "Traceback" not in proc.stderr and "image_raw=3" in proc.stdout


def test_replay_refuses_bag_with_only_unknown_types_in_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "dynofa_ros.tools.replay",
                           str(BAGS / "only_unknown_types_v8_sqlite3")], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "nothing to play" in lines[0] and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("form", [["--remap", "image_raw:=/cam/image_raw"], ["--remap=image_raw:=/cam/image_raw"]])
def test_both_remap_forms_survive_ros_argument_handling(form: list[str]) -> None:
    """rclpy's remove_ros_args drops a bare a:=b word; the replay splits the ROS arguments off itself."""
    from rclpy.utilities import remove_ros_args

    from dynofa_ros.replay import transport as pb
    from dynofa_ros.tools import replay

    argv = ["bag", *form, "--ros-args", "-r", "__ns:=/robot", "--", "--rate", "2"]
    own, ros = pb.split_ros_args(argv)
    assert ros == ["--ros-args", "-r", "__ns:=/robot"]
    args = replay.parse_args(own)
    assert pb.parse_remaps(args.remap) == {"image_raw": "/cam/image_raw"} and args.rate == 2.0
    if form[0] == "--remap":  # what the old code did: the value is gone, argparse fails
        assert "image_raw:=/cam/image_raw" not in remove_ros_args(["dynofa-replay", *argv])
