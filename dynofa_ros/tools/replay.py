"""``replay``: play a rosbag2 bag into the live graph with its recorded timing (no ``ros2 bag play`` needed).

    replay out/scenario_demo                                 # recorded timing
    replay BAG --rate 2 --loop --remap image_raw:=/front/image_raw
    replay BAG --wait-for image_raw --restamp --ros-args -r __ns:=/robot

The CDR bytes stored in the bag are published as they are (``Publisher.publish(bytes)``), so what the
nodes receive is byte-for-byte what was recorded; with ``--restamp`` each message that has a header is
deserialized with ``rclpy.serialization.deserialize_message``, stamped with the time it is published,
and published as a message (frame age measured by the nodes is then meaningful). The whole bag is read
and checked before anything is published, so a truncated bag fails with one line and plays nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import threading
import time
from typing import Any

from .. import playback as pb
from ..bagio import BagError, BagMessage, read_raw


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="replay", description=__doc__.split("\n\n")[0])
    p.add_argument("bag", help="rosbag2 directory (sqlite3 or mcap)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2 = twice as fast)")
    p.add_argument("--loop", action="store_true", help="play again from the start when the bag ends")
    p.add_argument("--remap", action="append", default=[], metavar="FROM:=TO", help="rename a topic")
    p.add_argument("--topics", nargs="*", default=None, help="only these topics (names as in the bag)")
    p.add_argument("--exclude", nargs="*", default=[], help="skip these topics")
    p.add_argument("--wait-for", action="append", default=[], metavar="TOPIC[:COUNT]",
                   help="before playing, wait until this topic has COUNT (default 1) subscribers, e.g. the node "
                        "under test and a recorder: nothing is published before they listen")
    p.add_argument("--wait-timeout", type=float, default=60.0, help="seconds to wait for subscribers")
    p.add_argument("--restamp", action="store_true", help="set header stamps to the publish time")
    p.add_argument("--dry-run", action="store_true", help="read and check the bag, print the plan, publish nothing")
    return p.parse_args(argv)


def _msg_class(msgtype: str) -> type:
    module, name = pb.split_type(msgtype)
    return getattr(importlib.import_module(module), name)


def _spin(executor: Any) -> None:
    from rclpy.executors import ExternalShutdownException

    with contextlib.suppress(ExternalShutdownException):
        executor.spin()


def load(args: argparse.Namespace) -> list[BagMessage]:
    msgs = [m for m in read_raw(args.bag, args.topics) if m.topic not in set(args.exclude)]
    if not msgs:
        raise BagError(f"{args.bag}: no messages to play (topics {args.topics or 'all'})")
    return msgs


def play(args: argparse.Namespace, msgs: list[BagMessage], ros_argv: list[str]) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message

    remaps = pb.parse_remaps(args.remap)
    rclpy.init(args=ros_argv)
    node = rclpy.create_node("replay")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=lambda: _spin(executor), daemon=True)
    spin.start()
    log = node.get_logger()
    try:
        pubs: dict[str, Any] = {}
        classes: dict[str, type] = {}
        for m in msgs:
            if m.topic in pubs:
                continue
            q = pb.replay_qos(m.msgtype)
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=q.depth,
                             reliability=ReliabilityPolicy.RELIABLE if q.reliable else ReliabilityPolicy.BEST_EFFORT,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if q.transient_local
                             else DurabilityPolicy.VOLATILE)
            classes[m.topic] = _msg_class(m.msgtype)
            pubs[m.topic] = node.create_publisher(classes[m.topic], pb.remap(m.topic, remaps), qos)
        deadline = time.monotonic() + args.wait_timeout
        for spec in args.wait_for:
            topic, count = pb.parse_wait_for(spec)
            name = pb.remap(topic, remaps)
            pub = next((p for t, p in pubs.items() if pb.remap(t, remaps).lstrip("/") == name.lstrip("/")), None)
            if pub is None:
                raise BagError(f"--wait-for {topic}: not a topic of {args.bag}")
            while pub.get_subscription_count() < count:
                if time.monotonic() > deadline:
                    log.error(f"{pub.get_subscription_count()} of {count} subscribers on {pub.topic_name} after "
                              f"{args.wait_timeout:g} s; playing anyway")
                    break
                time.sleep(0.05)
        t0 = msgs[0].t_ns
        loops = 0
        while True:
            start = time.monotonic()
            log.info(f"playing {args.bag}: {len(msgs)} messages, {(msgs[-1].t_ns - t0) / 1e9:.1f} s at "
                     f"rate {args.rate:g}" + (f" (loop {loops + 1})" if args.loop else ""))
            for m in msgs:
                delay = start + pb.due_offset_s(m.t_ns, t0, args.rate) - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if not rclpy.ok():
                    return 0
                if args.restamp:
                    msg = deserialize_message(m.rawdata, classes[m.topic])
                    if hasattr(msg, "header"):
                        msg.header.stamp = node.get_clock().now().to_msg()
                    pubs[m.topic].publish(msg)
                else:
                    pubs[m.topic].publish(m.rawdata)
            loops += 1
            if not args.loop:
                break
        log.info(f"replay done: {len(msgs) * loops} messages published")
        # Give reliable transport a moment to hand the last messages over before the publishers go.
        last = time.monotonic() + 0.5
        while time.monotonic() < last and rclpy.ok():
            time.sleep(0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Stop and join the spinning thread before the node and context go, or rcl aborts on exit.
        executor.shutdown()
        spin.join(5.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    from rclpy.utilities import remove_ros_args

    full = list(sys.argv if argv is None else ["replay", *argv])
    args = parse_args(remove_ros_args(full)[1:])
    try:
        if args.rate <= 0:
            raise BagError(f"--rate must be > 0, got {args.rate}")
        msgs = load(args)
        if args.dry_run:
            topics: dict[str, int] = {}
            for m in msgs:
                topics[m.topic] = topics.get(m.topic, 0) + 1
            print(f"replay: {args.bag}: {len(msgs)} messages, {(msgs[-1].t_ns - msgs[0].t_ns) / 1e9:.1f} s: "
                  + ", ".join(f"{t}={n}" for t, n in sorted(topics.items())))
            return 0
        return play(args, msgs, full)
    except (BagError, pb.RemapError) as exc:
        print(f"replay: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
