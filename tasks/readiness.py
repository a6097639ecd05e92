"""Whether a monitoring service answers its readiness endpoint (``/-/ready``), bounded."""

from __future__ import annotations

import httpx
from prefect import task

from opsflows import retry
from opsflows.errors import scrub

#: Seconds a readiness probe may take: a hung service is a finding, not a hung check.
READY_TIMEOUT_S = 5.0


@task(name="probe readiness", **retry.NETWORK)
def probe_ready(base_url: str, timeout_s: float = READY_TIMEOUT_S) -> tuple[int | None, str | None]:
    """``(status, None)`` of ``GET <base_url>/-/ready``, or ``(None, why)`` when it cannot be
    reached. Never raises: the caller judges either answer."""
    url = base_url.rstrip("/") + "/-/ready"
    try:
        return httpx.get(url, timeout=timeout_s).status_code, None
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__} {scrub(str(exc))}".strip()
