"""Running the backup and restore flows in the e2e tests, and reading what they left."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flows.backup import backup_database
from flows.restore import restore_database
from tests.backup_support import BackupEnv, admin_target


def customers(env: BackupEnv, database: str | None = None) -> list[str]:
    return [r[0] for r in env.sql("SELECT name FROM customers ORDER BY id", database=database)]


def backup(env: BackupEnv, **kw: Any) -> Any:
    return backup_database(database=env.db_block, store=env.store_block, reason="e2e", **kw)


def restore(env: BackupEnv, **kw: Any) -> Any:
    return restore_database(
        database=env.db_block, admin_database=env.admin_block, store=env.store_block, **kw
    )


def oplog(stack: Any, run_id: UUID) -> tuple[str, dict[str, Any]]:
    admin = admin_target(stack, "opsflows")
    import psycopg

    with psycopg.connect(admin.conninfo()) as conn:
        row = conn.execute(
            "SELECT status, details FROM ops_log WHERE flow_run_id = %s", (str(run_id),)
        ).fetchone()
    assert row is not None, "every run writes one operation-log row"
    return row[0], row[1]
