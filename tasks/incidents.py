"""The ``incidents`` and ``incident_events`` tables in the operations database.

One open incident per alert group (a partial unique index on ``group_key`` while unresolved):
a group firing again updates its incident, a resolved group closes it, and a group that
fires after that opens a new one, unless it flapped: Alertmanager resolved it less than
``Settings.incident_reopen_window_s`` ago, and the same incident reopens
(``decisions.incidents.reopening``). The Alertmanager receiver calls these functions directly
(``.fn`` of the tasks); the incident flow calls them as tasks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from psycopg.rows import dict_row

from blocks.postgres import PostgresTarget
from decisions.incidents import (
    ACKNOWLEDGED,
    MITIGATED,
    REOPENED,
    RESOLVED,
    Event,
    Incident,
    Opening,
    earlier_statuses,
    merge_alerts,
    more_severe,
    reopening,
)
from opsflows import retry
from opsflows.errors import NotFoundError
from opsflows.settings import get_settings
from tasks.incident_schema import COLUMNS, ensure_schema, incident_from_row
from tasks.postgres import connect


@dataclass(frozen=True)
class Recorded:
    """What a notification did to the incidents table.

    ``reopened``: the group flapped and its resolved incident is open again, with no flow
    run recorded; ``previous_run_id`` is the run that responded before (it may still be
    alive: it had not closed the incident yet).
    """

    incident: Incident | None
    opened: bool = False
    resolved: bool = False
    changes: tuple[str, ...] = field(default_factory=tuple)
    reopened: bool = False
    previous_run_id: str | None = None


def _events(cur: Any, incident_id: int, kind: str, lines: list[str] | tuple[str, ...]) -> None:
    for text in lines:
        cur.execute(
            "INSERT INTO incident_events (incident_id, kind, text) VALUES (%s, %s, %s)",
            (incident_id, kind, text),
        )


@task(name="record incident opening", **retry.ONCE)
def record_opening(
    target: PostgresTarget, opening: Opening, reopen_window_s: float | None = None
) -> Recorded:
    """Open the group's incident, reopen it, or update (or resolve) the open one, in one
    transaction.

    A resolved notification for a group with no open incident changes nothing
    (``Recorded.incident`` is None). The same notification twice adds no timeline line. A
    firing group whose latest incident Alertmanager resolved less than ``reopen_window_s``
    ago (default ``Settings.incident_reopen_window_s``) reopens that incident.
    """
    if reopen_window_s is None:
        reopen_window_s = get_settings().incident_reopen_window_s
    ensure_schema(target)
    alerts = [dict(a) for a in opening.alerts]
    with connect(target, autocommit=False) as conn, conn.cursor(row_factory=dict_row) as cur:
        select = f"SELECT {COLUMNS} FROM incidents WHERE group_key = %s AND resolved_at IS NULL"
        row = cur.execute(select + " FOR UPDATE", (opening.group_key,)).fetchone()
        if row is None and opening.resolved:
            return Recorded(None)
        if row is None:
            opened = _open_or_reopen(cur, opening, alerts, reopen_window_s)
            if opened is not None:
                return opened
            # Another delivery of the same group opened it a moment ago: update that one.
            row = cur.execute(select + " FOR UPDATE", (opening.group_key,)).fetchone()
            assert row is not None
        merged, changes = merge_alerts(row["alerts"] or [], alerts)
        severity = more_severe(row["severity"], opening.severity)
        if severity != row["severity"]:
            changes.append(f"severity raised from {row['severity']} to {severity}")
        resolve = opening.resolved
        row = cur.execute(
            "UPDATE incidents SET alerts = %s, severity = %s, updated_at = now(),"
            " status = CASE WHEN %s THEN 'resolved' ELSE status END,"
            " resolved_at = CASE WHEN %s THEN now() ELSE resolved_at END,"
            " resolved_by = CASE WHEN %s THEN %s ELSE resolved_by END"
            f" WHERE id = %s RETURNING {COLUMNS}",
            (
                json.dumps(merged, default=str),
                severity,
                resolve,
                resolve,
                resolve,
                opening.source,
                row["id"],
            ),
        ).fetchone()
        assert row is not None
        _events(cur, row["id"], "alert", changes)
        if resolve:
            _events(cur, row["id"], RESOLVED, [f"resolved: {opening.source} reports the group"])
        return Recorded(incident_from_row(row), resolved=resolve, changes=tuple(changes))


def _open_or_reopen(
    cur: Any, opening: Opening, alerts: list[dict[str, Any]], window_s: float
) -> Recorded | None:
    """A firing group with no open incident: reopen its latest incident when it flapped,
    else open one. None when another delivery of the group got there first (it is open now).

    The latest incident is locked first, so concurrent deliveries of the group take turns:
    the second sees what the first did (reopened: open again; opened: the insert conflicts).
    """
    latest = cur.execute(
        f"SELECT {COLUMNS} FROM incidents WHERE group_key = %s ORDER BY id DESC LIMIT 1 FOR UPDATE",
        (opening.group_key,),
    ).fetchone()
    if latest is not None and latest["resolved_at"] is None:
        return None  # it was opened or reopened while this one waited for the lock
    # The database's clock, read after the lock: the one resolved_at was stamped with.
    now = cur.execute("SELECT clock_timestamp() AS now").fetchone()["now"]
    back = reopening(incident_from_row(latest) if latest else None, opening, now, window_s)
    if back is not None and latest is not None:
        merged, changes = merge_alerts(latest["alerts"] or [], alerts)
        severity = more_severe(latest["severity"], opening.severity)
        if severity != latest["severity"]:
            changes.append(f"severity raised from {latest['severity']} to {severity}")
        # Open again from where it stood: no longer mitigated, resolved or post-mortem'd
        # (the draft is written again when it closes); no flow run responds yet.
        row = cur.execute(
            "UPDATE incidents SET status = %s, resolved_at = NULL, resolved_by = NULL,"
            " mitigated_at = NULL, mitigated_by = NULL, postmortem = NULL, flow_run_id = NULL,"
            " reopenings = reopenings + 1, alerts = %s, severity = %s, updated_at = now()"
            " WHERE id = %s AND resolved_at IS NOT NULL AND NOT EXISTS"
            " (SELECT 1 FROM incidents WHERE group_key = %s AND resolved_at IS NULL)"
            f" RETURNING {COLUMNS}",
            (
                back.status,
                json.dumps(merged, default=str),
                severity,
                back.incident_id,
                opening.group_key,
            ),
        ).fetchone()
        if row is None:  # the group has an open incident after all: update that one
            return None
        _events(cur, row["id"], REOPENED, [back.text])
        _events(cur, row["id"], "alert", changes)
        return Recorded(
            incident_from_row(row),
            changes=tuple(changes),
            reopened=True,
            previous_run_id=latest["flow_run_id"],
        )
    _, changes = merge_alerts([], alerts)
    row = cur.execute(
        "INSERT INTO incidents (group_key, source, title, severity, runbook, environment,"
        " alerts) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (group_key) WHERE resolved_at IS NULL DO NOTHING"
        f" RETURNING {COLUMNS}",
        (
            opening.group_key,
            opening.source,
            opening.title,
            opening.severity,
            opening.runbook,
            opening.environment,
            json.dumps(alerts, default=str),
        ),
    ).fetchone()
    if row is None:
        return None
    text = f"{opening.severity} opened by {opening.source}: {opening.title}"
    _events(cur, row["id"], "triggered", [text])
    _events(cur, row["id"], "alert", changes)
    return Recorded(incident_from_row(row), opened=True, changes=tuple(changes))


@task(name="read incident", **retry.NETWORK)
def read_incident(target: PostgresTarget, incident_id: int) -> Incident:
    """The incident row; ``NotFoundError`` when there is none."""
    ensure_schema(target)
    with connect(target) as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {COLUMNS} FROM incidents WHERE id = %s", (incident_id,)
        ).fetchone()
    if row is None:
        raise NotFoundError(f"incident {incident_id} does not exist")
    return incident_from_row(row)


@task(name="record incident event", **retry.ONCE)
def add_event(target: PostgresTarget, incident_id: int, kind: str, text: str) -> None:
    """Append one line to the incident's timeline."""
    with connect(target) as conn, conn.cursor() as cur:
        _events(cur, incident_id, kind, [text])


