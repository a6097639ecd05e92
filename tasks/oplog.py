"""Write operation-log entries (a markdown artifact and a row in ``ops_log``) and read them."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from psycopg.rows import dict_row

from blocks.postgres import PostgresTarget
from opsflows import retry
from opsflows.errors import scrub
from opsflows.oplog import DDL, OpLogEntry, render_markdown
from tasks.postgres import connect
from tasks.together import start_together


def artifact_key(operation: str) -> str:
    """A valid artifact key (lowercase letters, digits, dashes) for ``operation``."""
    return "oplog-" + (re.sub(r"[^a-z0-9]+", "-", operation.lower()).strip("-") or "run")


def entry_exists(target: PostgresTarget, flow_run_id: str) -> bool:
    """Whether the flow run already has its ``ops_log`` entry."""
    with connect(target) as conn:
        conn.execute(DDL)
        row = conn.execute(
            "SELECT 1 FROM ops_log WHERE flow_run_id = %s", (flow_run_id,)
        ).fetchone()
    return row is not None


def insert_entry(target: PostgresTarget, entry: OpLogEntry) -> int | None:
    """Insert ``entry`` into ``ops_log`` (creating the table if needed); the row id.

    None when the flow run already has its entry (a retried write is harmless).
    """
    with connect(target) as conn:
        conn.execute(DDL)
        row = conn.execute(
            "INSERT INTO ops_log (started_at, finished_at, operation, status, reason, impact,"
            " duration_s, issues, follow_up, flow_run_id, details)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT (flow_run_id) WHERE flow_run_id IS NOT NULL DO NOTHING RETURNING id",
            (
                entry.started_at,
                entry.finished_at,
                entry.operation,
                entry.status,
                entry.reason,
                entry.impact,
                entry.duration_s,
                "; ".join(entry.issues),
                "; ".join(entry.follow_up),
                entry.flow_run_id,
                json.dumps(dict(entry.details), default=str),
            ),
        ).fetchone()
    return int(row[0]) if row is not None else None


@task(name="write operation log", **retry.ONCE)
def write_oplog(entry: OpLogEntry, ops_db: PostgresTarget | None) -> int | None:
    """Record the run as a markdown artifact and an ``ops_log`` row; the row id.

    Each write stands on its own: an unreachable Prefect API still leaves the row, an
    unreachable operations database still leaves the artifact. Neither failure is raised,
    so the log never masks the procedure's own result.
    """
    logger = get_run_logger()
    # The artifact (Prefect API) and the row (operations database) are written at once.
    artifact, row = start_together(
        lambda: _write_artifact(entry), lambda: _write_row(entry, ops_db)
    )
    if (failed := artifact.exception()) is not None:  # the row still records the run
        logger.error("could not write the operation-log artifact: %s", scrub(str(failed)))
    if ops_db is None:
        logger.warning("no operations database configured; the log entry is the artifact only")
        return None
    if (failed := row.exception()) is not None:  # the artifact still records the run
        logger.error("could not write the ops_log row: %s", scrub(str(failed)))
        return None
    row_id: int | None = row.result()
    if row_id is None:
        logger.info("flow run %s already has its operation-log entry", entry.flow_run_id)
        return None
    logger.info("operation log entry %s written (%s, %s)", row_id, entry.operation, entry.status)
    return row_id


def _write_artifact(entry: OpLogEntry) -> None:
    create_markdown_artifact(
        markdown=render_markdown(entry),
        key=artifact_key(entry.operation),
        description=f"Operation log: {entry.operation} {entry.status}",
    )


def _write_row(entry: OpLogEntry, ops_db: PostgresTarget | None) -> int | None:
    return insert_entry(ops_db, entry) if ops_db is not None else None


def _select(target: PostgresTarget, query: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    """The rows of an ``ops_log`` query (none while the table does not exist yet)."""
    with connect(target) as conn, conn.cursor(row_factory=dict_row) as cur:
        found = cur.execute("SELECT to_regclass('ops_log') AS t").fetchone()
        if found is None or found["t"] is None:
            return []
        return [dict(r) for r in cur.execute(query, params).fetchall()]


def oplog_during(
    target: PostgresTarget, start: datetime, end: datetime, exclude_run: str | None
) -> list[dict[str, Any]]:
    """Operation-log entries of runs that overlapped ``start``..``end`` (none: no table yet)."""
    return _select(
        target,
        "SELECT started_at, operation, status, impact, flow_run_id FROM ops_log"
        " WHERE finished_at >= %s AND started_at <= %s"
        " AND flow_run_id IS DISTINCT FROM %s ORDER BY started_at",
        (start, end, exclude_run),
    )


def oplog_status(target: PostgresTarget, flow_run_id: str) -> str | None:
    """The status of the run's operation-log entry (None: no entry, or no table yet)."""
    rows = _select(target, "SELECT status FROM ops_log WHERE flow_run_id = %s", (flow_run_id,))
    return str(rows[0]["status"]) if rows else None


@task(name="read operations", **retry.NETWORK)
def read_operations(
    target: PostgresTarget, operations: list[str], since: datetime
) -> list[dict[str, Any]]:
    """The ``ops_log`` rows of ``operations`` that finished after ``since``, oldest first
    (the deploys service-down weighs, the scale-ups the scale-back check undoes)."""
    return _select(
        target,
        "SELECT started_at, finished_at, operation, status, details, flow_run_id"
        " FROM ops_log WHERE operation = ANY(%s) AND finished_at >= %s ORDER BY finished_at",
        (list(operations), since),
    )


#: The columns :func:`decisions.oplog_view.entry_view` reads.
ENTRY_COLUMNS = (
    "id, started_at, finished_at, operation, status, reason, impact, duration_s, issues,"
    " follow_up, flow_run_id, details"
)


def list_entries(
    target: PostgresTarget,
    *,
    since: datetime | None = None,
    operation: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The newest ``limit`` entries (newest first) that started at or after ``since``, of
    ``operation`` (any case) and ``status`` when given (none while the table does not exist)."""
    where: list[str] = ["TRUE"]
    params: list[Any] = []
    if since is not None:
        where.append("started_at >= %s")
        params.append(since)
    if operation is not None:
        where.append("lower(operation) = lower(%s)")
        params.append(operation)
    if status is not None:
        where.append("status = %s")
        params.append(status)
    params.append(limit)
    return _select(
        target,
        f"SELECT {ENTRY_COLUMNS} FROM ops_log WHERE {' AND '.join(where)}"
        " ORDER BY started_at DESC, id DESC LIMIT %s",
        tuple(params),
    )


def read_entry(target: PostgresTarget, ref: int | str) -> dict[str, Any] | None:
    """The entry numbered ``ref``, or (a string) the one of flow run ``ref``; None: no such."""
    column = "id" if isinstance(ref, int) else "flow_run_id"
    rows = _select(target, f"SELECT {ENTRY_COLUMNS} FROM ops_log WHERE {column} = %s", (ref,))
    return rows[0] if rows else None
