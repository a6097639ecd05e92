"""Real faults through the whole alert pipeline: the app (or the database, or the operation
log) misbehaves, Prometheus' rule fires, Alertmanager posts the group to the receiver, and
exactly one incident opens with the severity and runbook the rule gives it.

Nothing here posts a notification by hand: every incident is opened by Alertmanager. The
test stack shortens every ``for:`` to 5 s and Alertmanager's group_wait to 1 s
(``OPSFLOWS_ALERT_*`` in the Makefile's TEST_ENV); paging delays are the tier's
(``conftest.INCIDENT_DELAYS``). These cases run on the ``serve`` path only: the incident runs
they start are the ones ``tests/served/test_incident_matrix.py`` proves on both paths.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb

from blocks.kube import KubeEnvironment
from devstack.stack import StackInfo
from tests.backup_support import admin_target
from tests.deploy_support import steady_load
from tests.incident_support import (
    close_leftovers,
    group_key,
    incident,
    incidents_of,
    ops_target,
    sink_messages,
    timeline,
    wait_for,
)
from tests.pitr_support import failing_archive
from tests.served_support import SERVE_ONLY, RunPath, assert_completed, load_block

#: The UI's Run button path this module runs on (the matrix covers both).


def open_incident(stack: StackInfo, key: str) -> Any:
    return [i for i in incidents_of(stack, key) if i.is_open]


def newest_id(stack: StackInfo) -> int:
    """The newest incident id so far (a case counts only the incidents after it)."""
    with psycopg.connect(ops_target(stack).conninfo()) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM incidents").fetchone()
    return int(row[0]) if row else 0


def incidents_after(stack: StackInfo, key: str, after: int) -> list[Any]:
    return [i for i in incidents_of(stack, key) if i.id > after]


def app_fault(stack: StackInfo, env: str, **body: Any) -> None:
    httpx.post(stack.app_url(env) + "/_sim/faults", json=body, timeout=10).raise_for_status()


@contextmanager
def app_faults_cleared(stack: StackInfo, env: str) -> Iterator[None]:
    try:
        yield
    finally:
        httpx.delete(stack.app_url(env) + "/_sim/faults", timeout=10).raise_for_status()


@contextmanager
def full_volume(stack: StackInfo, env: str, ratio: float) -> Iterator[None]:
    app = stack.app_url(env)
    httpx.post(app + "/_sim/volume", json={"ratio": ratio}, timeout=10).raise_for_status()
    try:
        yield
    finally:
        httpx.delete(app + "/_sim/volume", timeout=10).raise_for_status()


@contextmanager
def database_connections(stack: StackInfo, total: int) -> Iterator[int]:
    """Hold idle connections until PostgreSQL counts ``total`` backends; how many were opened.

    A connection leak as the runbook's threshold sees it (``pg_stat_database_numbackends``
    summed over the databases); kept just above the threshold so the stack's own clients
    (max_connections 200) still get theirs.
    """
    conninfo = ops_target(stack).conninfo()
    with psycopg.connect(conninfo) as probe:
        row = probe.execute("SELECT sum(numbackends) FROM pg_stat_database").fetchone()
    now = int(row[0]) if row and row[0] is not None else 0
    held: list[psycopg.Connection[Any]] = []
    try:
        for _ in range(max(total - now, 0)):
            held.append(psycopg.connect(conninfo, application_name="test_alert_chain leak"))
        yield len(held)
    finally:
        for conn in held:
            conn.close()


@contextmanager
def backup_history(stack: StackInfo, database: str, last_success: datetime) -> Iterator[None]:
    """A database whose newest good backup finished at ``last_success`` (ops_log rows)."""
    with psycopg.connect(ops_target(stack).conninfo()) as conn:
        row = conn.execute(
            "INSERT INTO ops_log (started_at, finished_at, operation, status, reason, impact,"
            " duration_s, issues, follow_up, details) VALUES (%s, %s, 'database backup',"
            " 'succeeded', 'test_alert_chain', 'none', 60, '', '', %s) RETURNING id",
            (last_success - timedelta(minutes=1), last_success, Jsonb({"database": database})),
        ).fetchone()
        assert row is not None
    try:
        yield
    finally:
        with psycopg.connect(ops_target(stack).conninfo()) as conn:
            conn.execute("DELETE FROM ops_log WHERE id = %s", (row[0],))


#: alertname, environment -> (severity, runbook) the rules give it (RUNBOOK.md's table).
EXPECTED = {
    ("HighErrorRate", "staging"): ("P2", "service-down"),
    ("VolumeFull", "staging"): ("P2", "disk-full"),
    ("HighLatencyP95", "production"): ("P2", "service-down"),
    ("DatabaseConnectionsHigh", "production"): ("P2", "database-slow"),
    ("BackupTooOld", "production"): ("P3", "backup-failed"),
    ("WalArchiveFailing", "production"): ("P2", "backup-failed"),
}


@SERVE_ONLY
def test_each_threshold_alert_opens_exactly_one_incident(runpath: RunPath, webhook: str) -> None:
    """Error rate, p95 latency, a full disk, too many database connections, a stale backup
    and failing WAL archiving, all at once: each opens one incident of its own, with its
    severity and runbook, and each closes when its fault is gone and Alertmanager resolves
    the group."""
    stack, api = runpath.stack, runpath.api
    keys = {group_key(name, env): expected for (name, env), expected in EXPECTED.items()}
    for key in keys:
        close_leftovers(stack, key)
    before = newest_id(stack)
    stale_db = f"stale-{uuid.uuid4().hex[:8]}"
    opened: dict[str, Any] = {}
    with ExitStack() as faults:
        faults.enter_context(steady_load(stack.app_url("staging") + "/", rps=10))
        faults.enter_context(app_faults_cleared(stack, "staging"))
        app_fault(stack, "staging", fault="errors", error_rate=0.5)  # P2: >= 5% fail
        faults.enter_context(full_volume(stack, "staging", ratio=0.9))
        faults.enter_context(app_faults_cleared(stack, "production"))
        app_fault(stack, "production", fault="slow")  # ~2.5 s per request: p95 > 2 s
        held = faults.enter_context(database_connections(stack, total=156))
        assert held > 0
        faults.enter_context(
            backup_history(stack, stale_db, datetime.now(UTC) - timedelta(hours=30))
        )
        faults.enter_context(failing_archive(admin_target(stack).conninfo()))  # S3 refuses
        for key in keys:
            opened[key] = wait_for(partial(open_incident, stack, key), 240, f"no {key}")[0]
        # The faults last until the P2s are paged (after the tier's shortened delay, unless
        # acknowledged); Alertmanager regroups and repeats meanwhile: still one each.
        for found in opened.values():
            if found.severity == "P2":
                marker = f"incident {found.id}: "
                wait_for(partial(sink_messages, stack, "page", marker), 90, f"no page: {marker}")
    for key, (severity, runbook) in keys.items():
        found_all = incidents_after(stack, key, before)
        assert len(found_all) == 1, f"{key}: {len(found_all)} incidents"
        (only,) = found_all
        assert (only.source, only.severity, only.runbook) == ("alertmanager", severity, runbook)
        assert only.environment == key.split('environment="')[1].rstrip('"}')
    stale = incident(stack, opened[group_key("BackupTooOld", "production")].id).alerts
    assert any(a["labels"].get("database") == stale_db for a in stale), stale

    backup_key = group_key("BackupTooOld", "production")

    def ours_resolved(found: Any) -> bool:
        now = incident(stack, found.id)
        if not now.is_open:
            return True
        # The stale-backup group also holds every other database whose last good backup is
        # old (after the reliability tier: databases whose backups were all killed), and it
        # rightly stays open for them: ours must be reported resolved inside it.
        mine = [a for a in now.alerts if a["labels"].get("database") == stale_db]
        return found.group_key == backup_key and all(a["status"] == "resolved" for a in mine)

    wait_for(
        lambda: all(ours_resolved(i) for i in opened.values()),
        240,
        "Alertmanager did not resolve every fault's alert",
    )
    for found in opened.values():
        closed = incident(stack, found.id)
        if closed.is_open:  # the backup group, open for other databases (see above)
            others = {a["labels"].get("database") for a in closed.alerts} - {stale_db}
            assert found.group_key == backup_key and others, closed
            continue
        assert closed.resolved_by == "alertmanager", closed
        assert closed.flow_run_id is not None
        assert_completed(api.wait(closed.flow_run_id, timeout=120), runpath.log)
        assert len(incidents_after(stack, found.group_key, before)) == 1
        if closed.severity == "P2":  # told once in #incidents, not once per run that woke
            told = [e for e in timeline(stack, found.id) if e.kind == "announced"]
            assert sum("resolved" in e.text for e in told) == 1, told


@contextmanager
def production_outage(stack: StackInfo) -> Iterator[str]:
    """A release that crash-loops under the Recreate strategy: every old pod is stopped,
    no new pod gets Ready, production answers 503. Puts the image and strategy back."""
    env = load_block(KubeEnvironment, "production")
    url = f"{stack.kube_url}/apis/apps/v1/namespaces/{env.namespace}/deployments/{env.deployment}"
    before = httpx.get(url, timeout=10).json()
    image = next(
        c["image"]
        for c in before["spec"]["template"]["spec"]["containers"]
        if c["name"] == env.container
    )
    strategy = before["spec"].get("strategy") or {"type": "RollingUpdate"}
    broken = f"{image.rsplit(':', 1)[0]}:outage-{uuid.uuid4().hex[:6]}-crashloop"

    def patch(body: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/strategic-merge-patch+json"}
        httpx.patch(url, json=body, headers=headers, timeout=10).raise_for_status()

    def template(img: str) -> dict[str, Any]:
        return {"spec": {"containers": [{"name": env.container, "image": img}]}}

    patch(
        {
            "spec": {
                "strategy": {"type": "Recreate", "rollingUpdate": None},
                "template": template(broken),
            }
        }
    )
    try:
        yield image
    finally:
        patch({"spec": {"strategy": strategy, "template": template(image)}})


@SERVE_ONLY
def test_a_production_outage_pages_escalates_and_closes(runpath: RunPath, webhook: str) -> None:
    """Pods crash-looping take production down while another change holds production's
    change slot (so a service-down triage runbook would wait for it: the people are on their
    own):
    ServiceDown fires through Prometheus and Alertmanager, one P1 incident opens, the on-call
    is paged and #incidents told at once, nobody acknowledges so the secondary is paged after
    the (shortened) delay; the on-call's acknowledgement through the UI's resume call stops
    the escalation before the lead; the good image back, production answers, Alertmanager
    resolves the incident and the post-mortem draft exists."""
    from prefect.concurrency.sync import concurrency

    stack, api = runpath.stack, runpath.api
    key = group_key("ServiceDown", "production")
    close_leftovers(stack, key)
    before = newest_id(stack)
    with (
        concurrency("change-production", occupy=1, strict=True),
        production_outage(stack) as good_image,
    ):
        found = wait_for(lambda: open_incident(stack, key), 180, "no incident")[0]
        assert (found.source, found.severity, found.runbook) == (
            "alertmanager",
            "P1",
            "service-down",
        )
        marker = f"incident {found.id}: "
        wait_for(lambda: sink_messages(stack, "page", marker), 60, "no on-call page")
        wait_for(lambda: sink_messages(stack, "incidents", marker), 60, "no #incidents post")
        wait_for(lambda: sink_messages(stack, "page-secondary", marker), 60, "no escalation")
        run_id = wait_for(lambda: incident(stack, found.id).flow_run_id, 30, "no incident run")
        api.wait(run_id, until=("PAUSED",), timeout=60)
        api.resume(run_id, {"acknowledge": True, "who": "outage-oncall", "note": "bad release"})
        wait_for(lambda: incident(stack, found.id).acknowledged, 30, "acknowledgement not kept")
        assert len(incidents_after(stack, key, before)) == 1
    answers = wait_for(
        lambda: httpx.get(stack.app_url("production") + "/health", timeout=5).status_code == 200,
        120,
        f"production does not answer with {good_image} back",
    )
    assert answers

    def resolved() -> Any:
        now = incident(stack, found.id)
        return None if now.is_open else now

    closed = wait_for(resolved, 180, "Alertmanager never resolved the incident")
    assert closed.resolved_by == "alertmanager" and closed.acknowledged_by == "outage-oncall"
    assert_completed(api.wait(closed.flow_run_id or run_id, timeout=120), runpath.log)
    assert not sink_messages(stack, "page-lead", marker), "escalated after the acknowledgement"
    kinds = [e.kind for e in timeline(stack, found.id)]
    assert kinds.count("paged on-call") == 1 and "paged secondary" in kinds, kinds
    draft = api.latest_artifact(f"incident-{found.id}-postmortem")
    assert "## Open questions" in draft and "ServiceDown" in draft
    assert len(incidents_after(stack, key, before)) == 1
