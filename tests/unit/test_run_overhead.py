"""The sync flow engine's heartbeat thread is not joined when a run ends
(procedures/run_overhead.py)."""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import prefect.flow_engine

import procedures  # noqa: F401  (installs the wrapper)
from procedures.run_overhead import install


def test_the_engine_runs_with_the_wrapper_and_prefect_still_takes_join_on_exit() -> None:
    wrapped = prefect.flow_engine._send_heartbeats
    assert install() is False  # already installed when procedures was imported
    original = wrapped.__wrapped__  # type: ignore[attr-defined]
    # A Prefect that renamed or dropped the parameter must fail here, not slow every run.
    assert "join_on_exit" in inspect.signature(original).parameters


def test_the_wrapper_always_asks_for_no_join() -> None:
    calls: list[bool] = []

    @contextmanager
    def send(engine: Any, join_on_exit: bool = True) -> Iterator[None]:
        calls.append(join_on_exit)
        yield

    module = SimpleNamespace(_send_heartbeats=send)
    assert install(module) is True
    assert install(module) is False
    with module._send_heartbeats(object()):
        pass
    with module._send_heartbeats(object(), join_on_exit=True):
        pass
    assert calls == [False, False]


class _Engine:
    """What Prefect's heartbeat context reads from its engine."""

    heartbeat_seconds = 30
    flow_run = None
    logger = logging.getLogger("test-heartbeats")

    def __init__(self) -> None:
        self.beats = 0

    def _build_heartbeat_event_template(self) -> tuple[Any, Any]:
        return {}, []

    def _emit_flow_run_heartbeat(self, resource: Any, related: Any) -> None:
        self.beats += 1


def test_the_heartbeat_thread_still_stops_and_sends_nothing_after_the_run() -> None:
    engine = _Engine()
    before = set(threading.enumerate())
    with prefect.flow_engine._send_heartbeats(engine):  # type: ignore[arg-type]
        started = [t for t in threading.enumerate() if t not in before]
    assert len(started) == 1, started
    started[0].join(timeout=5)
    assert not started[0].is_alive()
    assert engine.beats == 1  # the one at the start; none once the run ended
