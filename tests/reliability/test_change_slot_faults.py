"""A change that loses its slot stops before another change can take it (issue 12, item 6).

The change runs in a subprocess whose Prefect API goes through a fault proxy. Once it holds
``change-<env>``, the proxy refuses every lease renewal (an API outage longer than the lease,
for this client only). The server takes the slot back when the lease runs out; the test,
acting as a second change, waits for the slot. The first change must have stopped (at a safe
point, with ``ChangeSlotLost``) before the second one got the slot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from prefect.client.orchestration import get_client
from prefect.concurrency._sync import (
    acquire_concurrency_slots_with_lease,
    release_concurrency_slots_with_lease,
)

from devstack.faultproxy import FaultProxy, Rule
from devstack.stack import StackInfo
from tests.support import oplog_row

REPO = Path(__file__).resolve().parents[2]
LEASE_S = 60  # the shortest lease Settings allow


@pytest.fixture
def environment(bootstrapped: object) -> Iterator[str]:
    name = f"slottest-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(f"change-{name}", 1)
    yield name
    with get_client(sync_client=True) as client:
        client.delete_global_concurrency_limit_by_name(f"change-{name}")


def test_a_change_that_lost_its_slot_stops_before_another_change_takes_it(
    stack: StackInfo, environment: str
) -> None:
    parts = urlsplit(stack.prefect_api_url)
    with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 80) as proxy:
        env = {
            **os.environ,
            **stack.client_env(),
            "PREFECT_API_URL": proxy.url + "/api",
            "PREFECT_CLIENT_MAX_RETRIES": "1",
            "OPSFLOWS_CHANGE_LEASE_S": str(LEASE_S),
        }
        first = subprocess.Popen(
            [sys.executable, "-m", "tests.slot_support", environment],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert first.stdout is not None
        try:
            lines = iter(first.stdout.readline, "")
            assert any(line.strip() == "acquired" for line in lines), "the change never started"
            proxy.add(Rule("503", method="POST", contains="/renew"))
            second: dict[str, float] = {}

            def take_the_slot() -> None:
                lease = acquire_concurrency_slots_with_lease(
                    [f"change-{environment}"], 1, timeout_seconds=200, lease_duration=LEASE_S
                )
                second["acquired_at"] = time.time()
                release_concurrency_slots_with_lease(lease.lease_id)

            waiter = threading.Thread(target=take_the_slot, daemon=True)
            waiter.start()
            out, _ = first.communicate(timeout=LEASE_S * 4)
            waiter.join(timeout=LEASE_S * 3)
        finally:
            first.kill()
    printed = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    stopped = [p["stopped_at"] for p in printed if "stopped_at" in p]
    end = printed[-1]
    assert end["type"] == "FAILED", end
    assert "lost the change-" in end["message"], end["message"]
    assert proxy.count("503") >= 1, "renewals were refused"
    assert "acquired_at" in second, "the slot was never given back"
    assert stopped, "the change never reached a safe point that noticed the lost slot"
    assert stopped[0] < second["acquired_at"], "the first change still ran when the second began"
    row = oplog_row(stack, end["run"])
    assert row["status"] == "failed" and "ChangeSlotLost" in row["issues"]
    assert row["impact"].startswith(f"{environment} may have changed")
