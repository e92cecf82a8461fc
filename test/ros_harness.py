"""Helpers for graph tests: real node processes over real DDS, probed from a private rclpy context.

Modelled on launch_testing_ros' ``wait_for_topics``: a private ``rclpy.Context``, an executor on its
own thread, and ``Event.wait(timeout)`` / monotonic deadlines instead of sleeps. Processes are
ended by their own PID only.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from devtools.processes import Proc, find_executable, graph_env, poll_until

REPO = Path(__file__).resolve().parents[1]


def ros_env(domain_id: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A node process's environment (the graph's own), with one BLAS/OpenMP thread unless the test says more."""
    env = graph_env(domain_id)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra or {})
    return env


class NodeProcess(Proc):
    """One node executable started (by ``with``) as its own process, its output kept in a log file."""

    def __init__(self, executable: str, ros_args: Sequence[str] = (), *, env: dict[str, str],
                 args: Sequence[str] = (), name: str | None = None, cwd: str | os.PathLike[str] | None = None):
        name = name or Path(executable).name
        exe = executable if os.path.sep in executable else find_executable(executable)
        cmd = [exe, *args] + (["--ros-args", *ros_args] if ros_args else [])
        super().__init__(name, cmd, env, Path(tempfile.mkdtemp(prefix=f"{name}-")), cwd=cwd or REPO, start=False)


class Collector:
    """Messages received on one topic, with bounded waits."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.stamps: list[float] = []  # monotonic receive times
        self._cond = threading.Condition()
        self.subscription: Any = None

    def _on_msg(self, msg: Any) -> None:
        with self._cond:
            self.messages.append(msg)
            self.stamps.append(time.monotonic())
            self._cond.notify_all()

    def wait_matched(self, count: int = 1, timeout: float = 60.0) -> bool:
        """Until this subscription has matched ``count`` publishers (its own side of discovery).

        Why: a reliable, volatile reader gets nothing a writer sent before the reader matched it, and on a
        loaded machine that takes seconds after the writer's side has matched: a test that counts the first
        messages must wait for this, not for the publisher to appear in the graph.
        """
        return poll_until(lambda: self.subscription is not None and self.subscription.get_publisher_count() >= count,
                          timeout)

    def wait_until(self, predicate: Callable[[list[Any]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def wait_for(self, count: int, timeout: float) -> bool:
        return self.wait_until(lambda msgs: len(msgs) >= count, timeout)

    def snapshot(self) -> list[Any]:
        with self._cond:
            return list(self.messages)

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()
            self.stamps.clear()


class RosProbe:
    """A test-side node in a private context, spun on its own thread."""

    def __init__(self, domain_id: int, name: str = "probe"):
        self.domain_id = domain_id
        self.name = name

    def __enter__(self) -> RosProbe:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=self.domain_id)
        self.node = rclpy.create_node(f"{self.name}_{os.getpid()}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        return self

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        with contextlib.suppress(ExternalShutdownException):
            self.executor.spin()

    def __exit__(self, *exc: object) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(5.0)

    def publisher(self, topic: str, msg_type: type, qos: Any = 10) -> Any:
        return self.node.create_publisher(msg_type, topic, qos)

    def collect(self, topic: str, msg_type: type, qos: Any = 10) -> Collector:
        col = Collector()
        col.subscription = self.node.create_subscription(msg_type, topic, col._on_msg, qos)
        return col

    def wait_for_subscribers(self, pub: Any, count: int = 1, timeout: float = 15.0) -> bool:
        return poll_until(lambda: pub.get_subscription_count() >= count, timeout)

    def wait_for_publishers(self, topic: str, count: int = 1, timeout: float = 15.0) -> bool:
        return poll_until(lambda: self.node.count_publishers(topic) >= count, timeout)

    def call(self, srv_type: type, name: str, request: Any, timeout: float = 15.0, *, resend: bool = False) -> Any:
        """Call a service and wait for its answer; None when it does not come in time.

        ``resend``: send the request again until answered (:func:`request_until_answered`), for requests that
        may be repeated (a read, setting the same values); never for a lifecycle transition.
        """
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                return None
            return request_until_answered(lambda: client.call_async(request), timeout, 3.0 if resend else timeout)
        finally:
            self.node.destroy_client(client)


def lifecycle_state(probe: RosProbe, node_fqn: str, timeout: float) -> str | None:
    """The node's lifecycle state label (GetState, resent until answered); None when it never answers."""
    from lifecycle_msgs.srv import GetState

    answer = probe.call(GetState, f"{node_fqn}/get_state", GetState.Request(), timeout=timeout, resend=True)
    return None if answer is None else answer.current_state.label


