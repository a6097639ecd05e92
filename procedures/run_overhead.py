"""Two fixed costs Prefect's sync flow engine (3.9) adds to every run, taken back.

1. The heartbeat join. When a run ends, the engine joins its heartbeat thread, which sleeps
   in one-second steps: every call of a sync flow with heartbeats on (every served runbook
   sends them: ``deployments/serve.py``) returned up to 1 s after the run's final state was
   set, half a second on average; a backup's measured time was always rounded up to whole
   seconds, and the backup the migrate runbook takes as its subflow waited the same. Prefect's
   async engine does not join (``join_on_exit=False``); :func:`install` makes the sync engine
   do the same. The thread still stops at its next step, and it never sends a heartbeat for
   a run whose state is final (Prefect checks that before each one).
2. The parameter encoder. Creating a flow run imports ``fastapi.encoders`` on first use
   (0.13-0.37 s measured), which every served run paid again: runs fork from a server that
   preloaded our modules (``deployments/warm_start.py``), and now that includes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fastapi.encoders  # noqa: F401  (preloaded: see 2. above)
import prefect.flow_engine as _engine

_MARK = "opsflows_without_join"


def install(module: Any = _engine) -> bool:
    """Wrap ``module``'s heartbeat context so it never joins; False when already done or
    when this Prefect has no such context (then nothing changes)."""
    original = getattr(module, "_send_heartbeats", None)
    if original is None or getattr(original, _MARK, False):
        return False

    @contextmanager
    def without_join(engine: Any, join_on_exit: bool = True) -> Iterator[None]:
        with original(engine, join_on_exit=False):
            yield

    setattr(without_join, _MARK, True)
    without_join.__wrapped__ = original  # type: ignore[attr-defined]
    module._send_heartbeats = without_join
    return True
