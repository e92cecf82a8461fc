"""rosbag2 files through ``rosbags`` (pure Python): open, read, write, with one clear error per bad bag.

``ros2 bag`` (rosbag2) is not installable on the build machines, and on a robot it needs a sourced
ROS install; ``rosbags`` reads and writes the same sqlite3 and mcap bags with no ROS at all.

Interop with rosbag2 itself (checked against rosbag2's sources):

- bags are written as metadata **version 8** by default: Humble (metadata 5) parses it, because
  version 8 stores each topic's ``offered_qos_profiles`` as a YAML *string*, while version 9 (Jazzy and
  later) stores a list that Humble's yaml-cpp refuses ("bad conversion", ros2/rosbag2#2013);
  ``version=9`` is an option;
- any bag ``ros2 bag record`` writes is read (metadata 4 to 9, sqlite3 and mcap, split into several
  files, file- or message-compressed with zstd): messages are matched to topics **by topic name**, as
  rosbag2 does, not by QoS as ``rosbags.rosbag2.Reader.messages`` does (the QoS text in
  ``metadata.yaml`` and in the storage file often differ, which made valid bags read as empty).

Every failure to read a bag (missing metadata, truncated mcap, malformed sqlite, fewer messages than the
metadata lists) becomes one ``BagError`` whose message names the bag and what is wrong, so the CLIs
print one line instead of a traceback from deep inside a storage plugin.

No rclpy here: messages are (de)serialized with the rosbags typestore, whose CDR is byte-identical
to what rclpy publishes, so a bag written here replays through ``rclpy`` unchanged.
"""

from __future__ import annotations

import shutil
import sqlite3
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STORAGES = ("sqlite3", "mcap")
#: Metadata versions the writer offers: 8 (default, readable by Humble, Jazzy and later) or 9.
VERSIONS = (8, 9)
DEFAULT_VERSION = 8


class BagError(RuntimeError):
    """A bag cannot be read or written; the message is one line naming the bag and the problem."""


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    t_ns: int        # bag (log) time
    rawdata: bytes   # CDR, exactly as published


def typestore() -> Any:
    """The message definitions used for bags: ROS 2 Kilted's, which match Humble and Jazzy for the
    std_msgs / sensor_msgs / diagnostic_msgs types this package uses."""
    from rosbags.typesys import Stores, get_typestore

    store = getattr(Stores, "ROS2_KILTED", None) or Stores.ROS2_HUMBLE
    return get_typestore(store)


@dataclass(frozen=True)
class OfferedQos:
    """The QoS a topic's publisher offers, as stored in a bag (what matters for matching, and the depth)."""

    reliable: bool
    transient_local: bool
    depth: int


def _rosbags_qos(q: OfferedQos) -> Any:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)  # rmw's "default" duration
    return Qos(QosHistory.KEEP_LAST, q.depth, QosReliability.RELIABLE if q.reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if q.transient_local else QosDurability.VOLATILE, zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


def _storage_plugin(storage: str) -> Any:
    from rosbags.rosbag2 import StoragePlugin

    if storage not in STORAGES:
        raise BagError(f"storage {storage!r}; allowed: {list(STORAGES)}")
    return StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3


class BagWriter:
    """A rosbag2 writer that accepts CDR bytes per topic; connections are created on first use."""

    def __init__(self, path: str | Path, storage: str = "mcap", *, overwrite: bool = False,
                 version: int = DEFAULT_VERSION):
        from rosbags.rosbag2 import Writer

        if version not in VERSIONS:
            raise BagError(f"metadata version {version}; allowed: {list(VERSIONS)} (8 is readable by Humble)")
        self.path = Path(path)
        if self.path.exists():
            if not overwrite:
                raise BagError(f"{self.path}: already exists (pass --overwrite to replace it)")
            shutil.rmtree(self.path) if self.path.is_dir() else self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.typestore = typestore()
        self._writer = Writer(self.path, version=version, storage_plugin=_storage_plugin(storage))
        self._conns: dict[str, Any] = {}
        self.count = 0

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def connection(self, topic: str, msgtype: str, qos: OfferedQos | None = None) -> Any:
        """The topic's connection, created on first use with the QoS its publisher offers (if known).

        The QoS is stored so that ``ros2 bag play`` offers the same on a robot (a latched target stays
        latched); Humble reads it from version 8's string form.
        """
        conn = self._conns.get(topic)
        if conn is None:
            if msgtype not in self.typestore.types:
                raise BagError(f"{self.path}: message type {msgtype!r} of topic {topic!r} is unknown to the "
                               f"rosbags typestore")
            profiles = [_rosbags_qos(qos)] if qos is not None else []
            conn = self._writer.add_connection(topic, msgtype, typestore=self.typestore,
                                               offered_qos_profiles=profiles)
            self._conns[topic] = conn
        elif conn.msgtype != msgtype:
            raise BagError(f"{self.path}: topic {topic!r} written as {conn.msgtype} and then as {msgtype}")
        return conn

    def write_raw(self, topic: str, msgtype: str, t_ns: int, rawdata: bytes | memoryview,
                  qos: OfferedQos | None = None) -> None:
        self._writer.write(self.connection(topic, msgtype, qos), int(t_ns), bytes(rawdata))
        self.count += 1

    def write(self, topic: str, msgtype: str, t_ns: int, msg: Any, qos: OfferedQos | None = None) -> None:
        self.write_raw(topic, msgtype, t_ns, self.typestore.serialize_cdr(msg, msgtype), qos)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no detail'}"


_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, sqlite3.Error, struct.error, ValueError, KeyError,
                                                 IndexError, EOFError, AssertionError, TypeError)


