"""When is a stream stalled? Progress-based: no counter moved for the bound, while we waited.

A total timeout would cut a large dump that is merely long; this judges only silence. The
caller samples monotone counters (bytes read from pg_dump's pipe, bytes pg_dump wrote,
bytes downloaded, bytes pg_restore accepted) with a monotonic clock and asks whether the
silence since the last change has reached the bound. Time the consumer spent busy itself
(uploading a part while the producer was held back by the full queue) is not the
producer's silence: the caller restarts the clock for it (a new ``StallClock``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StallClock:
    """The counters last seen and the moment (monotonic seconds) any of them last moved."""

    counters: tuple[int, ...]
    moved_at: float


@dataclass(frozen=True)
class StallVerdict:
    """Whether the stream is stalled, how long it has been silent and the bound."""

    stalled: bool
    silent_s: float
    limit_s: float

    def describe(self, what: str) -> str:
        """One line for the error and the page."""
        return f"{what} made no progress for {self.silent_s:.0f} s (bound {self.limit_s:g} s)"


def observe(clock: StallClock | None, counters: tuple[int, ...], now: float) -> StallClock:
    """The clock after sampling ``counters`` at ``now``: restarted when anything moved."""
    if clock is None or counters != clock.counters:
        return StallClock(counters, now)
    return clock


def judge_stall(clock: StallClock, now: float, limit_s: float) -> StallVerdict:
    """Stalled when the counters have not moved for ``limit_s`` seconds (or longer).

    A clock that went backwards (it never should: monotonic) counts as no silence.
    """
    if limit_s <= 0:
        raise ValueError("a stall bound must be positive")
    silent = max(0.0, now - clock.moved_at)
    return StallVerdict(stalled=silent >= limit_s, silent_s=silent, limit_s=limit_s)
