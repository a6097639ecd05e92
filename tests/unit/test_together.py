"""Independent calls started at once in copies of the caller's context (tasks/together.py)."""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar

import pytest

from tasks.together import results, start_together

RUN: ContextVar[str] = ContextVar("run", default="none")


def test_results_come_in_call_order_and_the_calls_overlap() -> None:
    began = time.monotonic()
    names = results(
        start_together(
            lambda: (time.sleep(0.3), "slow")[1],
            lambda: (time.sleep(0.1), threading.current_thread().name)[1],
        )
    )
    assert names[0] == "slow" and names[1].startswith("together")
    assert time.monotonic() - began < 0.55, "the calls ran at once, not one after the other"


def test_each_call_sees_the_callers_context() -> None:
    token = RUN.set("backup 42")
    try:
        assert results(start_together(RUN.get, RUN.get)) == ["backup 42", "backup 42"]
    finally:
        RUN.reset(token)


def test_the_first_failure_in_call_order_is_raised_after_every_call_ended() -> None:
    ended: list[str] = []

    def late_failure() -> None:
        time.sleep(0.2)
        ended.append("late")
        raise ValueError("second")

    def early_failure() -> None:
        ended.append("early")
        raise KeyError("first")

    with pytest.raises(ValueError, match="second"):
        results(start_together(lambda: ended.append("ok"), late_failure, early_failure))
    assert sorted(ended) == ["early", "late", "ok"]


def test_a_started_failure_stays_in_its_future_until_asked() -> None:
    ok, failed = start_together(lambda: 1, lambda: 1 / 0)
    assert ok.result() == 1
    assert isinstance(failed.exception(), ZeroDivisionError)
