"""Swap a verified restore in for the live database; finish or undo a swap a run left half done.

The steps, and which one comes next, are decided in :mod:`decisions.swap` from what
``pg_database`` shows under the live, kept and scratch names (the plan is recorded in the
restore's comment before the first change). Here they are read and applied, one statement
each, on a connection to the maintenance database:

- :func:`swap_in` drives a swap to its end. On any error it undoes what it did, on a new
  connection when the old one was lost, and raises; once the restore holds the live name it
  finishes instead (undoing would take the live database away a second time). Run again
  after a kill, it goes on from where the killed run stopped.
- :func:`recover_swap` (the restore runbook's first step) undoes whatever swap of the live
  database a killed run left, or finishes it when the restore already holds the live name.

One swap of a live database at a time: both hold a session advisory lock on its name, which
goes away with the process that holds it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from prefect import task
from prefect.logging import get_run_logger
from psycopg import errors as pgerr
from psycopg import sql

from blocks.postgres import PostgresTarget
from decisions.swap import (
    MARK_PREFIX,
    Database,
    Goal,
    Observed,
    Step,
    SwapPlan,
    next_step,
    parse_mark,
)
from opsflows import retry
from opsflows.errors import (
    ConflictError,
    OpsError,
    PermanentError,
    Throttled,
    TransientError,
    scrub,
)
from tasks.postgres import connect
from tasks.scratch import MAINTENANCE_DB, set_comment

#: Advisory-lock class of swaps (the second key is ``hashtext(live)``).
SWAP_CLASS = 0x5357
_SWAP_LOCK_WAIT_S = 30
_RECOVER_LOCK_WAIT_S = 10
_RENAME_TRIES = 5
_UNDO_WINDOW_S = 60.0
_MAX_STEPS = 20


@contextlib.contextmanager
def _swap_lock(admin: PostgresTarget, live: str, wait_s: int) -> Iterator[bool]:
    """Hold the swap lock of ``live`` (True), or say it stayed taken for ``wait_s`` (False)."""
    with connect(admin, database=MAINTENANCE_DB) as conn:
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{wait_s}s")))
        try:
            conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (SWAP_CLASS, live))
            got = True
        except pgerr.LockNotAvailable:
            got = False
        yield got  # closing the connection (or the process ending) releases the lock


def _observe(conn: psycopg.Connection[Any], plan: SwapPlan) -> Observed:
    rows = conn.execute(
        "SELECT datname, datallowconn, shobj_description(oid, 'pg_database') FROM pg_database"
        " WHERE datname = ANY(%s)",
        ([plan.live, plan.keep_as, plan.scratch],),
    ).fetchall()
    found = {str(name): Database(bool(allow), comment) for name, allow, comment in rows}
    return Observed(found.get(plan.live), found.get(plan.keep_as), found.get(plan.scratch))


def _interrupted(conn: psycopg.Connection[Any], live: str) -> list[SwapPlan]:
    """The swaps of ``live`` whose mark is still on a database (at most one, normally)."""
    rows = conn.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database"
        " WHERE starts_with(shobj_description(oid, 'pg_database'), %s) ORDER BY datname",
        (MARK_PREFIX,),
    ).fetchall()
    plans: list[SwapPlan] = []
    for (comment,) in rows:
        plan = parse_mark(comment)
        if plan and plan.live == live and not any(p.same_swap(plan) for p in plans):
            plans.append(plan)
    return plans


def _allow(conn: psycopg.Connection[Any], name: str, allow: bool) -> None:
    stmt = sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
        sql.Identifier(name), sql.SQL("true" if allow else "false")
    )
    conn.execute(stmt)


def _rename(conn: psycopg.Connection[Any], old: str, new: str) -> None:
    """End the sessions on ``old`` and rename it, again while sessions come back."""
    stmt = sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
        sql.Identifier(old), sql.Identifier(new)
    )
    for _ in range(_RENAME_TRIES):
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (old,),
        )
        try:
            conn.execute(stmt)
            return
        except pgerr.ObjectInUse:
            time.sleep(0.5)
        except pgerr.DuplicateDatabase as exc:
            raise ConflictError(
                f"database {new} already exists: {old} cannot be renamed to it",
                hint=f"drop or rename {new}, or run the restore again (another name is chosen)",
            ) from exc
    raise Throttled(
        f"{old} stayed in use; it could not be renamed to {new}",
        hint="stop its clients and run again",
    )


def _apply(conn: psycopg.Connection[Any], plan: SwapPlan, step: Step) -> None:
    if step is Step.MARK:
        set_comment(conn, plan.scratch, plan.mark())
    elif step is Step.CLOSE_LIVE:
        _allow(conn, plan.live, False)
    elif step is Step.RENAME_LIVE:
        _rename(conn, plan.live, plan.keep_as)
    elif step is Step.REOPEN_KEEP:
        _allow(conn, plan.keep_as, True)
    elif step is Step.RENAME_SCRATCH:
        _rename(conn, plan.scratch, plan.live)
    elif step is Step.LABEL_KEEP:
        set_comment(conn, plan.keep_as, plan.keep_label())
    elif step is Step.UNMARK_LIVE:
        set_comment(conn, plan.live, plan.live_comment)
    elif step is Step.REOPEN_LIVE:
        _allow(conn, plan.live, True)
    elif step is Step.RENAME_KEEP_BACK:
        _rename(conn, plan.keep_as, plan.live)
    elif step is Step.UNMARK_SCRATCH:
        set_comment(conn, plan.scratch, plan.scratch_comment)
    else:  # pragma: no cover - terminal steps are not applied
        raise AssertionError(step)


def _drive(conn: psycopg.Connection[Any], plan: SwapPlan, goal: Goal) -> Step:
    """Observe, decide, apply, until the swap is finished or undone; the terminal step."""
    logger = get_run_logger()
    for _ in range(_MAX_STEPS):
        step = next_step(plan, _observe(conn, plan), goal)
        if step.terminal:
            return step
        _apply(conn, plan, step)
        logger.info("swap of %s: %s", plan.live, step.value)
        if step.finishes:
            return Step.FINISHED
    raise PermanentError(f"the swap of {plan.live} did not settle in {_MAX_STEPS} steps")


def _settle(admin: PostgresTarget, plan: SwapPlan, goal: Goal) -> Step:
    """:func:`_drive` on a fresh connection, reconnecting while the server is out of reach."""
    deadline = time.monotonic() + _UNDO_WINDOW_S
    while True:
        try:
            with connect(admin, database=MAINTENANCE_DB) as conn:
                return _drive(conn, plan, goal)
        except TransientError as exc:
            if time.monotonic() >= deadline:
                raise
            get_run_logger().warning("swap of %s: %s; trying again", plan.live, exc.message)
            time.sleep(1)


def _outcome(plan: SwapPlan, step: Step) -> str:
    if step is Step.FINISHED:
        return (
            f"the restore {plan.scratch} is live as {plan.live}; the previous database is"
            f" kept as {plan.keep_as}"
        )
    if not plan.had_live:
        return f"{plan.live} was not created; the restore is kept as {plan.scratch}"
    return (
        f"{plan.live} is the previous database again, accepting connections; the restore is"
        f" kept as {plan.scratch}"
    )


def _plan(conn: psycopg.Connection[Any], live: str, scratch: str, keep_as: str) -> SwapPlan:
    """The plan recorded by an earlier run of this swap, or a new one from the comments now.

    Raises:
        ConflictError, NotFoundError: the swap is refused (``keep_as`` taken, no restore)
            before anything is changed.
    """
    fresh = SwapPlan(live, scratch, keep_as)
    seen = _observe(conn, fresh)
    plan = SwapPlan(
        live,
        scratch,
        keep_as,
        scratch_comment=seen.scratch.comment if seen.scratch else None,
        live_comment=seen.live.comment if seen.live else None,
        had_live=seen.live is not None,
    )
    for db in (seen.scratch, seen.live):
        recorded = parse_mark(db.comment) if db else None
        if recorded and recorded.same_swap(fresh):
            plan = recorded
    next_step(plan, seen, Goal.FINISH)
    return plan


def _recover(admin: PostgresTarget, live: str, keep: SwapPlan | None = None) -> list[str]:
    """Undo (or finish) every interrupted swap of ``live`` but ``keep``; what became of each."""
    with connect(admin, database=MAINTENANCE_DB) as conn:
        plans = [p for p in _interrupted(conn, live) if keep is None or not p.same_swap(keep)]
    done: list[str] = []
    for plan in plans:
        step = _settle(admin, plan, Goal.UNDO)
        verb = "finished" if step is Step.FINISHED else "undid"
        done.append(f"{verb} an interrupted swap of {live}: {_outcome(plan, step)}")
        get_run_logger().warning(done[-1])
    return done


@task(name="swap restored database in", **retry.ONCE)
def swap_in(admin: PostgresTarget, live: str, scratch: str, keep_as: str) -> str:
    """Rename ``live`` to ``keep_as`` and ``scratch`` to ``live``; the kept old name.

    New connections to the live database are refused and existing ones terminated first,
    because a database cannot be renamed while in use. The old database is kept, accepting
    connections, so the swap can be undone by renaming back. A ``keep_as`` that is taken is
    refused before the live database is touched. Any error undoes the swap (or finishes it
    once the restore holds the live name); a rerun after a kill goes on where it stopped.
    """
    logger = get_run_logger()
    with _swap_lock(admin, live, _SWAP_LOCK_WAIT_S) as got:
        if not got:
            raise Throttled(
                f"another run is replacing {live}", hint="wait for it to end and run again"
            )
        _recover(admin, live, keep=SwapPlan(live, scratch, keep_as))  # another run's, killed
        with connect(admin, database=MAINTENANCE_DB) as conn:
            plan = _plan(conn, live, scratch, keep_as)
        try:
            with connect(admin, database=MAINTENANCE_DB) as conn:
                step = _drive(conn, plan, Goal.FINISH)
        except BaseException as exc:
            step = _after_failure(admin, plan, exc)
            if step is Step.UNDONE or not isinstance(exc, Exception):
                if isinstance(exc, OpsError):
                    raise _undone(plan, exc) from exc
                raise
            logger.warning("swap of %s finished after %s", live, scrub(str(exc)))
    logger.info("%s", _outcome(plan, step))
    return keep_as


def _after_failure(admin: PostgresTarget, plan: SwapPlan, exc: BaseException) -> Step:
    """Undo the swap after ``exc`` (finish it past the point of no return)."""
    logger = get_run_logger()
    logger.warning("swap of %s failed (%s); undoing it", plan.live, scrub(str(exc)))
    try:
        return _settle(admin, plan, Goal.UNDO)
    except OpsError as undo:
        raise type(undo)(
            f"the swap of {plan.live} failed ({scrub(str(exc))}) and undoing it failed too:"
            f" {undo.message}",
            hint="run the restore again: its first step finishes or undoes the swap from the"
            f" state recorded on the server (the plan is in the comment of {plan.scratch} or"
            f" {plan.live}); no database was dropped",
        ) from exc


def _undone(plan: SwapPlan, exc: OpsError) -> OpsError:
    return type(exc)(
        f"{exc.message}; the swap was undone: {_outcome(plan, Step.UNDONE)}",
        hint=exc.hint or "read the message, then run the restore again",
    )


@task(name="recover an interrupted swap", **retry.NETWORK)
def recover_swap(admin: PostgresTarget, live: str) -> list[str]:
    """Undo the swap of ``live`` a killed run left half done (finish it when the restore
    already holds the live name); what became of each such swap.

    A swap under way in a running process (its lock held) is left alone.
    """
    with _swap_lock(admin, live, _RECOVER_LOCK_WAIT_S) as got:
        if not got:
            get_run_logger().info("a swap of %s is under way in another run; left alone", live)
            return []
        return _recover(admin, live)
