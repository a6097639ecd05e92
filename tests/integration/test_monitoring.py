"""The stack's monitoring: exporters scraped, rules loaded, an alert through to Alertmanager.

Against the test stack (started by ``make test-stack`` with TEST_ENV, or by the session
fixture with the same settings: rules' ``for:`` capped at 5 s, group_wait 1 s).
"""

from __future__ import annotations

import json
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from devstack import stack as devstack
from devstack import tlsendpoint
from devstack.exporters import MONITOR_ROLE
from devstack.stack import StackInfo
from opsflows.settings import Settings

JOBS = ("web-app", "node", "postgres", "blackbox-http", "blackbox-tls", "alertmanager")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.5)


def query(info: StackInfo, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{info.prometheus_url}/api/v1/query", params={"query": expr}, timeout=5)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def test_every_monitoring_service_runs_and_is_in_status(stack: StackInfo) -> None:
    status = devstack.status(Settings())
    for name in devstack.MONITORING:
        assert status[name].startswith("running"), (name, status[name])
    assert status["tls-endpoint"] == f"running on {stack.tls_url}"
    stored = json.loads((Path(stack.state_dir) / "stack.json").read_text())
    for key in ("node_exporter_port", "postgres_exporter_port", "blackbox_port"):
        assert stored[key] == getattr(stack, key) > 0
    assert stored["alertmanager_port"] == stack.alertmanager_port > 0
    assert stored["alert_webhook_url"] == f"http://{stack.host}:{stack.webhook_port}/alertmanager"
    env = (Path(stack.state_dir) / "env").read_text()
    assert f"OPSFLOWS_ALERTMANAGER_PORT={stack.alertmanager_port}" in env


def test_prometheus_scrapes_every_target_up(stack: StackInfo) -> None:
    def all_up() -> bool:
        up = {(r["metric"]["job"], r["metric"]["env"]) for r in query(stack, "up == 1")}
        return {job for job, _ in up} >= set(JOBS)

    wait_for(all_up, 30, "every scrape job up")
    targets = httpx.get(f"{stack.prometheus_url}/api/v1/targets").json()["data"]["activeTargets"]
    for target in targets:
        assert target["health"] == "up", target
    probes = {r["metric"]["instance"]: r["value"][1] for r in query(stack, "probe_success")}
    assert probes == {
        f"{stack.app_url('staging')}/health": "1",
        f"{stack.app_url('production')}/health": "1",
        f"{stack.tls_url}/": "1",
    }


def test_the_exporters_report_what_the_runbooks_need(stack: StackInfo) -> None:
    for expr in (
        'node_cpu_seconds_total{mode="idle"}',
        "node_memory_MemAvailable_bytes",
        "node_filesystem_avail_bytes",
        "pg_stat_activity_count",
        "pg_stat_activity_max_tx_duration",
        "pg_locks_count",
        'pg_database_size_bytes{datname="app"}',
        "pg_stat_database_numbackends",
        "sampleapp_request_queue",
        "sampleapp_db_pool_in_use",
        "sampleapp_volume_size_bytes",
        "probe_duration_seconds",
    ):
        wait_for(lambda e=expr: query(stack, e), 30, expr)  # type: ignore[misc]
    (days,) = query(stack, "(probe_ssl_earliest_cert_expiry - time()) / 86400")
    assert float(days["value"][1]) > 30


def test_postgres_exporter_uses_its_own_monitoring_role(stack: StackInfo) -> None:
    secrets = devstack.stack_secrets(Path(stack.state_dir))
    admin = {"host": stack.host, "port": stack.postgres_port, "dbname": "postgres"}
    with psycopg.connect(**admin, user="postgres", password=secrets["postgres"]) as conn:
        roles = conn.execute(
            "SELECT b.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member"
            " JOIN pg_roles b ON b.oid = m.roleid WHERE r.rolname = %s",
            (MONITOR_ROLE,),
        ).fetchall()
        rolpassword = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (MONITOR_ROLE,)
        ).fetchone()
    assert ("pg_monitor",) in roles
    assert rolpassword is not None and str(rolpassword[0]).startswith("SCRAM-SHA-256$")
    pass_file = stack.service_root / "postgres_exporter" / "password"
    assert stat.S_IMODE(pass_file.stat().st_mode) == 0o600
    for name in ("env", "stack.json"):
        assert secrets["monitor"] not in (Path(stack.state_dir) / name).read_text()
    log = (Path(stack.state_dir) / "logs" / "postgres-exporter.log").read_text()
    assert secrets["monitor"] not in log


