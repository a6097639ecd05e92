"""The capacity report end to end on the local stack, on 30 days of backfilled history.

The history (``devstack/backfill.py``, its default :class:`Profile`) has the disk at 60% of
the volume growing 1%/day and the connections at 120 of 200 growing 1/day: the report must
forecast 80% of the disk in 20 ± 2 days and 150 connections in 30 ± 3, with a row per
resource, a PNG per resource in the backup bucket and the image artifacts whose URLs load.
With Prometheus down the report is still published, with the missing rows saying so, and the
run fails naming them.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from blocks.kube import KubeEnvironment
from blocks.storage import BackupStore
from devstack.backfill import Profile
from devstack.stack import StackInfo
from flows.capacity_report import capacity_report
from procedures.operation import BACKUPS
from tests.capacity_support import TITLES, ensure_history, table_rows
from tests.support import flow_run_id, oplog_row

pytestmark = pytest.mark.usefixtures("bootstrapped")


def _artifacts(run_id: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        return list(
            client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
        )


@pytest.fixture(scope="module")
def history(stack: StackInfo) -> Profile:
    ensure_history(stack)
    return Profile()


def test_the_report_shows_every_resource_forecasts_and_charts(
    stack: StackInfo, history: Profile
) -> None:
    state = capacity_report(return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    run_id = flow_run_id(state)

    rows = {r["Resource"]: r for r in result["rows"]}
    assert list(rows) == TITLES
    for row in rows.values():
        assert row["Current"] != "n/a" and row["Capacity"] != "n/a", row
        assert row["trend 30d"] != "n/a", row
    # the synthetic trends, forecast back
    disk_days = (0.80 - history.disk_now) / history.disk_per_day
    assert result["forecasts"]["disk"] == pytest.approx(disk_days, abs=2)
    conn_days = (150 - history.connections_now) / history.connections_per_day
    assert result["forecasts"]["connections"] == pytest.approx(conn_days, abs=3)
    assert "grow the volume by" in rows["Disk"]["note"]
    assert "raise the connection pool" in rows["Database Connections"]["note"]
    # CPU grows 0.4 points a day from 35%: past the horizon
    assert rows["CPU"]["forecast"] == "not within 90 days"

    # the table artifact, in the runbook's shape, linking each query's graph
    artifacts = _artifacts(run_id)
    (table,) = [a for a in artifacts if a.key == "capacity-report"]
    published = table_rows(table)
    assert [r["Resource"] for r in published] == TITLES
    assert list(published[0])[:5] == ["Resource", "Current", "Capacity", "Utilization", "note"]
    for row in published[:-1]:  # the backup store is an S3 listing, not a query
        assert row["graph"].startswith(f"{stack.prometheus_url}/graph?g0.expr="), row
        assert httpx.get(row["graph"], timeout=10, follow_redirects=True).status_code == 200

    # a PNG per resource in the bucket, and an image artifact per resource that loads
    store = BackupStore.load(BACKUPS)
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    keys = {o["Key"] for o in _listing(store, f"reports/capacity/{date}/")}
    names = ["cpu", "memory", "disk", "connections", "request_rate", "db_size", "backup_store"]
    assert {f"reports/capacity/{date}/{n}.png" for n in names} <= keys
    images = {a.key: a for a in artifacts if a.type == "image"}
    assert set(images) == {f"capacity-{n.replace('_', '-')}" for n in names}
    for image in images.values():
        response = httpx.get(str(image.data), timeout=10)
        assert response.status_code == 200
        assert response.content[:8] == b"\x89PNG\r\n\x1a\n"

    entry = oplog_row(stack, run_id)
    assert entry["status"] == "succeeded" and entry["impact"].startswith("none")
    assert "Disk: grow the volume by" in entry["follow_up"]


def _listing(store: BackupStore, prefix: str) -> list[dict[str, Any]]:
    client = store.s3_client()
    return list(client.list_objects_v2(Bucket=store.bucket, Prefix=prefix).get("Contents", []))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_prometheus_down_publishes_a_partial_report_and_fails_naming_the_rows(
    stack: StackInfo,
) -> None:
    env = KubeEnvironment.load("production")
    env.prometheus_url = f"http://127.0.0.1:{_closed_port()}"
    env.save("capacity-prometheus-down", overwrite=True)
    try:
        state = capacity_report(environment="capacity-prometheus-down", return_state=True)
    finally:
        KubeEnvironment.delete("capacity-prometheus-down")
    assert state.is_failed()
    message = str(state.message)
    assert "partial" in message and "CPU" in message and "Database size" in message
    assert "Backup store" not in message
    (table,) = [a for a in _artifacts(flow_run_id(state)) if a.key == "capacity-report"]
    rows = {r["Resource"]: r for r in table_rows(table)}
    assert list(rows) == TITLES
    for title in TITLES[:-1]:
        assert rows[title]["note"].startswith("missing: "), rows[title]
        assert "Prometheus" in rows[title]["note"] and rows[title]["Current"] == "n/a"
    assert rows["Backup store"]["Current"] != "n/a"
    entry = oplog_row(stack, flow_run_id(state))
    assert entry["status"] == "failed"
    assert "rows without data: CPU, Memory, Disk" in entry["issues"]
