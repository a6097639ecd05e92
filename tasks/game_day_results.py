"""Game-day results: what monitoring and the runbooks made of each injected fault (incidents
opened since the injection, the first page, the runbook's outcome), and the
``game_day_results`` rows that keep it."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import psycopg
from prefect import task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.exceptions import ObjectNotFound
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from blocks.postgres import PostgresTarget
from decisions.game_day import FaultResult, RunbookOutcome
from decisions.incidents import Incident
from opsflows import retry
from tasks.incident_schema import COLUMNS, ensure_schema, incident_from_row
from tasks.postgres import connect, translate

DDL = """
CREATE TABLE IF NOT EXISTS game_day_results (
    id bigserial PRIMARY KEY,
    game_day_run_id text NOT NULL,
    fault text NOT NULL,
    environment text NOT NULL,
    injected_at timestamptz NOT NULL,
    outcome text NOT NULL,
    incident_id bigint,
    alert text,
    runbook text,
    action text,
    asked boolean NOT NULL DEFAULT false,
    alert_s double precision,
    page_s double precision,
    mitigated_s double precision,
    resolved_s double precision,
    notes jsonb NOT NULL DEFAULT '[]'::jsonb,
    UNIQUE (game_day_run_id, fault)
)
"""


@task(name="read incidents since", **retry.NETWORK)
def incidents_since(
    target: PostgresTarget, environment: str | None, since: datetime
) -> list[Incident]:
    """Incidents (of ``environment``; None: any) triggered or changed at or after ``since``."""
    ensure_schema(target)
    try:
        with connect(target) as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                f"SELECT {COLUMNS} FROM incidents WHERE (%s::text IS NULL OR environment = %s)"
                " AND (triggered_at >= %s OR updated_at >= %s) ORDER BY id",
                (environment, environment, since, since),
            ).fetchall()
    except psycopg.Error as exc:
        raise translate(exc, target, "read incidents") from exc
    return [incident_from_row(r) for r in rows]


@task(name="read first page", **retry.NETWORK)
def first_page(target: PostgresTarget, incident_id: int, since: datetime) -> datetime | None:
    """When the incident's first page since ``since`` went out (its timeline), or None (a
    reopened incident's earlier pages are not this fault's; a flapping group is not paged
    twice, so a reopened incident may have none)."""
    try:
        with connect(target) as conn:
            row = conn.execute(
                "SELECT min(at) FROM incident_events WHERE incident_id = %s"
                " AND kind LIKE 'paged %%' AND at >= %s",
                (incident_id, since),
            ).fetchone()
    except psycopg.Error as exc:
        raise translate(exc, target, "read the incident timeline") from exc
    return row[0] if row and row[0] else None


@task(name="read runbook outcome", **retry.NETWORK)
def runbook_outcome(target: PostgresTarget, runbook: str, flow_run_id: str) -> RunbookOutcome:
    """What a runbook run did (its op-log row) and whether it paused for a person (its state
    history in Prefect)."""
    try:
        with connect(target) as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "SELECT status, impact, details, finished_at FROM ops_log WHERE flow_run_id = %s",
                (flow_run_id,),
            ).fetchone()
    except psycopg.Error as exc:
        raise translate(exc, target, "read the runbook's op log") from exc
    asked = paused_ever(flow_run_id)
    if row is None:
        return RunbookOutcome(runbook, None, None, False, asked, None)
    details = row["details"] or {}
    decision = details.get("decision") or {}
    action = decision.get("action") if isinstance(decision, dict) else None
    changed = not str(row["impact"] or "").startswith("no change")
    return RunbookOutcome(runbook, row["status"], action, changed, asked, row["finished_at"])


def paused_ever(flow_run_id: str) -> bool:
    """Whether the run was ever Paused (it asked a person)."""
    try:
        run_uuid = UUID(flow_run_id)
    except ValueError:
        return False
    with get_client(sync_client=True) as client:
        try:
            states = client.read_flow_run_states(run_uuid)
        except ObjectNotFound:
            return False
    return any(s.type.value == "PAUSED" for s in states)


@task(name="runs still going", **retry.NETWORK)
def unfinished_runs(flow_run_ids: list[str]) -> list[str]:
    """Those of the runs that have not reached a final state."""
    ids = [UUID(i) for i in flow_run_ids]
    if not ids:
        return []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    return [str(r.id) for r in runs if r.state is None or not r.state.is_final()]


@task(name="record game-day results", **retry.NETWORK)
def record_results(target: PostgresTarget, run_id: str, results: list[FaultResult]) -> int:
    """One ``game_day_results`` row per fault (a retried write replaces its rows)."""
    try:
        with connect(target) as conn:
            conn.execute(DDL)
            for r in results:
                conn.execute(
                    "INSERT INTO game_day_results (game_day_run_id, fault, environment,"
                    " injected_at, outcome, incident_id, alert, runbook, action, asked, alert_s,"
                    " page_s, mitigated_s, resolved_s, notes) VALUES (%s, %s, %s, %s, %s, %s,"
                    " %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (game_day_run_id, fault) DO UPDATE SET"
                    " outcome = EXCLUDED.outcome,"
                    " incident_id = EXCLUDED.incident_id, action = EXCLUDED.action,"
                    " mitigated_s = EXCLUDED.mitigated_s, resolved_s = EXCLUDED.resolved_s,"
                    " notes = EXCLUDED.notes",
                    (
                        run_id,
                        r.fault,
                        r.environment,
                        r.injected_at,
                        r.outcome,
                        r.incident_id,
                        r.alert,
                        r.runbook,
                        r.action,
                        r.asked,
                        r.alert_s,
                        r.page_s,
                        r.mitigated_s,
                        r.resolved_s,
                        Jsonb(list(r.notes)),
                    ),
                )
    except psycopg.Error as exc:
        raise translate(exc, target, "record the game-day results") from exc
    return len(results)
