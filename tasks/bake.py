"""The bake period: measure production every interval and judge it against the thresholds.

Each round measures health (``/health``), the 5xx share and p95 latency of ``/`` from
Prometheus, ready replicas and container restarts of the new pods, and judges every value
with :func:`decisions.deploy.judge_sample`. A value that cannot be measured is recorded as
inconclusive with the reason; the bake stops at the first failing round, and a bake with
rounds of missing data (but no failure) ends inconclusive.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from blocks.kube import KubeEnvironment
from decisions.bake_review import ProbeSummary
from decisions.deploy import (
    FAIL,
    PASS,
    BakeSample,
    BakeThresholds,
    Measurement,
    Verdict,
    bake_verdict,
    judge_sample,
    worst,
)
from opsflows import retry
from opsflows.errors import OpsError
from tasks.metrics import error_rate_query, p95_latency_query, query
from tasks.probes import probe
from tasks.rollout import rollout_status

MIN_WINDOW_S = 5


def window_for(since: float, now: float, max_window_s: float) -> str:
    """The PromQL range: the time since the release went out, within [5 s, max_window_s].

    Keeping the window inside the release's own lifetime stops traffic served by the
    previous release (good or bad) from being judged as this one's.
    """
    seconds = int(min(max_window_s, max(MIN_WINDOW_S, now - since)))
    return f"{seconds}s"


def limits_for(env: KubeEnvironment) -> BakeThresholds:
    """The bake thresholds of an environment block."""
    return BakeThresholds(
        error_rate=env.thresholds.error_rate, p95_latency_s=env.thresholds.p95_latency_s
    )


def _metric(prometheus_url: str, promql: str) -> tuple[float | None, str]:
    try:
        return query(prometheus_url, promql), ""
    except OpsError as exc:
        return None, f"query failed: {exc.message}"


def restart_count(env: KubeEnvironment) -> int:
    """Container restarts summed over the new pods (the bake's baseline)."""
    return sum(pod.restarts for pod in rollout_status(env).pods)


@task(name="bake measurement", **retry.ONCE)
def measure(
    env: KubeEnvironment,
    limits: BakeThresholds,
    since: float,
    restart_baseline: int,
    max_window_s: float = 30.0,
) -> list[Measurement]:
    """Measure production once and judge every value against its threshold.

    Args:
        env: The environment being baked.
        limits: Thresholds (error rate, p95 latency, restarts).
        since: Epoch seconds when the release went out (bounds the PromQL window).
        restart_baseline: Restarts of the new pods when the bake began.
        max_window_s: Longest PromQL range to judge rates over.
    """
    notes: list[tuple[str, str]] = []
    try:
        health = probe(env.service_url.rstrip("/") + "/health", timeout=limits.p95_latency_s * 2)
        health_status: int | None = int(health["status"])
    except OpsError as exc:
        health_status = None
        notes.append(("health", f"no answer: {exc.message}"))
    window = window_for(since, time.time(), max_window_s)
    error_rate, note = _metric(env.prometheus_url, error_rate_query(env.environment, window))
    if note:
        notes.append(("error_rate", note))
    p95, note = _metric(env.prometheus_url, p95_latency_query(env.environment, window))
    if note:
        notes.append(("p95_latency_s", note))
    ready: int | None = None
    restarts: int | None = None
    desired = 0
    try:
        status = rollout_status(env)
        ready, desired = status.ready, status.desired
        restarts = max(0, sum(p.restarts for p in status.pods) - restart_baseline)
    except OpsError as exc:
        notes.append(("ready_replicas", f"cannot read pods: {exc.message}"))
        notes.append(("restarts", f"cannot read pods: {exc.message}"))
    sample = BakeSample(health_status, error_rate, p95, ready, desired, restarts, tuple(notes))
    measurements = list(judge_sample(sample, limits))
    logger = get_run_logger()
    for m in measurements:
        logger.info("%s bake [%s window]: %s", env.environment, window, m.describe())
    return measurements


@dataclass(frozen=True)
class BakeRound:
    """One round of measurements and when it was taken (epoch seconds)."""

    at: float
    measurements: tuple[Measurement, ...]
    probe: ProbeSummary | None = None

    @property
    def verdict(self) -> Verdict:
        return worst([m.verdict for m in self.measurements])


@dataclass(frozen=True)
class BakeReport:
    """Every round of a bake and the overall verdict."""

    verdict: Verdict
    rounds: tuple[BakeRound, ...]

    @property
    def first_bad(self) -> BakeRound | None:
        """The first failing round, else the first inconclusive one (None when all passed)."""
        failed = next((r for r in self.rounds if r.verdict == FAIL), None)
        return failed or next((r for r in self.rounds if r.verdict != PASS), None)

    def reasons(self) -> list[str]:
        bad = self.first_bad
        if bad is None:
            return []
        return [m.describe() for m in bad.measurements if m.verdict != PASS]

    def real_traffic(self) -> dict[str, float | None]:
        """The last round's values as measured on the service (Prometheus, pods, health)."""
        if not self.rounds:
            return {}
        return {m.name: m.value for m in self.rounds[-1].measurements}

    @property
    def probe(self) -> ProbeSummary | None:
        """The synthetic probe's figures at the last round (None without a probe)."""
        return self.rounds[-1].probe if self.rounds else None

    def rows(self) -> list[dict[str, Any]]:
        """A table: one row per measurement, with its threshold and verdict.

        ``probe`` holds the synthetic probe's own client-side figure for the same quantity
        (cumulative up to that round), beside the real traffic's value from Prometheus.
        """
        return [
            {
                "round": i,
                "at": time.strftime("%H:%M:%S", time.gmtime(r.at)) + f".{int(r.at % 1 * 10)}",
                "epoch": round(r.at, 3),
                "measurement": m.name,
                "value": "no data" if m.value is None else round(m.value, 6),
                "threshold": f"{m.comparison} {m.threshold:g}",
                "verdict": m.verdict,
                "probe": _probe_figure(r.probe, m.name),
                "detail": m.detail,
            }
            for i, r in enumerate(self.rounds, start=1)
            for m in r.measurements
        ]


def _probe_figure(probe: ProbeSummary | None, name: str) -> str:
    if probe is None or name not in ("error_rate", "p95_latency_s"):
        return ""
    value = probe.error_rate if name == "error_rate" else probe.p95_latency_s
    shown = "no answer" if value is None else f"{value:.6g}"
    return f"{shown} ({probe.requests} requests)"


def wait_for_samples(
    env: KubeEnvironment, since: float, max_window_s: float, timeout_s: float
) -> float:
    """Wait until Prometheus has error-rate and p95 samples of the release; seconds waited.

    The probe's first requests need a scrape or two before ``rate()`` sees them. Gives up
    at ``timeout_s`` or when Prometheus cannot be asked (the bake then records why).
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        window = window_for(since, time.time(), max_window_s)
        try:
            values = [
                query(env.prometheus_url, error_rate_query(env.environment, window)),
                query(env.prometheus_url, p95_latency_query(env.environment, window)),
            ]
        except OpsError:
            break
        if all(v is not None for v in values):
            break
        time.sleep(0.5)
    return round(time.monotonic() - started, 2)


def run_bake(
    env: KubeEnvironment,
    limits: BakeThresholds,
    duration_s: float,
    interval_s: float,
    since: float,
    max_window_s: float = 30.0,
    measure_fn: Callable[..., list[Measurement]] = measure,
    on_round: Callable[[float], object] | None = None,
    probe_figures: Callable[[], ProbeSummary] | None = None,
) -> BakeReport:
    """Measure every ``interval_s`` for ``duration_s``; stop at the first failing round.

    The first round is taken at once; the last no later than ``duration_s``. A round with
    missing data does not stop the bake: later rounds may still fail it (a bad release whose
    samples were late) and the probe keeps sending for the whole window either way. ``on_round``
    is told the share of the bake done after each round (for a progress artifact);
    ``probe_figures`` gives the synthetic probe's figures so far, kept with each round.
    """
    try:
        baseline = restart_count(env)
    except OpsError:
        baseline = 0
    start = time.monotonic()
    rounds: list[BakeRound] = []
    while True:
        at = time.time()
        measured = measure_fn(env, limits, since, baseline, max_window_s)
        rounds.append(BakeRound(at, tuple(measured), probe_figures() if probe_figures else None))
        if rounds[-1].verdict == FAIL:
            break
        elapsed = time.monotonic() - start
        if on_round is not None:
            on_round(min(1.0, elapsed / duration_s) if duration_s > 0 else 1.0)
        if elapsed + interval_s > duration_s + 1e-6:
            break
        time.sleep(interval_s)
    verdict = bake_verdict([r.measurements for r in rounds])
    return BakeReport(verdict, tuple(rounds))
