"""Close the live server's current WAL file and wait until it is archived (tests, benches)."""

from __future__ import annotations

import time

import psycopg


def switch_wal_and_wait(admin_conninfo: str, timeout_s: float = 60) -> str:
    """Close the current WAL segment and wait until the archiver has archived it; its name.

    ``TimeoutError`` when it is not archived within ``timeout_s`` (archiving failing).
    """
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        name = str(row[0])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
            if done is not None and done[0] is not None and str(done[0])[:24] >= name:
                return name
            time.sleep(0.3)
    raise TimeoutError(f"WAL segment {name} was not archived within {timeout_s:g} s")
