"""``record``: write the graph's topics to a rosbag2 bag (mcap or sqlite3) with ``rosbags``.

    record -o out/run1                        # every topic of topics.GRAPH_TOPICS (not the camera frames)
    record -o out/run1 --topics dynofa/inference_latency_ms dynofa/active_level image_raw
    record -o out/run1 --duration 70 --ros-args -r __ns:=/robot

For machines without ``ros2 bag record``. Subscriptions are raw (CDR bytes go to the bag untouched);
each topic is subscribed once a publisher appears, with a QoS compatible with every publisher (as
``ros2 bag record`` chooses it). Bag time is the receive time. Stops on SIGINT/SIGTERM or after
``--duration`` and closes the bag cleanly, so its metadata lists exactly what was written. Prints
``record: subscribed <topic>`` per topic so scripts can wait until recording has really started.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from typing import Any

from .. import topics as graph
from ..replay import transport as pb
from ..replay.bagio import DEFAULT_VERSION, VERSIONS, BagError, BagWriter, OfferedQos


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dynofa-record", description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--out", required=True, help="bag directory to create")
    p.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    p.add_argument("--topics", nargs="*", default=None,
                   help="topics to record (default: the graph topics of README.md's table, without image_raw)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bag")
    p.add_argument("--bag-version", type=int, default=DEFAULT_VERSION, choices=VERSIONS,
                   help="rosbag2 metadata version: 8 (default; Humble, Jazzy and later read it) or 9 (Jazzy and later)")
    return p.parse_args(argv)


class Recorder:
    """Subscribes the wanted topics as their publishers appear and writes every message to the bag."""

    def __init__(self, node: Any, writer: BagWriter, topics: list[str]):
        self.node = node
        self.writer = writer
        self.wanted = topics
        self.subs: dict[str, Any] = {}
        self.qos: dict[str, graph.Qos] = {}
        self.lock = threading.Lock()
        self.closed = False
        node.create_timer(0.2, self.discover)
        self.discover()

    def _resolve(self, topic: str) -> str:
        return self.node.resolve_topic_name(topic)

    def discover(self) -> None:
        from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

        from ..nodes.common import qos_profile

        known = dict(self.node.get_topic_names_and_types())
        for topic in self.wanted:
            full = self._resolve(topic)
            infos = self.node.get_publishers_info_by_topic(full)
            pubs = [(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE,
                     i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL) for i in infos]
            if topic in self.subs:
                # A publisher that appeared later may not match what was chosen (a live volatile monitor
                # beside a replay's transient-local publisher): subscribe again with the weaker QoS.
                chosen = self.qos.get(topic)
                if chosen is None or not pubs:
                    continue
                q = pb.record_qos(pubs)
                if (q.reliable, q.transient_local) == (chosen.reliable, chosen.transient_local) or (
                        q.reliable > chosen.reliable or q.transient_local > chosen.transient_local):
                    continue
                self.node.destroy_subscription(self.subs.pop(topic))
            types = known.get(full)
            if not types or not infos:
                continue
            msgtype = types[0]
            q = pb.record_qos(pubs)
            qos = qos_profile(q)
            try:
                module, name = pb.split_type(msgtype)
                cls = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError, ValueError):
                self.subs[topic] = None  # not retried: one line, not one per discovery round
                print(f"record: skipped {topic}: message type {msgtype} is not installed here", flush=True)
                continue
            offered = OfferedQos(q.reliable, q.transient_local, 1 if q.transient_local else 10)
            self.qos[topic] = q
            self.subs[topic] = self.node.create_subscription(
                cls, full, lambda raw, t=topic, mt=msgtype, o=offered: self.on_message(t, mt, raw, o), qos, raw=True)
            print(f"record: subscribed {topic} ({msgtype}, {'reliable' if q.reliable else 'best-effort'}, "
                  f"{'transient-local' if q.transient_local else 'volatile'})", flush=True)

    def on_message(self, topic: str, msgtype: str, raw: bytes, offered: OfferedQos | None = None) -> None:
        t_ns = self.node.get_clock().now().nanoseconds
        with self.lock:
            if not self.closed:
                self.writer.write_raw(topic, msgtype, t_ns, raw, offered)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.writer.close()


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.utilities import remove_ros_args

    full = list(sys.argv if argv is None else ["dynofa-record", *argv])
    args = parse_args(remove_ros_args(full)[1:])
    topics = args.topics if args.topics else list(graph.GRAPH_TOPICS)
    try:
        writer = BagWriter(args.out, args.storage, overwrite=args.overwrite, version=args.bag_version)
        writer.__enter__()
    except BagError as exc:
        print(f"record: error: {exc}", file=sys.stderr)
        return 2
    rclpy.init(args=full)
    node = rclpy.create_node("record")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    rec = Recorder(node, writer, topics)
    stop = threading.Event()
    # SIGTERM ends recording like SIGINT does, so the bag is always closed with complete metadata.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.duration:
        node.create_timer(args.duration, stop.set)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rec.close()
        topics_done = sum(1 for s in rec.subs.values() if s is not None)
        print(f"record: wrote {args.out} ({writer.count} messages, {topics_done} topics)", flush=True)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
