"""Writing the operation log never changes a run's outcome (issue 12, item 4).

The run executes in a subprocess whose Prefect API goes through a fault proxy: the proxy
refuses only artifact writes, as an API that is down at the moment the log is written would.
The ops database is made unreachable with a block pointing at a closed port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from prefect.client.orchestration import get_client

from blocks.postgres import PostgresTarget
from devstack.faultproxy import FaultProxy, Rule
from devstack.stack import StackInfo
from tests.oplog_support import REAL_ERROR
from tests.support import count_fault, flow_run_artifacts, oplog_row

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def api_proxy(stack: StackInfo) -> Iterator[FaultProxy]:
    parts = urlsplit(stack.prefect_api_url)
    with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 80) as made:
        yield made


@pytest.fixture
def dead_ops_db(bootstrapped: object) -> str:
    """A PostgresTarget block that points at a port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = "ops-db-unreachable"
    PostgresTarget(
        host="127.0.0.1", port=port, database="opsflows", user="nobody", password="unused"
    ).save(name, overwrite=True)
    count_fault("unreachable")
    return name


def run_probe(stack: StackInfo, api_url: str, *, fail: bool, ops_db: str) -> dict[str, Any]:
    env = {
        **os.environ,
        **stack.client_env(),
        "PREFECT_API_URL": api_url,
        "PREFECT_CLIENT_MAX_RETRIES": "1",  # a refused write fails in seconds, not minutes
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.oplog_support", "fail" if fail else "ok", ops_db],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"the probe printed no result: {done.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def final_state(run_id: str) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state


def refuse_artifacts(proxy: FaultProxy) -> None:
    proxy.add(Rule("503", method="POST", contains="/artifacts/"))


def test_api_down_at_log_time_keeps_a_success_and_still_writes_the_row(
    stack: StackInfo, bootstrapped: object, api_proxy: FaultProxy
) -> None:
    refuse_artifacts(api_proxy)
    result = run_probe(stack, api_proxy.url + "/api", fail=False, ops_db="ops-db")
    assert api_proxy.count("503") >= 1, "the artifact write was refused"
    assert result["type"] == "COMPLETED"
    assert final_state(result["run"]).type.value == "COMPLETED"
    row = oplog_row(stack, result["run"])
    assert (row["status"], row["impact"]) == ("succeeded", "probe only")
    assert not [a for a in flow_run_artifacts(result["run"]) if a.startswith("oplog-")]


def test_api_down_at_log_time_does_not_hide_the_real_error(
    stack: StackInfo, bootstrapped: object, api_proxy: FaultProxy
) -> None:
    refuse_artifacts(api_proxy)
    result = run_probe(stack, api_proxy.url + "/api", fail=True, ops_db="ops-db")
    assert result["type"] == "FAILED"
    state = final_state(result["run"])
    assert REAL_ERROR in (state.message or ""), state.message
    row = oplog_row(stack, result["run"])
    assert row["status"] == "failed" and REAL_ERROR in row["issues"]


def test_ops_database_down_keeps_a_success_and_still_writes_the_artifact(
    stack: StackInfo, bootstrapped: object, dead_ops_db: str
) -> None:
    result = run_probe(stack, stack.prefect_api_url, fail=False, ops_db=dead_ops_db)
    assert result["type"] == "COMPLETED"
    logged = [a for a in flow_run_artifacts(result["run"]) if a.startswith("oplog-oplog-probe")]
    assert len(logged) == 1 and "| Status | succeeded |" in logged[0]
