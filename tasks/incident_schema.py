"""The incidents tables' schema: the DDL (run once per process), the columns read, a row as
an :class:`~decisions.incidents.Incident`."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from blocks.postgres import PostgresTarget
from decisions.incidents import Incident
from tasks.postgres import connect

DDL = """
CREATE TABLE IF NOT EXISTS incidents (
    id              bigserial PRIMARY KEY,
    group_key       text NOT NULL,
    source          text NOT NULL,
    title           text NOT NULL,
    severity        text NOT NULL CHECK (severity IN ('P1', 'P2', 'P3', 'P4')),
    status          text NOT NULL DEFAULT 'triggered'
                    CHECK (status IN ('triggered', 'acknowledged', 'mitigated', 'resolved')),
    runbook         text,
    environment     text,
    alerts          jsonb NOT NULL DEFAULT '[]',
    triggered_at    timestamptz NOT NULL DEFAULT now(),
    acknowledged_at timestamptz,
    acknowledged_by text,
    mitigated_at    timestamptz,
    mitigated_by    text,
    resolved_at     timestamptz,
    resolved_by     text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    pages           integer NOT NULL DEFAULT 0,
    flow_run_id     text,
    runbook_runs    jsonb NOT NULL DEFAULT '[]',
    postmortem      text
);
-- One open incident per alert group: the same group firing again can never open a second.
CREATE UNIQUE INDEX IF NOT EXISTS incidents_one_open_per_group ON incidents (group_key)
    WHERE resolved_at IS NULL;
CREATE TABLE IF NOT EXISTS incident_events (
    id          bigserial PRIMARY KEY,
    incident_id bigint NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind        text NOT NULL,
    text        text NOT NULL
);
CREATE INDEX IF NOT EXISTS incident_events_by_incident ON incident_events (incident_id, id);
-- How often a flapping group brought the incident back. Checked first: ADD COLUMN IF NOT
-- EXISTS alone would take an ACCESS EXCLUSIVE lock on every process start.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'incidents'::regclass
                   AND attname = 'reopenings' AND NOT attisdropped) THEN
        ALTER TABLE incidents ADD COLUMN IF NOT EXISTS reopenings integer NOT NULL DEFAULT 0;
    END IF;
END $$;
-- The group's latest incident, which a firing group with none open may reopen.
CREATE INDEX IF NOT EXISTS incidents_by_group ON incidents (group_key, id);
"""
COLUMNS = (
    "id, group_key, source, title, severity, status, runbook, environment, alerts, triggered_at,"
    " acknowledged_at, acknowledged_by, mitigated_at, mitigated_by, resolved_at, resolved_by,"
    " pages, flow_run_id, runbook_runs, postmortem, reopenings"
)
_ready: set[str] = set()
_ready_lock = threading.Lock()


def ensure_schema(target: PostgresTarget) -> None:
    """Create the tables once per process (idempotent DDL, not on every request)."""
    key = target.describe()
    with _ready_lock:
        if key in _ready:
            return
        with connect(target) as conn:
            conn.execute("SELECT pg_advisory_lock(hashtext('opsflows incidents ddl'))")
            try:
                conn.execute(DDL)
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext('opsflows incidents ddl'))")
        _ready.add(key)


def incident_from_row(row: Mapping[str, Any]) -> Incident:
    return Incident(
        id=int(row["id"]),
        group_key=row["group_key"],
        source=row["source"],
        title=row["title"],
        severity=row["severity"],
        status=row["status"],
        triggered_at=row["triggered_at"],
        runbook=row["runbook"],
        environment=row["environment"],
        alerts=tuple(row["alerts"] or ()),
        acknowledged_at=row["acknowledged_at"],
        acknowledged_by=row["acknowledged_by"],
        mitigated_at=row["mitigated_at"],
        mitigated_by=row["mitigated_by"],
        resolved_at=row["resolved_at"],
        resolved_by=row["resolved_by"],
        pages=int(row["pages"]),
        flow_run_id=row["flow_run_id"],
        runbook_runs=tuple(row["runbook_runs"] or ()),
        postmortem=row["postmortem"],
        reopenings=int(row["reopenings"]),
    )
