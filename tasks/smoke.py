"""HTTP smoke checks against a freshly rolled-out environment.

Right after a rollout the service may still route a few requests to the old pods (its
endpoints follow readiness a moment later). The deploy flow therefore first waits until the
service answers from the new image (:func:`verify_serving` with ``healthy=False``), so a
healthy old pod cannot pass a smoke test for a broken release. Each check is then retried for
a short window (a new pod warming up) and passes as soon as one attempt passes; a check still
failing when the window closes fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from decisions.deploy import (
    HttpObservation,
    SmokeCheck,
    SmokeResult,
    evaluate_smoke,
)
from opsflows import retry
from opsflows.errors import TransientError, VerificationFailed
from tasks.probes import probe

Prober = Callable[[str, float], HttpObservation]


def observe(url: str, timeout: float) -> HttpObservation:
    """GET ``url`` once; a transport failure is an observation with no status."""
    try:
        seen = probe(url, timeout=timeout)
    except TransientError as exc:
        return HttpObservation(status=None, error=exc.message)
    return HttpObservation(
        status=int(seen["status"]), latency_s=float(seen["latency_s"]), body=str(seen["body"])
    )


def check_until(
    base_url: str,
    check: SmokeCheck,
    deadline: float,
    interval_s: float,
    prober: Prober = observe,
) -> SmokeResult:
    """Run one check until it passes or the ``time.monotonic()`` deadline; the last result.

    A check always gets at least one attempt, even past the deadline.
    """
    url = base_url.rstrip("/") + check.path
    attempts = 0
    while True:
        attempts += 1
        result = evaluate_smoke(check, prober(url, max(check.max_latency_s * 2, 1.0)), attempts)
        if result.passed or time.monotonic() >= deadline:
            return result
        time.sleep(interval_s)


@task(name="smoke tests", **retry.ONCE)
def run_smoke_checks(
    base_url: str,
    checks: Sequence[SmokeCheck],
    retry_for_s: float = 10.0,
    interval_s: float = 0.5,
) -> list[SmokeResult]:
    """Run every smoke check against ``base_url``; each result says what was expected and seen.

    Args:
        base_url: The environment's service URL.
        checks: The HTTP checks (path, expected status, body match, latency limit).
        retry_for_s: How long after the start failing checks are retried (a window shared
            by all checks: the first seconds after the rollout).
        interval_s: Pause between attempts of one check.
    """
    logger = get_run_logger()
    deadline = time.monotonic() + retry_for_s
    results = []
    for check in checks:
        result = check_until(base_url, check, deadline, interval_s)
        logger.info(
            "smoke %s: %s (expected %s; saw %s; %d attempt(s))",
            result.name,
            result.verdict,
            result.expected,
            result.measured,
            result.attempts,
        )
        results.append(result)
    return results


@task(name="verify serving", **retry.ONCE)
def verify_serving(
    base_url: str,
    image: str,
    timeout_s: float = 30.0,
    consecutive: int = 5,
    interval_s: float = 0.2,
    healthy: bool = True,
) -> dict[str, Any]:
    """Wait until ``/health`` answers 200 from ``image`` on ``consecutive`` requests in a row.

    The service picks a ready pod per request, so several answers in a row from the expected
    image mean the old pods are out of rotation. With ``healthy=False`` any answer from
    ``image`` counts (only which release serves is checked).

    Raises:
        VerificationFailed: not healthy on ``image`` within ``timeout_s``.
    """
    url = base_url.rstrip("/") + "/health"
    started = time.monotonic()
    streak, last = 0, "nothing"
    while time.monotonic() - started < timeout_s:
        seen = observe(url, 5.0)
        served = _served_image(seen.body)
        if served == image and (seen.status == 200 or not healthy):
            streak += 1
            if streak >= consecutive:
                return {"image": image, "seconds": round(time.monotonic() - started, 2)}
        else:
            streak = 0
            last = f"status {seen.status or seen.error}, image {served or 'unknown'}"
        time.sleep(interval_s)
    raise VerificationFailed(
        f"{base_url} did not serve {image} healthily within {timeout_s:g}s (last: {last})",
        hint="look at the pods and the service; production may need a person",
    )


def _served_image(body: str) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return str(data.get("image")) if isinstance(data, dict) and data.get("image") else None
