"""Start served flow runs from a warm process instead of a fresh interpreter.

Prefect's runner starts each served flow run with ``multiprocessing`` in *spawn* mode: a new
Python interpreter that imports Prefect, the clients and the flow's module again, which costs
seconds of CPU per run (most of the time from a CI webhook to a Running flow). A *forkserver*
context whose server process has preloaded those modules forks each run from a single-threaded,
already-imported process instead: the child still gets a clean process (no runner threads,
no event loop), but starts in milliseconds.

Only the ``multiprocessing`` reference inside ``prefect.flow_engine`` is redirected; if a
Prefect release moves that code, :func:`install` returns False and runs start as before.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from typing import Any


class _ForkserverFirst:
    """Stands in for the ``multiprocessing`` module inside ``prefect.flow_engine``."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def get_context(self, method: str | None = None) -> Any:
        if method in (None, "spawn"):
            return self._context
        return multiprocessing.get_context(method)

    def __getattr__(self, name: str) -> Any:
        return getattr(multiprocessing, name)


def install(preload: Sequence[str]) -> bool:
    """Make served runs fork from a server that has imported ``preload``; True if installed."""
    from prefect import flow_engine

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    if getattr(flow_engine, "multiprocessing", None) is not multiprocessing:
        return isinstance(getattr(flow_engine, "multiprocessing", None), _ForkserverFirst)
    if not hasattr(flow_engine, "run_flow_in_subprocess"):
        return False
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    flow_engine.multiprocessing = _ForkserverFirst(context)  # type: ignore[assignment,attr-defined]
    # Start the server (and its imports) now, not on the first run's clock.
    from multiprocessing import forkserver

    forkserver.ensure_running()
    return True
