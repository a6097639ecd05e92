"""Verification decisions: smoke-check and bake-measurement verdicts against thresholds.

Pure functions on frozen dataclasses. Every judgement keeps the measured value and the
threshold it was held against; a value that could not be measured is ``inconclusive``,
never a pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from opsflows.errors import ConfigurationError
from opsflows.thresholds import THRESHOLDS

Verdict = Literal["pass", "fail", "inconclusive"]
PASS: Verdict = "pass"
FAIL: Verdict = "fail"
INCONCLUSIVE: Verdict = "inconclusive"


class Judged(Protocol):
    """Anything with a name and a verdict (smoke results and measurements)."""

    @property
    def name(self) -> str: ...

    @property
    def verdict(self) -> Verdict: ...


def worst(verdicts: Sequence[Verdict]) -> Verdict:
    """``fail`` beats ``inconclusive`` beats ``pass``; nothing judged is ``inconclusive``."""
    if not verdicts:
        return INCONCLUSIVE
    if FAIL in verdicts:
        return FAIL
    return INCONCLUSIVE if INCONCLUSIVE in verdicts else PASS


@dataclass(frozen=True)
class Measurement:
    """One measured value and the threshold it was judged against."""

    name: str
    value: float | None
    threshold: float
    comparison: Literal["<=", ">=", "=="]
    verdict: Verdict
    detail: str = ""

    def describe(self) -> str:
        shown = "no data" if self.value is None else f"{self.value:g}"
        extra = f" ({self.detail})" if self.detail else ""
        return (
            f"{self.name} = {shown} (threshold {self.comparison} {self.threshold:g}): "
            f"{self.verdict}{extra}"
        )


def judge(
    name: str,
    value: float | None,
    threshold: float,
    comparison: Literal["<=", ">=", "=="] = "<=",
    detail: str = "",
) -> Measurement:
    """Judge ``value`` against ``threshold``; no value is ``inconclusive``."""
    if value is None:
        return Measurement(name, None, threshold, comparison, INCONCLUSIVE, detail or "no data")
    ok = {
        "<=": value <= threshold,
        ">=": value >= threshold,
        "==": value == threshold,
    }[comparison]
    return Measurement(name, value, threshold, comparison, PASS if ok else FAIL, detail)


# -- smoke checks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SmokeCheck:
    """One HTTP check: GET ``path`` answers ``expect_status`` (with ``body_contains``) in time."""

    path: str = "/health"
    expect_status: int = 200
    body_contains: str | None = None
    max_latency_s: float = 2.0

    @property
    def name(self) -> str:
        return f"GET {self.path}"


DEFAULT_SMOKE_CHECKS = (
    SmokeCheck("/health", 200, '"ok"'),
    SmokeCheck("/", 200, "hello"),
)


def validate_smoke_checks(checks: Sequence[SmokeCheck] | None) -> tuple[SmokeCheck, ...]:
    """The checks to run (the defaults when none are given), each validated."""
    chosen = tuple(checks) if checks else DEFAULT_SMOKE_CHECKS
    for check in chosen:
        if not check.path.startswith("/"):
            raise ConfigurationError(f"smoke check path {check.path!r} must start with '/'")
        if not 100 <= check.expect_status <= 599:
            raise ConfigurationError(f"smoke check {check.name}: status {check.expect_status}?")
        if check.max_latency_s <= 0:
            raise ConfigurationError(f"smoke check {check.name}: max_latency_s must be > 0")
    return chosen


@dataclass(frozen=True)
class HttpObservation:
    """What one request saw (``status`` None when nothing answered)."""

    status: int | None
    latency_s: float | None = None
    body: str = ""
    error: str | None = None


@dataclass(frozen=True)
class SmokeResult:
    """A smoke check's verdict with what was expected and what was seen."""

    name: str
    verdict: Verdict
    expected: str
    measured: str
    attempts: int = 1

    @property
    def passed(self) -> bool:
        return self.verdict == PASS


def evaluate_smoke(check: SmokeCheck, seen: HttpObservation, attempts: int = 1) -> SmokeResult:
    """Judge one observation against one check: status, then body, then latency."""
    expected = f"status {check.expect_status}"
    if check.body_contains is not None:
        expected += f", body contains {check.body_contains!r}"
    expected += f", latency <= {check.max_latency_s:g}s"
    if seen.status is None:
        measured = f"no answer: {seen.error or 'unknown error'}"
        return SmokeResult(check.name, FAIL, expected, measured, attempts)
    latency = f"{seen.latency_s:.3f}s" if seen.latency_s is not None else "unknown"
    measured = f"status {seen.status}, latency {latency}"
    ok = seen.status == check.expect_status
    if ok and check.body_contains is not None and check.body_contains not in seen.body:
        ok, measured = False, measured + f", body lacks {check.body_contains!r}"
    if ok and (seen.latency_s is None or seen.latency_s > check.max_latency_s):
        ok = False
    return SmokeResult(check.name, PASS if ok else FAIL, expected, measured, attempts)


# -- bake measurements ------------------------------------------------------------------------


@dataclass(frozen=True)
class BakeThresholds:
    """What production must hold during the bake (runbook: 0.5% errors, p95 2 s)."""

    error_rate: float = THRESHOLDS.error_rate
    p95_latency_s: float = THRESHOLDS.p95_latency_s
    max_restarts: int = 0


@dataclass(frozen=True)
class BakeSample:
    """The raw values of one bake round; None where nothing could be measured."""

    health_status: int | None
    error_rate: float | None
    p95_latency_s: float | None
    ready: int | None
    desired: int
    restarts: int | None
    notes: tuple[tuple[str, str], ...] = ()


def judge_sample(sample: BakeSample, limits: BakeThresholds) -> tuple[Measurement, ...]:
    """Every measurement of one bake round, each with its threshold.

    Health that does not answer is a failure (the service is down, which is a result);
    a metric Prometheus has no data for, or could not be asked about, is inconclusive.
    """
    notes = dict(sample.notes)
    health = (
        judge("health", float(sample.health_status), 200, "==", notes.get("health", ""))
        if sample.health_status is not None
        else Measurement("health", None, 200, "==", FAIL, notes.get("health", "no answer"))
    )
    return (
        health,
        judge(
            "error_rate", sample.error_rate, limits.error_rate, "<=", notes.get("error_rate", "")
        ),
        judge(
            "p95_latency_s",
            sample.p95_latency_s,
            limits.p95_latency_s,
            "<=",
            notes.get("p95_latency_s", ""),
        ),
        judge(
            "ready_replicas",
            None if sample.ready is None else float(sample.ready),
            float(sample.desired),
            ">=",
            notes.get("ready_replicas", ""),
        ),
        judge(
            "restarts",
            None if sample.restarts is None else float(sample.restarts),
            float(limits.max_restarts),
            "<=",
            notes.get("restarts", ""),
        ),
    )


def bake_verdict(rounds: Sequence[Sequence[Measurement]]) -> Verdict:
    """The bake's verdict: any failure fails it; any missing data leaves it inconclusive."""
    if not rounds:
        return INCONCLUSIVE
    return worst([m.verdict for measurements in rounds for m in measurements])
