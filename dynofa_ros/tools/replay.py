"""``replay``: play a rosbag2 bag into the live graph with its recorded timing (no ``ros2 bag play`` needed).

    replay out/scenario_demo                                 # recorded timing
    replay BAG --rate 2 --loop --remap image_raw:=/front/image_raw
    replay BAG --wait-ready --wait-for image_raw --restamp --ros-args -r __ns:=/robot

The CDR bytes stored in the bag are published as they are (``Publisher.publish(bytes)``), so what the
nodes receive is byte-for-byte what was recorded; with ``--restamp`` each message that has a header is
deserialized with ``rclpy.serialization.deserialize_message``, stamped with the time it is published,
and published as a message (frame age measured by the nodes is then meaningful). The whole bag is read
and checked before anything is published, so a truncated bag fails with one line and plays nothing.

Any bag ``ros2 bag record`` writes is read (``bagio``). Topics whose message type is not installed
here are skipped with one line naming them; a bag with nothing else is refused with one line.

Late joiners: the latest message of a state topic (``graph.STATE_TOPICS``, the targets) is published
again to every subscriber that appears after it was sent, so a manager that starts or respawns later
still gets the target in force. ``--wait-ready`` waits for perception's latched ``dynofa/ready``, so no
frame is published before the model can take it. ``--monitor-topics auto`` (default) leaves out the
bag's ``load/*`` and ``thermal/*`` while a live publisher (monitor_node) provides them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import threading
import time
from typing import Any

from .. import topics as graph
from ..replay import transport as pb
from ..replay.bagio import BagError, BagMessage, read_raw

#: Seconds between the waited-for subscribers being seen and the first message (see main()).
MATCH_SETTLE_S = 0.5
#: Longest wait for an already running live monitor to be discovered before the bag's monitor topics play.
MONITOR_DISCOVERY_S = 3.0
#: With --wait-ready: longest wait for perception to report (dynofa/camera_publishers) that its own discovery sees
#: this player's camera publishers, and how long to wait for a first report (an older perception sends none).
CAMERA_MATCH_S = 20.0
CAMERA_REPORT_S = 2.0

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dynofa-replay", description=__doc__.split("\n\n")[0])
    p.add_argument("bag", help="rosbag2 directory (sqlite3 or mcap, any metadata version 4..9, split, compressed)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2 = twice as fast)")
    p.add_argument("--loop", action="store_true", help="play again from the start when the bag ends")
    p.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                   help="rename a topic (--remap a:=b or --remap=a:=b)")
    p.add_argument("--topics", nargs="*", default=None, help="only these topics (names as in the bag)")
    p.add_argument("--exclude", nargs="*", default=[], help="skip these topics")
    p.add_argument("--wait-for", action="append", default=[], metavar="TOPIC[:COUNT]",
                   help="before playing, wait until this topic has COUNT (default 1) subscribers, e.g. the node "
                        "under test and a recorder: nothing is published before they listen")
    p.add_argument("--wait-ready", action="store_true",
                   help=f"before playing, wait for a true on {graph.READY} (perception_node's latched readiness): "
                        "no frame is published before the model is prepared")
    p.add_argument("--ready-topic", default=graph.READY, help="readiness topic for --wait-ready")
    p.add_argument("--wait-timeout", type=float, default=60.0, help="seconds to wait for subscribers / readiness")
    p.add_argument("--monitor-topics", choices=("auto", "play", "skip"), default="auto",
                   help=f"the bag's {', '.join(graph.MONITOR_TOPICS)}: auto (default) leaves a topic out while another "
                        "node publishes it live (monitor_node); play: always; skip: never")
    p.add_argument("--restamp", action="store_true", help="set header stamps to the publish time")
    p.add_argument("--dry-run", action="store_true", help="read and check the bag, print the plan, publish nothing")
    return p.parse_args(argv)


def _msg_class(msgtype: str) -> type:
    module, name = pb.split_type(msgtype)
    return getattr(importlib.import_module(module), name)


def message_classes(msgs: list[BagMessage]) -> tuple[dict[str, type], dict[str, str]]:
    """(class per playable topic, type per topic whose type is not installed here)."""
    classes: dict[str, type] = {}
    missing: dict[str, str] = {}
    for m in msgs:
        if m.topic in classes or m.topic in missing:
            continue
        try:
            classes[m.topic] = _msg_class(m.msgtype)
        except (ImportError, AttributeError, ValueError):
            missing[m.topic] = m.msgtype
    return classes, missing


def _spin(executor: Any) -> None:
    from rclpy.executors import ExternalShutdownException

    with contextlib.suppress(ExternalShutdownException):
        executor.spin()


def load(args: argparse.Namespace) -> tuple[list[BagMessage], dict[str, type]]:
    """The messages to play and their classes; unknown types skipped with one line on stderr."""
    excluded = set(args.exclude)
    msgs = [m for m in read_raw(args.bag, args.topics) if m.topic not in excluded]
    if not msgs:
        raise BagError(f"{args.bag}: no messages to play (topics {args.topics or 'all'})")
    classes, missing = message_classes(msgs)
    if missing:
        listed = ", ".join(f"{t} ({mt})" for t, mt in sorted(missing.items()))
        if not classes:
            raise BagError(f"{args.bag}: nothing to play: every topic has a message type not installed here: {listed}")
        print(f"replay: skipped {len(missing)} topics whose message type is not installed here: {listed}",
              file=sys.stderr, flush=True)
        msgs = [m for m in msgs if m.topic in classes]
    return msgs, classes


class Player:
    """Publishers of one replay, the late-joiner re-publication and the live-monitor check (poll timer)."""

    def __init__(self, node: Any, args: argparse.Namespace, msgs: list[BagMessage], classes: dict[str, type]):
        from ..nodes.common import LATCHED_QOS, qos_profile

        self.node = node
        self.args = args
        self.log = node.get_logger()
        self.remaps = pb.parse_remaps(args.remap)
        self.pubs: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.skipped: set[str] = set()
        types = {m.topic: m.msgtype for m in msgs}
        for topic, msgtype in types.items():
            self.pubs[topic] = node.create_publisher(classes[topic], pb.remap(topic, self.remaps),
                                                     qos_profile(pb.replay_qos(msgtype)))
        self.images = [t for t, msgtype in types.items() if msgtype in graph.IMAGE_TYPES]
        self.state = [t for t in self.pubs if any(pb.same_topic(t, s) for s in graph.STATE_TOPICS)]
        self.monitor = [t for t in self.pubs if any(pb.same_topic(t, s) for s in graph.MONITOR_TOPICS)]
        if args.monitor_topics == "skip":
            self.skipped.update(self.monitor)
        self.last: dict[str, Any] = {}                # state topic → last message published
        self.matched = {t: 0 for t in self.state}     # state topic → subscribers seen
        self.pending: dict[str, float] = {}           # state topic → when new subscribers were seen
        # Subscribed now, not when needed: matching a reader to perception's latched writer is the same slow,
        # asymmetric discovery this report exists for, so let it run while the player waits for readiness.
        self.camera_reports: list[int] = []
        self.camera_sub = None
        if args.wait_ready:
            from std_msgs.msg import UInt32

            self.camera_sub = node.create_subscription(UInt32, graph.CAMERA_PUBLISHERS,
                                                       lambda msg: self.camera_reports.append(msg.data), LATCHED_QOS)
        node.create_timer(0.1, self.poll)

    def publish(self, topic: str, payload: Any) -> None:
        with self.lock:
            if topic in self.skipped:
                return
            self.pubs[topic].publish(payload)
            if topic in self.matched:
                self.last[topic] = payload

    def poll(self) -> None:
        """New subscribers on a state topic get the value in force; a live monitor topic stops playing."""
        now = time.monotonic()
        for topic in self.state:
            count = self.pubs[topic].get_subscription_count()
            with self.lock:
                sent = topic in self.last
            if count > self.matched[topic] and sent:
                # only a subscriber that appeared after the value was sent missed it; one matched before
                # the first message (every --wait-for subscriber) got the original
                self.pending.setdefault(topic, now)
            self.matched[topic] = count
            # A short delay: the new reader must also have matched us, or the repeated sample is lost.
            if topic in self.pending and now - self.pending[topic] >= 0.3:
                del self.pending[topic]
                with self.lock:
                    last = self.last.get(topic)
                    if last is not None:
                        self.pubs[topic].publish(last)
                        self.log.info(f"{self.pubs[topic].topic_name}: published the value in force again for a "
                                      "subscriber that joined after it")
        self.check_monitor()

    def check_monitor(self) -> None:
        """Leave out a monitor topic another node publishes live; its publisher goes too, so only one remains."""
        if self.args.monitor_topics != "auto":
            return
        for topic in self.monitor:
            # Test and destroy under one lock: the poll timer (executor thread) and the main thread both call
            # this, and one that tested "not skipped" while the other destroyed the publisher then read the
            # destroyed handle (a demo's replay died with rclpy's InvalidHandle before its first message).
            with self.lock:
                if topic in self.skipped:
                    continue
                name = self.pubs[topic].topic_name
                if self.node.count_publishers(name) <= 1:
                    continue
                self.skipped.add(topic)
                self.node.destroy_publisher(self.pubs[topic])
            self.log.info(f"{name}: a live publisher (monitor_node) provides it; the bag's "
                          "copy is no longer played (--monitor-topics play to keep it)")

    def wait_for_subscribers(self, deadline: float) -> None:
        for spec in self.args.wait_for:
            topic, count = pb.parse_wait_for(spec)
            name = pb.remap(topic, self.remaps)
            pub = next((p for t, p in self.pubs.items() if pb.same_topic(pb.remap(t, self.remaps), name)), None)
            if pub is None:
                raise BagError(f"--wait-for {topic}: not a topic of {self.args.bag}")
            while pub.get_subscription_count() < count:
                if time.monotonic() > deadline:
                    self.log.error(f"{pub.get_subscription_count()} of {count} subscribers on {pub.topic_name} after "
                                   f"{self.args.wait_timeout:g} s; playing anyway")
                    break
                time.sleep(0.05)

    def wait_camera_matched(self, deadline: float) -> None:
        """Until perception's own discovery sees at least as many camera publishers as this player does.

        Why: discovery is asymmetric. This player sees perception's subscription (``--wait-for``) before
        perception has matched this player's publisher, and a best-effort frame sent in between is lost; on a
        loaded 2-core machine that took over 1.5 s. Perception reports its side on ``dynofa/camera_publishers``.
        """
        images = [self.pubs[t].topic_name for t in self.images]
        sub = self.camera_sub
        if not images or sub is None:
            return
        seen = self.camera_reports
        try:
            start = time.monotonic()
            until = min(deadline, start + CAMERA_MATCH_S)
            while time.monotonic() < until:
                mine = sum(self.node.count_publishers(name) for name in images)  # this player and any other camera
                if seen and seen[-1] >= mine:
                    self.log.info(f"{sub.topic_name}: perception sees {seen[-1]} camera publisher(s), this one "
                                  "included")
                    return
                # No report and nobody publishing one: an older perception_node. A publisher whose latched value
                # has not arrived yet is discovery still under way (seconds on a loaded machine): keep waiting.
                if (not seen and time.monotonic() - start > CAMERA_REPORT_S
                        and self.node.count_publishers(sub.topic_name) == 0):
                    self.log.info(f"nobody publishes {sub.topic_name} (an older perception_node?): playing after "
                                  "the discovery settle only")
                    return
                time.sleep(0.05)
            self.log.warning(f"perception did not report this player's camera publisher on {sub.topic_name} "
                             f"within {CAMERA_MATCH_S:g} s (last report: {seen[-1] if seen else 'none'}); playing "
                             "anyway (the first frames may be lost)")
        finally:
            self.node.destroy_subscription(sub)
            self.camera_sub = None

    def wait_ready(self, deadline: float) -> None:
        from std_msgs.msg import Bool

        from ..nodes.common import LATCHED_QOS

        ready = threading.Event()
        sub = self.node.create_subscription(Bool, self.args.ready_topic,
                                            lambda msg: ready.set() if msg.data else ready.clear(), LATCHED_QOS)
        try:
            if not ready.wait(max(deadline - time.monotonic(), 0.0)):
                self.log.error(f"no true on {sub.topic_name} after {self.args.wait_timeout:g} s (is perception_node "
                               "running?); playing anyway")
            else:
                self.log.info(f"{sub.topic_name}: perception is ready")
        finally:
            self.node.destroy_subscription(sub)


def play(args: argparse.Namespace, msgs: list[BagMessage], classes: dict[str, type], ros_argv: list[str]) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.serialization import deserialize_message

    rclpy.init(args=ros_argv)
    node = rclpy.create_node("replay")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=lambda: _spin(executor), daemon=True)
    spin.start()
    log = node.get_logger()
    try:
        player = Player(node, args, msgs, classes)
        deadline = time.monotonic() + args.wait_timeout
        if args.wait_ready:
            player.wait_ready(deadline)
        player.wait_for_subscribers(deadline)
        if args.wait_ready:
            player.wait_camera_matched(deadline)
        if args.wait_for or args.wait_ready:
            # Discovery is asymmetric: this publisher can see a reader before the reader has matched this
            # publisher, and a best-effort sample (a camera frame) sent in between is lost. No API tells the
            # writer when the reader side has matched, so give discovery a moment before the first frame.
            time.sleep(MATCH_SETTLE_S)
        if args.monitor_topics == "auto" and player.monitor:
            # a live monitor that is running already must be discovered before the bag's first load sample
            with player.lock:  # names taken once: the poll timer may destroy a skipped topic's publisher
                names = {t: player.pubs[t].topic_name for t in player.monitor if t not in player.skipped}
            until = time.monotonic() + MONITOR_DISCOVERY_S
            while time.monotonic() < until and not all(
                    t in player.skipped or node.count_publishers(name) > 1 for t, name in names.items()):
                time.sleep(0.05)
        player.check_monitor()  # once more right before the first message, not only on the timer
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
                    player.publish(m.topic, msg)
                else:
                    player.publish(m.topic, m.rawdata)
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
    # Split off the ROS arguments before rclpy sees the command line: rclpy would take a bare
    # ``image_raw:=/cam`` (the value of --remap) as a ROS remap rule and remove it.
    full = list(sys.argv if argv is None else ["dynofa-replay", *argv])
    own, ros = pb.split_ros_args(full[1:])
    args = parse_args(own)
    try:
        if args.rate <= 0:
            raise BagError(f"--rate must be > 0, got {args.rate}")
        pb.parse_remaps(args.remap)
        msgs, classes = load(args)
        if args.dry_run:
            topics: dict[str, int] = {}
            for m in msgs:
                topics[m.topic] = topics.get(m.topic, 0) + 1
            print(f"replay: {args.bag}: {len(msgs)} messages, {(msgs[-1].t_ns - msgs[0].t_ns) / 1e9:.1f} s: "
                  + ", ".join(f"{t}={n}" for t, n in sorted(topics.items())))
            return 0
        return play(args, msgs, classes, [full[0], *ros])
    except (BagError, pb.RemapError) as exc:
        print(f"replay: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
