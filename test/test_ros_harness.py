"""The graph tests' service helper: a request whose answer is lost is sent again (``request_until_answered``).

Real ``rclpy.task.Future`` objects, completed from another thread as an executor would; no DDS needed to show
the loop's logic (the DDS side is every graph test that reads parameters).
"""

from __future__ import annotations

import threading

from ros_harness import request_until_answered


def _sender(answer_on: int | None) -> tuple[list, object]:
    from rclpy.task import Future

    sent: list = []

    def send() -> Future:
        future = Future()
        sent.append(future)
        if len(sent) == answer_on:
            threading.Timer(0.05, future.set_result, args=(f"answer to request {answer_on}",)).start()
        return future

    return sent, send


def test_a_request_whose_answer_is_lost_is_sent_again() -> None:
    sent, send = _sender(answer_on=2)
    assert request_until_answered(send, timeout=60.0, resend_s=0.2) == "answer to request 2"
    assert len(sent) == 2


def test_no_answer_at_all_gives_none_at_the_deadline() -> None:
    sent, send = _sender(answer_on=None)
    assert request_until_answered(send, timeout=0.5, resend_s=0.2) is None
    assert len(sent) >= 2


def test_a_request_that_must_not_be_repeated_is_sent_once() -> None:
    sent, send = _sender(answer_on=2)
    assert request_until_answered(send, timeout=0.5, resend_s=0.5) is None
    assert len(sent) == 1