def read_events(target: PostgresTarget, incident_id: int) -> list[Event]:
    with connect(target) as conn:
        rows = conn.execute(
            "SELECT at, kind, text FROM incident_events WHERE incident_id = %s ORDER BY id",
            (incident_id,),
        ).fetchall()
    return [Event(at, kind, text) for at, kind, text in rows]


@task(name="move incident", **retry.ONCE)
def move_incident(
    target: PostgresTarget, incident_id: int, status: str, who: str, note: str = ""
) -> bool:
    """Move the incident forward to ``status`` (by ``who``); False when that step was
    already taken or the incident is resolved (states never go back).

    A step taken out of order is still stamped: a person acknowledging an incident a triage
    runbook already mitigated is recorded as its acknowledgement (escalation stops) while
    the status stays ``mitigated``.
    """
    if status not in (ACKNOWLEDGED, MITIGATED, RESOLVED):
        raise ValueError(f"an incident cannot be moved to {status!r}")
    with connect(target) as conn, conn.cursor() as cur:
        # The status names its two columns: acknowledged_at/_by, mitigated_..., resolved_...
        cur.execute(
            "UPDATE incidents SET status = CASE WHEN status = ANY(%s) THEN %s ELSE status END,"
            f" {status}_at = now(), {status}_by = %s, updated_at = now()"
            f" WHERE id = %s AND {status}_at IS NULL AND status <> 'resolved' RETURNING id",
            (list(earlier_statuses(status)), status, who, incident_id),
        )
        moved = cur.fetchone() is not None
        if moved:
            _events(
                cur, incident_id, status, [f"{status} by {who}" + (f": {note}" if note else "")]
            )
    return moved


