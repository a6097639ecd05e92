"""Bake review decisions: the synthetic probe's figures and what an inconclusive bake does.

Pure functions on frozen dataclasses. During the production bake a synthetic probe sends
paced requests through the real service (like Flagger's load tester), so the bake always has
traffic to judge; its own client-side figures are summarised here. A bake that fails rolls
back at once; a bake that passes keeps the release; a bake that stays inconclusive (metrics
backend unreachable, or still no data despite the probe) asks a person, and only an explicit,
named approval keeps the release: a rejection or no answer in time rolls back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from decisions.deploy_verify import FAIL, PASS, Verdict
from opsflows.errors import ConfigurationError

MAX_PROBE_RPS = 50.0
"""Upper bound of the probe's rate: a health signal, never a load test."""

BakeAction = Literal["keep", "roll back", "ask"]


def validate_probe(rps: float, review_timeout_s: float) -> None:
    """Refuse a probe rate outside [0, MAX_PROBE_RPS] (0 = no probe) or a review timeout < 1 s."""
    if not 0 <= rps <= MAX_PROBE_RPS:
        raise ConfigurationError(
            f"probe_rps must be between 0 (no probe) and {MAX_PROBE_RPS:g}, got {rps}"
        )
    if review_timeout_s < 1:
        raise ConfigurationError(f"inconclusive_timeout_s must be >= 1, got {review_timeout_s}")


@dataclass(frozen=True)
class ProbeSummary:
    """What the synthetic probe sent and saw, measured client-side.

    Attributes:
        requests: Requests sent (answered or not).
        errors: Requests answered 5xx or not answered at all.
        p95_latency_s: Nearest-rank p95 of answered requests; None when nothing answered.
        duration_s: Wall time the probe ran.
        rps: The rate it was asked for.
        dropped: Scheduled requests skipped because too many were outstanding.
        last_error: The last transport error seen (type and message), if any.
    """

    requests: int
    errors: int
    p95_latency_s: float | None
    duration_s: float
    rps: float
    dropped: int = 0
    last_error: str = ""

    @property
    def error_rate(self) -> float | None:
        """Share of requests that failed; None when nothing was sent."""
        return self.errors / self.requests if self.requests else None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (operation log, artifacts)."""
        rate = self.error_rate
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": None if rate is None else round(rate, 6),
            "p95_latency_s": None if self.p95_latency_s is None else round(self.p95_latency_s, 4),
            "duration_s": round(self.duration_s, 2),
            "rps": self.rps,
            "dropped": self.dropped,
            "last_error": self.last_error,
        }

    def describe(self) -> str:
        """One line for logs and the review form."""
        rate = self.error_rate
        shown_rate = "n/a" if rate is None else f"{rate:.2%}"
        p95 = "n/a" if self.p95_latency_s is None else f"{self.p95_latency_s:.3f}s"
        text = (
            f"{self.requests} requests in {self.duration_s:.1f}s, {self.errors} errors "
            f"(error rate {shown_rate}), p95 {p95}"
        )
        return text + (f"; last error: {self.last_error}" if self.last_error else "")


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize_probe(
    statuses: Sequence[int | None],
    latencies_s: Sequence[float],
    duration_s: float,
    rps: float,
    dropped: int = 0,
    last_error: str = "",
) -> ProbeSummary:
    """Summarise the probe's observations: ``None`` status means no answer (an error)."""
    errors = sum(1 for status in statuses if status is None or status >= 500)
    return ProbeSummary(
        requests=len(statuses),
        errors=errors,
        p95_latency_s=percentile(latencies_s, 95),
        duration_s=duration_s,
        rps=rps,
        dropped=dropped,
        last_error=last_error,
    )


def bake_action(verdict: Verdict) -> BakeAction:
    """Pass keeps the release, fail rolls back at once, inconclusive asks a person."""
    if verdict == PASS:
        return "keep"
    if verdict == FAIL:
        return "roll back"
    return "ask"


@dataclass(frozen=True)
class BakeReview:
    """A person's answer to an inconclusive bake."""

    approve: bool
    approver: str
    reason: str = ""


@dataclass(frozen=True)
class ReviewOutcome:
    """Keep the release or roll it back, and why (for the operation log)."""

    keep: bool
    why: str
    #: Who decided (None when nobody answered in time).
    approver: str | None = None


def review_outcome(review: BakeReview | None, timeout_s: float) -> ReviewOutcome:
    """What an answer to the review means: only a named approval keeps the release."""
    if review is None:
        return ReviewOutcome(False, f"nobody reviewed the inconclusive bake within {timeout_s:g}s")
    who = review.approver.strip()
    because = f": {review.reason.strip()}" if review.reason.strip() else ""
    if not who:
        return ReviewOutcome(False, "an answer without the approver's name does not keep it")
    if review.approve:
        return ReviewOutcome(True, f"inconclusive bake accepted by {who}{because}", who)
    return ReviewOutcome(False, f"inconclusive bake rejected by {who}{because}", who)
