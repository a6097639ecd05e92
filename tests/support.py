"""Helpers shared by the service-backed tiers: read what a flow run left in Prefect, and count
the faults a test injects by hand."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogHandler

from devstack import faultcount

REPO = Path(__file__).resolve().parents[1]


def child_report(
    args: list[str], *, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> Any:
    """Run ``python <args>`` in the repository; the JSON its last line of output holds.

    A child that fails fails the test with the end of its stderr.
    """
    done = subprocess.run(
        [sys.executable, *args],
        input=stdin,
        cwd=REPO,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def count_fault(kind: str, n: int = 1) -> None:
    """Count a fault the test injected itself (``"kill"``: a process it killed; the fault
    proxies and the simulator count theirs). The reliability tier reports the totals."""
    faultcount.record(kind, n)


def flow_run_id(state: Any) -> UUID:
    """The flow run id of a ``return_state=True`` result."""
    return UUID(str(state.state_details.flow_run_id))


def flow_run_logs(run_id: UUID, timeout_s: float = 15.0) -> list[str]:
    """Every log message the run (and its tasks) sent to the API, all pages of them.

    Logs are shipped in the background: wait (on the condition, not a fixed sleep) until the
    engine's final "Finished in state" line has arrived, so nothing the run logged is missed.
    """
    APILogHandler().flush()
    deadline = time.monotonic() + timeout_s
    while True:
        messages = _all_logs(run_id)
        if any("Finished in state" in m for m in messages) or time.monotonic() > deadline:
            return messages
        time.sleep(0.2)


def _all_logs(run_id: UUID, page: int = 200) -> list[str]:
    messages: list[str] = []
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                limit=page,
                offset=len(messages),
            )
            messages += [log.message for log in logs]
            if len(logs) < page:
                return messages


def flow_run_artifacts(run_id: UUID, page: int = 200) -> list[str]:
    """Every artifact of the run, as text (key, description, data), all pages of them."""
    texts: list[str] = []
    with get_client(sync_client=True) as client:
        while True:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])),
                limit=page,
                offset=len(texts),
            )
            texts += [f"{a.key} {a.description} {a.data}" for a in artifacts]
            if len(artifacts) < page:
                return texts


def flow_run_texts(run_id: UUID) -> list[str]:
    """Logs and artifacts of a run, for secret scans."""
    return flow_run_logs(run_id) + flow_run_artifacts(run_id)


def assert_no_secret(texts: Iterable[str], secret_values: Iterable[str]) -> None:
    """Fail if any secret value appears in any of ``texts``."""
    values = [v for v in secret_values if v]
    assert values, "no secret values given to scan for"
    for text in texts:
        for value in values:
            assert value not in text, f"a secret value leaked into: {text[:120]!r}"


def oplog_row(stack: Any, run_id: UUID | str) -> dict[str, Any]:
    """The ``ops_log`` row a flow run wrote (as a dict of its columns)."""
    import psycopg

    from devstack import stack as devstack

    password = devstack.stack_secrets(Path(stack.state_dir))["opsflows"]
    with psycopg.connect(
        host=stack.host,
        port=stack.postgres_port,
        dbname="opsflows",
        user="opsflows",
        password=password,
    ) as conn:
        cur = conn.execute("SELECT * FROM ops_log WHERE flow_run_id = %s", (str(run_id),))
        row = cur.fetchone()
        names = [c.name for c in cur.description or ()]
    assert row is not None, "the run wrote no operation-log row"
    return dict(zip(names, row, strict=True))