@task(name="record page", **retry.ONCE)
def record_page(
    target: PostgresTarget, incident_id: int, level: str, delivered: int, to: str | None = None
) -> None:
    """Count a page and put it on the timeline (with whom the on-call schedule named)."""
    text = f"{delivered} channels delivered" + (f" (to {to})" if to else "")
    with connect(target) as conn, conn.cursor() as cur:
        cur.execute("UPDATE incidents SET pages = pages + 1 WHERE id = %s", (incident_id,))
        _events(cur, incident_id, f"paged {level}", [text])


def open_incident_of_run(target: PostgresTarget, flow_run_id: str) -> int | None:
    """The open incident the flow run was responding to, if any."""
    ensure_schema(target)
    with connect(target) as conn:
        row = conn.execute(
            "SELECT id FROM incidents WHERE flow_run_id = %s AND resolved_at IS NULL",
            (flow_run_id,),
        ).fetchone()
    return int(row[0]) if row else None


def set_flow_run(target: PostgresTarget, incident_id: int, flow_run_id: str) -> None:
    """Remember the flow run that handles the incident now."""
    with connect(target) as conn:
        conn.execute(
            "UPDATE incidents SET flow_run_id = %s WHERE id = %s", (flow_run_id, incident_id)
        )


@task(name="record runbook run", **retry.ONCE)
def add_runbook_run(target: PostgresTarget, incident_id: int, run: Mapping[str, Any]) -> None:
    with connect(target) as conn:
        conn.execute(
            "UPDATE incidents SET runbook_runs = runbook_runs || %s::jsonb WHERE id = %s",
            (json.dumps([dict(run)], default=str), incident_id),
        )


def set_postmortem(target: PostgresTarget, incident_id: int, key: str) -> None:
    with connect(target) as conn:
        conn.execute("UPDATE incidents SET postmortem = %s WHERE id = %s", (key, incident_id))


def list_incidents(
    target: PostgresTarget, recent: int = 20, group_key: str | None = None
) -> list[Incident]:
    """Every open incident, then the ``recent`` most recently resolved ones (of one alert
    group only, when ``group_key`` is given)."""
    ensure_schema(target)
    group = " AND group_key = %(group)s" if group_key is not None else ""
    with connect(target) as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"(SELECT {COLUMNS} FROM incidents WHERE resolved_at IS NULL{group} ORDER BY id DESC)"
            f" UNION ALL (SELECT {COLUMNS} FROM incidents WHERE resolved_at IS NOT NULL{group}"
            " ORDER BY resolved_at DESC LIMIT %(recent)s)",
            {"recent": recent, "group": group_key},
        ).fetchall()
    return [incident_from_row(r) for r in rows]
