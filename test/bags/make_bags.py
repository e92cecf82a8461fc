"""Writes the small rosbag2 bags under test/bags/: one per kind of bag that ``ros2 bag record`` writes.

    .venv/bin/python test/bags/make_bags.py          # rewrites test/bags/<kind>/ (checked in)

Why made here and not downloaded: the build machines reach no bag archive, and a test must not depend
on a fetched file. Each bag is written by the project's own writer (``dynofa_ros.replay.bagio.BagWriter``,
rosbags) and then edited by hand the way each rosbag2 release lays it out, from rosbag2's sources
(``rosbag2_storage/src/.../metadata_io.cpp``, ``sqlite_storage.cpp``, ``rosbag2_py/test/resources``):

- metadata version 4 (Foxy / early Humble): no ``files``; QoS a string; sqlite3 without ``schema`` table;
- version 5 (Humble): ``files`` per storage file; sqlite3 schema 3 (no type hashes, no message definitions);
- version 8 (Jazzy) and 9 (Kilted): as rosbags writes them;
- split (two storage files ``<name>_0``, ``<name>_1``), file compression (``.zstd``), message compression;
- topics of message types ROS here does not have (``example_interfaces``, ``test_msgs``, a service event).

In every hand-edited bag the QoS text in ``metadata.yaml`` differs from the one in the storage file,
as in rosbag2's own ``talker`` test bag: rosbag2 matches topics by name, and so must our reader.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from dynofa_ros.replay.bagio import BagWriter  # noqa: E402

T0 = 1_700_000_000_000_000_000
#: What ``ros2 bag record`` on Humble writes for a default reliable volatile publisher (talker bag).
HUMBLE_QOS = ("- history: 3\n  depth: 0\n  reliability: 1\n  durability: 2\n  deadline:\n    sec: 0\n    nsec: 0\n"
              "  lifespan:\n    sec: 0\n    nsec: 0\n  liveliness: 1\n  liveliness_lease_duration:\n    sec: 0\n"
              "    nsec: 0\n  avoid_ros_namespace_conventions: false")
#: What the storage file says instead (transient local), so metadata and storage disagree.
STORAGE_QOS = HUMBLE_QOS.replace("durability: 2", "durability: 1")
FRAMES = 3
UNKNOWN_TYPES = {
    "example_interfaces/msg/Int64": "int64 data\n",
    "test_msgs/msg/Strings": "string string_value\nstring<=22 bounded_string_value\n",
    "example_interfaces/srv/AddTwoInts_Event": "service_msgs/ServiceEventInfo info\n",
}


def _frame(i: int) -> np.ndarray:
    return ((np.arange(6 * 8 * 3, dtype=np.uint16) * 7 + 40 * i) % 256).astype(np.uint8)


def write(path: Path, storage: str, *, version: int = 8, unknown: bool = False, known: bool = True,
          times: range | None = None, compression: str = "") -> Path:
    """A bag of 3 rgb8 frames, a latency target and a battery message (and unknown types when asked)."""
    from rosbags.interfaces import Qos  # noqa: F401  (rosbags is the writer's dependency)
    from rosbags.rosbag2 import CompressionFormat, CompressionMode
    from rosbags.typesys import get_types_from_msg

    if path.exists():
        shutil.rmtree(path)
    w = BagWriter(path, storage, version=version)
    if compression:
        w._writer.set_compression(CompressionMode[compression.upper()], CompressionFormat.ZSTD)
    ts = w.typestore
    if unknown:
        for name, text in UNKNOWN_TYPES.items():
            ts.register(get_types_from_msg(text, name))
    with w:
        types = ts.types
        for i in times if times is not None else range(FRAMES):
            t = T0 + i * 100_000_000
            stamp = types["builtin_interfaces/msg/Time"](sec=t // 10**9, nanosec=t % 10**9)
            header = types["std_msgs/msg/Header"](stamp=stamp, frame_id="camera")
            if known:
                w.write("image_raw", "sensor_msgs/msg/Image", t, types["sensor_msgs/msg/Image"](
                    header=header, height=6, width=8, encoding="rgb8", is_bigendian=0, step=24, data=_frame(i)))
            if known and i == 0:
                w.write("dynofa/target_latency_ms", "std_msgs/msg/Float32", t, types["std_msgs/msg/Float32"](data=40.0))
            if unknown:
                w.write("/chatter_int", "example_interfaces/msg/Int64", t,
                        types["example_interfaces/msg/Int64"](data=i))
                w.write("/strings", "test_msgs/msg/Strings", t,
                        types["test_msgs/msg/Strings"](string_value="x", bounded_string_value="y"))
    return path


def metadata(path: Path) -> dict[str, Any]:
    return yaml.safe_load((path / "metadata.yaml").read_text())


def save(path: Path, meta: dict[str, Any]) -> None:
    (path / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False, width=1000))


def as_version(path: Path, version: int, *, qos: str = HUMBLE_QOS) -> None:
    """Rewrite metadata.yaml the way rosbag2 writes ``version`` (keys it does not know removed)."""
    meta = metadata(path)
    info = meta["rosbag2_bagfile_information"]
    info["version"] = version
    for key in ("custom_data", "ros_distro") if version < 8 else ():
        info.pop(key, None)
    if version < 5:
        info.pop("files", None)
    for t in info["topics_with_message_count"]:
        t["topic_metadata"].pop("type_description_hash", None) if version < 7 else None
        t["topic_metadata"]["offered_qos_profiles"] = qos
    save(path, meta)


def sqlite_schema(path: Path, schema: int) -> None:
    """Make the .db3 file look like an older rosbag2's: schema 3 (Humble) or no schema table (Foxy)."""
    (db,) = path.glob("*.db3")
    con = sqlite3.connect(db)
    with con:
        con.execute("DROP TABLE IF EXISTS message_definitions")
        con.execute("CREATE TABLE topics_old(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, "
                    "serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL)")
        con.execute("INSERT INTO topics_old SELECT id, name, type, serialization_format, ? FROM topics", (STORAGE_QOS,))
        con.execute("DROP TABLE topics")
        con.execute("ALTER TABLE topics_old RENAME TO topics")
        if schema < 3:
            con.execute("DROP TABLE IF EXISTS schema")
            con.execute("DROP TABLE IF EXISTS metadata")
        else:
            con.execute("DELETE FROM schema")
            con.execute("INSERT INTO schema(schema_version, ros_distro) VALUES (3, 'humble')")
    con.execute("VACUUM")
    con.close()


