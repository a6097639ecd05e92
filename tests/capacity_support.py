"""The capacity report's tests: backfilled history on the stack, and what a report left."""

from __future__ import annotations

import time
from typing import Any

import httpx

from decisions.capacity import RESOURCES
from devstack.backfill import INSTANCE, backfill_stack
from devstack.stack import StackInfo

TITLES = [r.title for r in RESOURCES.values()]
#: The backfilled series, two days back: there once Prometheus has loaded the blocks.
PROBE = (
    f'count(count_over_time(sampleapp_volume_used_bytes{{instance="{INSTANCE}"}}[1d] offset 2d))'
)


def ensure_history(stack: StackInfo, wait_s: float = 180.0) -> None:
    """Backfill 30 days (once a day; Prometheus is not restarted: others may use it) and wait
    until Prometheus has loaded the blocks (its periodic reload, about a minute)."""
    backfill_stack(days=30, restart=False)
    deadline = time.monotonic() + wait_s
    while True:
        response = httpx.get(
            f"{stack.prometheus_url}/api/v1/query", params={"query": PROBE}, timeout=10
        )
        if response.json()["data"]["result"]:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"Prometheus did not load the backfilled blocks in {wait_s}s")
        time.sleep(5)


def table_rows(artifact: Any) -> list[dict[str, str]]:
    import json

    data = artifact.data
    rows = json.loads(data) if isinstance(data, str) else data
    return list(rows)
