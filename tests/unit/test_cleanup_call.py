"""Cleanup calls (aborts, deletes) are retried through blips and stop at a refusal."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tasks import storage
from tasks.storage import cleanup_call


def _error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "DeleteObject",
    )


class _Calls:
    def __init__(self, *outcomes: Exception | None) -> None:
        self.outcomes, self.count = list(outcomes), 0

    def __call__(self) -> None:
        self.count += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(storage.time, "sleep", slept.append)
    return slept


def test_a_blip_is_retried_with_backoff(sleeps: list[float]) -> None:
    call = _Calls(_error("SlowDown", 503), _error("InternalError", 500), None)
    assert cleanup_call(call, "remove k") is True
    assert call.count == 3
    assert sleeps == [0.5, 1.0]


def test_a_refusal_ends_the_attempts(sleeps: list[float]) -> None:
    call = _Calls(_error("AccessDenied", 403))
    assert cleanup_call(call, "remove k") is False
    assert call.count == 1
    assert sleeps == []


def test_a_lasting_outage_gives_up_after_the_attempts_without_raising(sleeps: list[float]) -> None:
    call: Any = _Calls(*[_error("ServiceUnavailable", 503)] * 10)
    assert cleanup_call(call, "abort upload of k", attempts=3) is False
    assert call.count == 3
    assert sleeps == [0.5, 1.0], "no sleep after the last attempt"
