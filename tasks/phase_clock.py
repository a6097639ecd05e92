"""The one clock a backup or a restore times its phases with (``decisions.phases``).

Each step keeps its own clock from its start (a task, the flow around it); a step's phases
join the caller's clock shifted by the difference of the two origins, so every phase of a
run says when it started after the run began.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace

from decisions.phases import WALL, Breakdown, Phase


class PhaseClock:
    """Phases timed from ``origin`` (``time.monotonic()``; now when not given)."""

    def __init__(self, origin: float | None = None) -> None:
        self.origin = time.monotonic() if origin is None else origin
        self.phases: list[Phase] = []

    def since(self) -> float:
        """Seconds since the origin."""
        return time.monotonic() - self.origin

    def span(self, name: str, began: float, detail: str = "") -> None:
        """A wall phase from ``began`` (seconds after the origin) to now."""
        self.phases.append(Phase(name, max(0.0, self.since() - began), began, detail=detail))

    def add(
        self, name: str, seconds: float, began: float, how: str = WALL, detail: str = ""
    ) -> None:
        """A phase measured elsewhere (busy time, a tool's CPU) that began at ``began``."""
        self.phases.append(Phase(name, max(0.0, seconds), max(0.0, began), how, detail))

    @contextlib.contextmanager
    def phase(self, name: str, detail: str = "") -> Iterator[None]:
        """Time the body of the ``with`` as one wall phase (also when it raises)."""
        began = self.since()
        try:
            yield
        finally:
            self.span(name, began, detail)

    def join(self, phases: Iterable[Phase], origin: float) -> None:
        """Phases timed by another clock whose origin was ``origin``, moved onto this one."""
        shift = origin - self.origin
        self.phases += [replace(p, start_s=max(0.0, p.start_s + shift)) for p in phases]

    def breakdown(self) -> Breakdown:
        """Every phase so far, and the wall time since the origin."""
        return Breakdown.of(self.phases, self.since())
