"""Start independent calls at once, each in a copy of the caller's context.

A copy of the context carries the Prefect run (a task called there is a task run of the same
flow run, a block load or an artifact belongs to it) and the operation-log record. Used
where a runbook waits on several round trips that do not depend on each other: the block
loads and the read-only checks before a backup, the operation log's artifact and row.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


def start_together(*calls: Callable[[], Any]) -> list[Future[Any]]:
    """Start ``calls`` now, one thread each; their futures, in the same order.

    A call's exception stays in its future: ``future.result()`` raises it where the caller
    asks for that result (so a failure is reported at the step it belongs to).
    """
    pool = ThreadPoolExecutor(max(1, len(calls)), thread_name_prefix="together")
    try:
        return [pool.submit(contextvars.copy_context().run, call) for call in calls]
    finally:
        pool.shutdown(wait=False)


def results(futures: list[Future[Any]]) -> list[Any]:
    """The futures' results in order, or the first failure in that order (raised after
    every one of them has ended)."""
    for future in futures:
        future.exception()  # wait for all, failed or not
    return [future.result() for future in futures]


def together(*calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` at once and wait for them: :func:`results` of :func:`start_together`."""
    return results(start_together(*calls))