@pytest.fixture
def backup_rows(stack: StackInfo) -> Iterator[Callable[[str, datetime, str], None]]:
    """Insert backup entries of a database into ``ops_log`` (removed afterwards)."""
    secrets = devstack.stack_secrets(Path(stack.state_dir))
    conninfo = {
        "host": stack.host,
        "port": stack.postgres_port,
        "dbname": "opsflows",
        "user": "opsflows",
        "password": secrets["opsflows"],
    }
    ids: list[int] = []

    def add(status: str, finished: datetime, database: str) -> None:
        with psycopg.connect(**conninfo) as conn:
            row = conn.execute(
                "INSERT INTO ops_log (started_at, finished_at, operation, status, reason, impact,"
                " duration_s, issues, follow_up, details) VALUES (%s, %s, 'database backup', %s,"
                " 'test_monitoring', 'none', 1, '', '', %s) RETURNING id",
                (finished - timedelta(seconds=1), finished, status, Jsonb({"database": database})),
            ).fetchone()
            assert row is not None
            ids.append(int(row[0]))

    yield add
    with psycopg.connect(**conninfo) as conn:
        conn.execute("DELETE FROM ops_log WHERE id = ANY(%s)", (ids,))


def test_backup_status_comes_from_the_ops_log_per_database(
    stack: StackInfo, backup_rows: Callable[[str, datetime, str], None]
) -> None:
    """Each database has its own series: one whose newest run failed, or whose last good
    backup is old, shows it however fresh another database's backups are."""
    now = datetime.now(UTC)
    failing, stale, fresh = (f"mon-{uuid.uuid4().hex[:8]}-{n}" for n in ("a", "b", "c"))
    backup_rows("succeeded", now - timedelta(hours=1), failing)
    backup_rows("failed", now + timedelta(minutes=1), failing)  # the newest run failed
    backup_rows("succeeded", now - timedelta(hours=30), stale)
    backup_rows("succeeded", now, fresh)

    databases = (failing, stale, fresh)

    def snapshot() -> dict[tuple[str, str], float] | None:
        """Both gauges of the three databases from one query, once all six are there (a
        scrape that failed under load marks series stale: read them together, not one by
        one across scrapes)."""
        found = query(
            stack,
            '{__name__=~"opsflows_backup_last_run_failed|opsflows_backup_last_success_timestamp'
            f'_seconds",database=~"{"|".join(databases)}"}}',
        )
        values = {
            (s["metric"]["__name__"], s["metric"]["database"]): float(s["value"][1]) for s in found
        }
        return values if len(values) == 2 * len(databases) else None

    values = wait_for(snapshot, 30, "no series per database")
    failed = "opsflows_backup_last_run_failed"
    last = "opsflows_backup_last_success_timestamp_seconds"
    assert values[failed, failing] == 1
    assert values[last, failing] >= (now - timedelta(hours=1, seconds=5)).timestamp()
    for ok in (stale, fresh):
        assert values[failed, ok] == 0, ok
    assert values[last, stale] <= (now - timedelta(hours=29)).timestamp()


def rule_for_s(info: StackInfo, alert: str) -> float:
    groups = httpx.get(f"{info.prometheus_url}/api/v1/rules").json()["data"]["groups"]
    return max(float(r["duration"]) for g in groups for r in g["rules"] if r["name"] == alert)


def alertmanager_alerts(info: StackInfo, alertname: str) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = httpx.get(
        f"{info.alertmanager_url}/api/v2/alerts", params={"filter": f'alertname="{alertname}"'}
    ).json()
    return alerts


def test_an_expiring_certificate_fires_through_to_alertmanager(stack: StackInfo) -> None:
    """Prometheus -> Alertmanager with the real rule: a certificate that expires in 3 days."""
    wait_s = rule_for_s(stack, "CertificateExpiry")
    assert wait_s <= 30, "start the test stack with TEST_ENV (OPSFLOWS_ALERT_FOR_S=5)"
    folder = stack.tls_cert_file.parent
    tlsendpoint.issue(folder, stack.host, days=3)
    try:

        def paged() -> list[dict[str, Any]]:
            return [
                a
                for a in alertmanager_alerts(stack, "CertificateExpiry")
                if a["labels"]["severity"] == "P2"
            ]

        (alert,) = wait_for(paged, 60 + wait_s, "CertificateExpiry P2 in Alertmanager")
        assert alert["labels"]["runbook"] == "cert-expiry"
        assert alert["labels"]["environment"] == "production"
        assert alert["labels"]["instance"] == f"{stack.tls_url}/"
        assert alert["status"]["state"] == "active"
        assert [r["name"] for r in alert["receivers"]] == ["opsflows"]
    finally:
        tlsendpoint.issue(folder, stack.host, days=Settings().tls_cert_days)

    wait_for(lambda: not query(stack, 'ALERTS{alertname="CertificateExpiry"}'), 60, "resolved")


def test_the_token_file_is_private_and_matches_the_secret(stack: StackInfo) -> None:
    token_file = stack.alertmanager_token_file
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    secrets = devstack.stack_secrets(Path(stack.state_dir))
    assert token_file.read_text() == secrets["alertmanager_webhook"]
    config = (token_file.parent / "alertmanager.yml").read_text()
    assert secrets["alertmanager_webhook"] not in config
    assert str(token_file) in config
    assert stack.alert_webhook_url in config
    if os.geteuid() == 0:
        import pwd

        assert pwd.getpwuid(token_file.stat().st_uid).pw_name == Settings().os_user
