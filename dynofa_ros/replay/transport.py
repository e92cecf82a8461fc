"""Rules shared by ``dynofa-replay`` and ``dynofa-record``: timing, remapping, QoS choice, message-type names.

Kept free of rclpy so the rules (when a message is due, which QoS a recorder must offer to be
compatible with every publisher) are unit-tested without a ROS graph (``test/test_launch_config.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..topics import IMAGE_TYPES, Qos

#: The graph's topics, their types and QoS roles live in ``dynofa_ros.topics``. What this module adds:
#: Latest message of a state topic: ``dynofa-replay`` publishes it again to every subscriber that appears after
#: it was sent (a manager started or respawned later, whose subscription is volatile so that any publisher,
#: ``ros2 topic pub`` included, reaches it). A bag's copy of a ``MONITOR_TOPICS`` topic would interleave with
#: the live values. ``READY`` is perception_node's readiness signal (true once the model takes frames).


class RemapError(ValueError):
    """A ``--remap`` rule is not ``from:=to``."""


def split_ros_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the tool's own arguments, the ROS arguments) of a command line, without the program name.

    ROS arguments are the ``--ros-args … [--]`` blocks (rcl's rule). Why not ``rclpy.utilities.
    remove_ros_args``: it also removes every bare ``a:=b`` word (the deprecated remap syntax), so
    ``--remap image_raw:=/cam`` lost its value; and ``rclpy.init`` given such a word applies it as a
    node-wide remap. Splitting first keeps ``a:=b`` values with the option they belong to.
    """
    own: list[str] = []
    ros: list[str] = []
    inside = False
    for word in argv:
        if word == "--ros-args":
            inside = True
            ros.append(word)
        elif inside and word == "--":
            inside = False
        elif inside:
            ros.append(word)
        else:
            own.append(word)
    return own, ros


def parse_remaps(rules: Iterable[str]) -> dict[str, str]:
    """``from:=to`` rules (the ROS remap syntax) into a mapping; names compared without a leading '/'."""
    out: dict[str, str] = {}
    for rule in rules:
        src, sep, dst = rule.partition(":=")
        if not sep or not src or not dst:
            raise RemapError(f"remap {rule!r}: expected from:=to")
        out[src.lstrip("/")] = dst
    return out


def remap(topic: str, remaps: dict[str, str]) -> str:
    return remaps.get(topic.lstrip("/"), topic)


def same_topic(a: str, b: str) -> bool:
    """Bag topic names with or without the leading '/' (ros2 bag record writes absolute names)."""
    return a.lstrip("/") == b.lstrip("/")


def parse_wait_for(spec: str) -> tuple[str, int]:
    """``TOPIC[:COUNT]`` → (topic, count ≥ 1)."""
    topic, sep, count = spec.rpartition(":")
    if not sep or not count.isdigit():
        return spec, 1
    if int(count) < 1 or not topic:
        raise RemapError(f"--wait-for {spec!r}: expected TOPIC[:COUNT] with COUNT >= 1")
    return topic, int(count)


def due_offset_s(t_ns: int, t0_ns: int, rate: float) -> float:
    """Seconds after playback start at which a message recorded at ``t_ns`` is due (``rate`` × speed)."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    return (t_ns - t0_ns) / 1e9 / rate


def replay_qos(msgtype: str) -> Qos:
    """Publisher QoS for replayed topics.

    Reliable publishers match both reliable and best-effort subscribers. Camera frames stay volatile
    (a late joiner must not get a stale frame); everything else is transient-local depth 1, which
    matches volatile and transient-local subscribers alike, so a manager that subscribes its targets
    transient-local still gets the target in force when it starts after the replay.
    """
    if msgtype in IMAGE_TYPES:
        return Qos(reliable=True, transient_local=False, depth=5)
    return Qos(reliable=True, transient_local=True, depth=1)


def record_qos(publishers: Sequence[tuple[bool, bool]]) -> Qos:
    """Subscription QoS compatible with every publisher, given (reliable, transient_local) per publisher.

    As ``ros2 bag record`` does: reliable only if every publisher is reliable (a reliable subscription
    gets nothing from a best-effort publisher), transient-local only if every publisher is (a
    transient-local subscription is incompatible with a volatile publisher).
    """
    if not publishers:
        return Qos(reliable=True, transient_local=False, depth=100)
    reliable = all(r for r, _ in publishers)
    transient = all(t for _, t in publishers)
    return Qos(reliable=reliable, transient_local=transient, depth=100)


def split_type(msgtype: str) -> tuple[str, str]:
    """'sensor_msgs/msg/Image' → ('sensor_msgs.msg', 'Image'), for importing the rclpy class."""
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"message type {msgtype!r}: expected pkg/msg/Name")
    return f"{parts[0]}.{parts[1]}", parts[2]
