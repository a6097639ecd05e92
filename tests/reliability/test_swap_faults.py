"""Replacing the live database by a verified restore, interrupted at each of its changes.

The swap changes the server in a few statements (mark the restore, close the live database,
rename it to the kept name, reopen it, rename the restore to the live name, label both). Each
test stops it right after its n-th change, for every n: the process is killed (SIGKILL, in a
child process) or its connection is cut (the server terminates the session). Whatever happens,
the live name ends up on exactly one database, which accepts connections, and no data is lost:
either the swap is undone (the old database is live again, the restore is kept under its
scratch name, marked verified) or finished (the restore is live, the old database is kept
under ``keep_as``).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.logging import disable_run_logger

from decisions.swap import MARK_PREFIX
from flows.backup import backup_database
from flows.restore import restore_database
from opsflows.errors import ConflictError, OpsError
from tasks.swap import recover_swap, swap_in
from tests.backup_support import REPO_ROOT, admin_target, backup_env, fill
from tests.support import count_fault, flow_run_id, oplog_row
from tests.swap_support import (
    LIVE_COMMENT,
    NEW_ROWS,
    OLD_ROWS,
    SwapWorld,
    after_change,
    cut,
    make_world,
    remove_world,
)

#: The swap's changes: mark, close, rename live, reopen kept, rename restore, label, unmark.
CHANGES = 7


@pytest.fixture
def sw(stack: Any) -> Iterator[SwapWorld]:
    made = make_world(admin_target(stack))
    yield made
    remove_world(made)


def assert_finished(w: SwapWorld) -> None:
    """The restore is live and accepts connections; the old database is kept, intact."""
    assert w.databases() == sorted([w.live, w.keep_as])
    assert w.allows_connections(w.live) and w.rows(w.live) == NEW_ROWS
    assert w.allows_connections(w.keep_as) and w.rows(w.keep_as) == OLD_ROWS
    assert w.comment(w.live) == LIVE_COMMENT, "the live database keeps its own comment"
    kept = w.comment(w.keep_as) or ""
    assert w.live in kept and "kept" in kept, kept


def assert_undone(w: SwapWorld) -> None:
    """The old database is live again and accepts connections; the restore is kept, verified."""
    assert w.databases() == sorted([w.live, w.scratch])
    assert w.allows_connections(w.live) and w.rows(w.live) == OLD_ROWS
    assert w.comment(w.live) == LIVE_COMMENT
    assert w.rows(w.scratch) == NEW_ROWS
    assert w.comment(w.scratch) == w.verified_mark(), "no later restore sweeps it away"


def kill_after(w: SwapWorld, n: int) -> None:
    """Run the swap in a child process killed right after its n-th change."""
    run = subprocess.run(
        [sys.executable, "-m", "tests.swap_support", str(n), w.live, w.scratch, w.keep_as],
        cwd=REPO_ROOT,
        env=os.environ.copy(),
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()[-2000:]
    count_fault("kill")


@pytest.mark.parametrize("n", range(1, CHANGES + 1))
def test_killed_after_each_change_a_rerun_of_the_swap_finishes_it(sw: SwapWorld, n: int) -> None:
    kill_after(sw, n)
    with disable_run_logger():
        assert swap_in.fn(sw.admin, sw.live, sw.scratch, sw.keep_as) == sw.keep_as
    assert_finished(sw)


@pytest.mark.parametrize("n", range(1, CHANGES + 1))
def test_killed_after_each_change_a_recovery_undoes_or_finishes_it(sw: SwapWorld, n: int) -> None:
    kill_after(sw, n)
    restore_has_live_name = sw.scratch not in sw.databases()
    half_done = [c for c in map(sw.comment, sw.databases()) if c and c.startswith(MARK_PREFIX)]
    assert len(half_done) == (1 if n < CHANGES else 0), "the last change removes the mark"
    with disable_run_logger():
        recovered = recover_swap.fn(sw.admin, sw.live)
        assert len(recovered) == len(half_done)
        assert all(sw.scratch in line and sw.live in line for line in recovered)
        assert recover_swap.fn(sw.admin, sw.live) == [], "nothing left to recover"
    if restore_has_live_name:
        assert_finished(sw)  # undoing would take the live database away a second time
    else:
        assert_undone(sw)


@pytest.mark.parametrize("n", range(1, CHANGES + 1))
def test_connection_lost_after_each_change_is_undone_or_finished_at_once(
    sw: SwapWorld, n: int
) -> None:
    restore_was_live: list[bool] = []

    def cut_connection(conn: Any) -> None:
        restore_was_live.append(sw.scratch not in sw.databases())
        cut(sw.admin)(conn)
        count_fault("pg terminate")

    with disable_run_logger(), after_change(lambda i, _text: i == n, cut_connection):
        try:
            kept: str | None = swap_in.fn(sw.admin, sw.live, sw.scratch, sw.keep_as)
        except OpsError as exc:
            kept, error = None, exc
    assert len(restore_was_live) == 1, "the connection was cut"
    if not restore_was_live[0]:
        assert kept is None, "an error before the restore took the live name undoes the swap"
        assert "the swap was undone" in str(error), error
        assert_undone(sw)
    else:
        # Undoing would take the live database away a second time: the swap is finished.
        assert kept == sw.keep_as
        assert_finished(sw)


def test_a_swap_first_undoes_the_half_done_swap_of_a_killed_run(sw: SwapWorld) -> None:
    kill_after(sw, 3)  # the other run died with no database under the live name
    other = dataclasses.replace(make_world(sw.admin, live=sw.live), keep_as=f"{sw.keep_as}b")
    with disable_run_logger():
        assert swap_in.fn(sw.admin, other.live, other.scratch, other.keep_as) == other.keep_as
    assert sw.databases() == sorted([sw.live, other.keep_as, sw.scratch])
    assert sw.allows_connections(sw.live) and sw.rows(sw.live) == NEW_ROWS
    assert sw.allows_connections(other.keep_as) and sw.rows(other.keep_as) == OLD_ROWS
    assert sw.comment(sw.live) == LIVE_COMMENT, "not the killed run's mark"
    assert sw.comment(sw.scratch) == sw.verified_mark() and sw.rows(sw.scratch) == NEW_ROWS


def test_keep_name_taken_while_live_is_closed_is_undone(sw: SwapWorld) -> None:
    def take_the_keep_name(_conn: Any) -> None:
        sw.sql(f'CREATE DATABASE "{sw.keep_as}"')

    closing = "ALLOW_CONNECTIONS false"
    with (
        disable_run_logger(),
        after_change(lambda _i, text: closing in text, take_the_keep_name),
        pytest.raises(OpsError) as info,
    ):
        swap_in.fn(sw.admin, sw.live, sw.scratch, sw.keep_as)
    assert sw.keep_as in str(info.value)
    assert sw.databases() == sorted([sw.live, sw.keep_as, sw.scratch])
    sw.sql(f'DROP DATABASE "{sw.keep_as}"')
    assert_undone(sw)


def test_keep_name_taken_is_refused_before_live_is_closed(sw: SwapWorld) -> None:
    sw.sql(f'CREATE DATABASE "{sw.keep_as}"')
    with (
        disable_run_logger(),
        after_change(lambda _i, _text: False, lambda _conn: None) as changes,
        pytest.raises(ConflictError, match="already exists") as info,
    ):
        swap_in.fn(sw.admin, sw.live, sw.scratch, sw.keep_as)
    assert sw.keep_as in info.value.message and info.value.hint
    assert "undone" not in info.value.message, "nothing was done, so nothing was undone"
    assert not [c for c in changes if "ALLOW_CONNECTIONS" in c or "RENAME" in c], changes
    sw.sql(f'DROP DATABASE "{sw.keep_as}"')
    assert_undone(sw)  # untouched: as it was before


def test_a_rerun_of_the_restore_brings_back_the_live_database_a_killed_swap_took_away(
    stack: Any, bootstrapped: object
) -> None:
    with backup_env(stack, "swap") as env:
        fill(env, 20)
        backup_database(database=env.db_block, store=env.store_block, reason="swap faults")
        w = make_world(admin_target(stack), live=env.dbname)
        kill_after(w, 3)
        assert env.dbname not in w.databases(), "killed with no database under the live name"

        state = restore_database(
            database=env.db_block,
            admin_database=env.admin_block,
            store=env.store_block,
            reason="after a killed swap",
            return_state=True,
        )
        result = state.result()
        assert len(result["recovered_swaps"]) == 1
        assert result["recovered_swaps"][0].startswith(f"undid an interrupted swap of {env.dbname}")
        assert w.allows_connections(env.dbname)
        assert env.sql("SELECT count(*) FROM orders") == [(20,)], "the previous data is live"
        assert w.comment(w.scratch) == w.verified_mark(), "the interrupted restore is kept"
        assert sorted(w.databases()) == sorted([env.dbname, w.scratch, result["scratch_database"]])
        entry = oplog_row(env.info, flow_run_id(state))
        assert entry["details"]["recovered_swaps"] == result["recovered_swaps"]
        assert "undid an interrupted swap" in entry["issues"]