def split(path: Path, storage: str) -> None:
    """Two storage files, as ``ros2 bag record --max-bag-duration`` writes them."""
    ext = ".mcap" if storage == "mcap" else ".db3"
    write(path, storage, times=range(0, 2))
    second = write(path.with_name(path.name + "_part"), storage, times=range(2, FRAMES), known=True)
    (path / f"{path.name}{ext}").rename(path / f"{path.name}_0{ext}")
    (second / f"{second.name}{ext}").rename(path / f"{path.name}_1{ext}")
    meta, meta2 = metadata(path), metadata(second)
    shutil.rmtree(second)
    info, info2 = meta["rosbag2_bagfile_information"], meta2["rosbag2_bagfile_information"]
    info["relative_file_paths"] = [f"{path.name}_0{ext}", f"{path.name}_1{ext}"]
    info["files"][0]["path"] = info["relative_file_paths"][0]
    info2["files"][0]["path"] = info["relative_file_paths"][1]
    info["files"].append(info2["files"][0])
    info["message_count"] += info2["message_count"]
    counts = {t["topic_metadata"]["name"]: t["message_count"] for t in info2["topics_with_message_count"]}
    for t in info["topics_with_message_count"]:
        t["message_count"] += counts.get(t["topic_metadata"]["name"], 0)
    end = info2["starting_time"]["nanoseconds_since_epoch"] + info2["duration"]["nanoseconds"]
    info["duration"]["nanoseconds"] = end - info["starting_time"]["nanoseconds_since_epoch"]
    save(path, meta)


def main() -> int:
    kinds: dict[str, Any] = {
        "humble_v4_sqlite3": lambda p: (write(p, "sqlite3"), sqlite_schema(p, 2), as_version(p, 4)),
        "humble_v5_sqlite3": lambda p: (write(p, "sqlite3"), sqlite_schema(p, 3), as_version(p, 5)),
        "humble_v5_mcap": lambda p: (write(p, "mcap"), as_version(p, 5)),
        "jazzy_v8_mcap": lambda p: (write(p, "mcap"), as_version(p, 8)),
        "jazzy_v8_sqlite3": lambda p: write(p, "sqlite3"),
        "kilted_v9_mcap": lambda p: write(p, "mcap", version=9),
        "kilted_v9_sqlite3": lambda p: write(p, "sqlite3", version=9),
        "split_v8_mcap": lambda p: (split(p, "mcap"), as_version(p, 8)),
        "split_v5_sqlite3": lambda p: (split(p, "sqlite3"), as_version(p, 5)),
        "compressed_file_v5_sqlite3": lambda p: (write(p, "sqlite3", compression="file"), as_version(p, 5)),
        "compressed_message_v8_mcap": lambda p: (write(p, "mcap", compression="message"), as_version(p, 8)),
        "unknown_types_v8_mcap": lambda p: write(p, "mcap", unknown=True),
        "only_unknown_types_v8_sqlite3": lambda p: write(p, "sqlite3", unknown=True, known=False),
    }
    for name, make in kinds.items():
        make(HERE / name)
        size = sum(f.stat().st_size for f in (HERE / name).iterdir())
        print(f"make_bags: wrote {HERE / name} ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
