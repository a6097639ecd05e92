"""Copy a database out of the recovered scratch instance into a scratch database on the live
server, fingerprinted in the same snapshot as the dump.

``pg_dump --snapshot`` of the recovered instance pipes straight into ``pg_restore`` on the
live server (no file); the fingerprint (row counts, max keys, schema hash) taken in that
snapshot is what the restored copy is then verified against with Great Expectations, as a
dump's manifest fingerprint is for a logical restore.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

from prefect import task
from prefect.logging import get_run_logger

from blocks.postgres import PostgresTarget
from decisions.backups import Fingerprint
from opsflows.errors import PermanentError, scrub
from opsflows.settings import get_settings
from tasks.fingerprint import exported_snapshot, fingerprint_in
from tasks.pipes import StderrTails, pg_tool, program, reap, spawn, stop_all
from tasks.scratch import create_database, database_owner, drop_database, mark


@dataclass(frozen=True)
class CopyResult:
    fingerprint: Fingerprint
    server_version: str
    seconds: float


@task(name="copy the recovered database to the live server")
def copy_recovered(
    source: PostgresTarget, admin: PostgresTarget, scratch: str, live: str, label: str
) -> CopyResult:
    """Create ``scratch`` (owned as ``live`` is) and fill it from ``source``; on any failure
    it is dropped again. No retries: a half-filled copy is never resumed."""
    settings = get_settings()
    started = time.monotonic()
    owner = database_owner(admin, live)
    create_database(admin, scratch, owner, mark(live, label, verified=False))
    secret = admin.password.get_secret_value()
    try:
        with exported_snapshot(source) as (conn, snap):
            prints = fingerprint_in(source, conn, settings.fingerprint_timeout_s)
            dump = spawn(
                [
                    pg_tool("pg_dump", snap.server_version_num),
                    "--format=custom",
                    "--compress=0",
                    f"--snapshot={snap.snapshot_id}",
                    "--no-password",
                    f"--dbname={source.tool_dbname()}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin", **source.libpq_env()},
            )
            assert dump.stdout is not None
            restore = spawn(
                [
                    pg_tool("pg_restore", snap.server_version_num),
                    f"--dbname={admin.tool_dbname(scratch)}",
                    "--exit-on-error",
                    "--no-password",
                ],
                stdin=dump.stdout,
                stderr=subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin", **admin.libpq_env(), "PGDATABASE": scratch},
            )
            dump.stdout.close()
            procs = [dump, restore]
            tails = StderrTails(procs)
            try:
                codes = reap(procs, settings.restore_finish_s, "the copy of the database")
            finally:
                stop_all(procs, settings.process_exit_s)
            for i, (p, code) in enumerate(zip(procs, codes, strict=True)):
                if code != 0:
                    raise PermanentError(
                        f"{program(p)} failed (exit {code}) copying {source.database} out of "
                        f"the recovered instance: {scrub(tails.text(i), secret)}",
                        hint="the scratch database was dropped; nothing live was touched",
                    )
    except BaseException:
        drop_database(admin, scratch)
        raise
    seconds = round(time.monotonic() - started, 3)
    get_run_logger().info("copied %s into %s in %.1f s", source.database, scratch, seconds)
    return CopyResult(prints, snap.server_version, seconds)