def change_lifecycle_state(probe: RosProbe, node_fqn: str, transition: int, timeout: float) -> bool | None:
    """Request one lifecycle transition (sent once: a transition must not be repeated); whether it succeeded.

    When its answer is lost (the Fast DDS race of :func:`request_until_answered`), the node's state says
    whether the transition happened: success iff the node is now in the transition's goal state (configure,
    activate, deactivate, cleanup). None when the node answers neither request.
    """
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    goal = {Transition.TRANSITION_CONFIGURE: "inactive", Transition.TRANSITION_CLEANUP: "unconfigured",
            Transition.TRANSITION_ACTIVATE: "active", Transition.TRANSITION_DEACTIVATE: "inactive"}.get(transition)
    request = ChangeState.Request()
    request.transition.id = transition
    answer = probe.call(ChangeState, f"{node_fqn}/change_state", request, timeout=timeout)
    if answer is not None:
        return bool(answer.success)
    state = lifecycle_state(probe, node_fqn, timeout) if goal is not None else None
    return None if state is None else state == goal


def request_until_answered(send: Callable[[], Any], timeout: float, resend_s: float = 3.0) -> Any:
    """Send a service request with ``send()`` (which returns its future) again every ``resend_s`` until one
    is answered; the first answer, or None when none comes within ``timeout``.

    Why resend: ``wait_for_service`` says the client sees the server, not that the server has matched the
    client's response reader. Under load, Fast DDS's server can take a request before that match and then
    drops the answer ("failed to send response (timeout): client will not receive response"), so one
    request can go unanswered though the node is healthy. Only for requests that may be repeated (reads,
    setting the same values again).
    """
    answered = threading.Event()
    futures: list[Any] = []
    deadline = time.monotonic() + timeout
    while not answered.is_set() and time.monotonic() < deadline:
        future = send()
        futures.append(future)
        future.add_done_callback(lambda _f: answered.set())
        answered.wait(min(resend_s, max(0.0, deadline - time.monotonic())))
    for future in futures:
        if future.done() and future.result() is not None:
            return future.result()
    return None


def publish_paced_until(publish_one: Callable[[int], Any], hz: float, until: Callable[[], bool], *,
                        min_count: int = 0, timeout: float) -> list[Any]:
    """Call ``publish_one(i)`` at ``hz`` (a monotonic schedule) until ``until()`` holds and ``min_count`` were sent.

    For tests that need "enough" results from a node that drops frames by design: how many frames a node
    processes in a fixed window depends on the machine's load, so a test publishes until the condition
    it needs holds (bounded by ``timeout``) instead of counting results of a fixed burst. Returns what
    ``publish_one`` returned, in order.
    """
    sent: list[Any] = []
    start = time.monotonic()
    deadline = start + timeout
    period = 1.0 / hz
    while time.monotonic() < deadline and (len(sent) < min_count or not until()):
        sent.append(publish_one(len(sent)))
        delay = start + len(sent) * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return sent


def diagnostic_values(array_msg: Any, status_name_contains: str = "") -> dict[str, str]:
    """Key/values of the first DiagnosticStatus whose name contains the given text."""
    for status in array_msg.status:
        if status_name_contains in status.name:
            return {kv.key: kv.value for kv in status.values}
    return {}
