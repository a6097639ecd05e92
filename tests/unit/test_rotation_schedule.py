"""The monthly rotation as its schedule runs it, and the connection-load summary (no services).

The schedule runs with the deployment's parameters over the flow's defaults: both must name
``alternating_users``, whose credential in use keeps logging in while the consumers switch
(``single_user`` refuses new logins from ``set_password`` to ``finish``; measured in
``tests/served/test_rotation_schedule.py`` and ``bench/bench_rotation.py``).
"""

from __future__ import annotations

import inspect
from typing import Any

from decisions.rotation import Strategy, parse_strategy
from devstack.dbload import Chunk, summarize


def _monthly() -> Any:
    from deployments.catalog import runner_deployments

    found = [d for d in runner_deployments() if d.name == "rotate-credentials-monthly"]
    assert len(found) == 1
    return found[0]


def test_the_scheduled_rotation_alternates_users() -> None:
    from flows.rotate_credentials import rotate_credentials

    deployment = _monthly()
    assert [s.schedule.cron for s in deployment.schedules] == ["0 4 1 * *"]
    flow_default = inspect.signature(rotate_credentials.fn).parameters["strategy"].default
    scheduled = {"strategy": flow_default, **deployment.parameters}
    assert parse_strategy(scheduled["strategy"]) is Strategy.ALTERNATING_USERS
    assert parse_strategy(flow_default) is Strategy.ALTERNATING_USERS  # a custom run too
    assert deployment.parameters["strategy"] == Strategy.ALTERNATING_USERS.value


def _chunk(start: float, refused: int = 0, processed: int = 10, role: str = "app") -> Chunk:
    return Chunk(start, start + 0.1, role, processed, refused, 2 if refused else 0)


def test_no_refused_connection_is_no_window() -> None:
    seen = summarize([_chunk(0.0), _chunk(0.1, role="app_clone")])
    assert seen == {
        "chunks": 2,
        "connections": 20,
        "failed_connections": 0,
        "window_ms": 0,
        "roles": ["app", "app_clone"],
    }


def test_the_window_spans_the_first_to_the_last_refused_chunk() -> None:
    chunks = [_chunk(0.0), _chunk(1.0, 1, 0), _chunk(1.1, 1, 0), _chunk(2.5, 1, 3), _chunk(2.6)]
    seen = summarize(chunks)
    assert seen["failed_connections"] == 3
    assert seen["window_ms"] == 1600  # 1.0 -> 2.6 (end of the chunk started at 2.5)
    assert seen["connections"] == 10 + 3 + 3 + 10
    assert summarize([]) == {
        "chunks": 0,
        "connections": 0,
        "failed_connections": 0,
        "window_ms": 0,
        "roles": [],
    }