def _reader_errors() -> tuple[type[BaseException], ...]:
    from rosbags.rosbag2 import ReaderError

    return (ReaderError, *_READ_ERRORS)


def _file_connections(reader: Any) -> list[Any]:
    """The connections as the storage files hold them.

    ``rosbags.rosbag2.Reader.messages`` pairs the metadata's connections with the files' by topic, type
    *and QoS*; rosbag2 pairs them by topic name. Passing the files' own connections back to
    ``messages`` makes rosbags' pairing trivially succeed, so a QoS text that differs between
    ``metadata.yaml`` and the storage file no longer hides every message.
    """
    files = getattr(reader.storage, "storages", None)
    if files is None:  # a single .mcap / .db3 file was opened directly
        return list(reader.connections)
    return [c for f in files for c in f.connections]


def _storage_name(path: Path) -> str:
    names = [p.name for p in path.iterdir()] if path.is_dir() else [path.name]
    return "mcap" if any(".mcap" in n for n in names) else "sqlite3" if any(".db3" in n for n in names) else ""


def bag_info(path: str | Path) -> dict[str, Any]:
    """Topics (type, count), storage, duration of a bag, from its metadata; BagError if unreadable."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: no such bag")
    try:
        with Reader(path) as reader:
            topics: dict[str, dict[str, Any]] = {}
            for c in reader.connections:
                entry = topics.setdefault(c.topic, {"type": c.msgtype, "count": 0})
                entry["count"] += c.msgcount
            for c in _file_connections(reader):  # the type the data really has, where the files say
                if c.topic in topics:
                    topics[c.topic]["type"] = c.msgtype
            meta = getattr(reader.storage, "metadata", None)
            return {
                "path": str(path),
                "storage": _storage_name(path),
                "compression": getattr(meta, "compression_mode", None) or "none",
                "duration_ns": reader.duration,
                "start_ns": reader.start_time,
                "end_ns": reader.end_time,
                "message_count": reader.message_count,
                "files": len(getattr(reader.storage, "storages", None) or [path]),
                "topics": topics,
            }
    except _reader_errors() as exc:
        raise BagError(f"{path}: not a readable rosbag2 bag ({_reason(exc)})") from exc


def read_raw(path: str | Path, topics: Iterable[str] | None = None, *, check_count: bool = True
             ) -> Iterator[BagMessage]:
    """Every message of the bag in time order, as CDR bytes; BagError on a truncated or corrupt bag.

    Topics are matched by name, as rosbag2 does (see the module docstring). With ``check_count``,
    reading fewer messages than the metadata lists is an error too: a bag cut short by a crash must
    not be scored as if it were complete.
    """
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: no such bag")
    wanted = set(topics) if topics is not None else None
    seen = expected = 0
    try:
        with Reader(path) as reader:
            expected = sum(c.msgcount for c in reader.connections if wanted is None or c.topic in wanted)
            conns = [c for c in _file_connections(reader) if wanted is None or c.topic in wanted]
            if conns:  # rosbags reads every connection (matched by QoS) when given none
                for conn, t_ns, raw in reader.messages(connections=conns):
                    seen += 1
                    yield BagMessage(conn.topic, conn.msgtype, t_ns, bytes(raw))
    except BagError:
        raise
    except _reader_errors() as exc:
        raise BagError(f"{path}: truncated or corrupt bag ({_reason(exc)})") from exc
    if check_count and seen < expected:
        raise BagError(f"{path}: truncated bag: metadata lists {expected} messages, only {seen} readable")


def read_messages(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, Any]]:
    """(topic, bag time ns, deserialized rosbags message) for every message, in time order."""
    ts = typestore()
    for m in read_raw(path, topics):
        try:
            msg = ts.deserialize_cdr(m.rawdata, m.msgtype)
        except (*_READ_ERRORS,) as exc:
            raise BagError(f"{path}: corrupt message on {m.topic} at t={m.t_ns} ({_reason(exc)})") from exc
        yield m.topic, m.t_ns, msg


def stamp_ns(msg: Any) -> int | None:
    """The header stamp of a message in ns, or None when it has no header."""
    header = getattr(msg, "header", None)
    if header is None:
        return None
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def find_bag_file(path: str | Path) -> Sequence[Path]:
    """The storage files of a bag directory (for tests that damage them on purpose)."""
    p = Path(path)
    return sorted(q for q in p.iterdir() if q.suffix in (".db3", ".mcap", ".zstd"))
