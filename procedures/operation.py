"""What every runbook flow shares: loading blocks, the operation log, notifications."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.context import get_run_context
from prefect.exceptions import FlowPauseTimeout, TerminationSignal
from prefect.logging import get_run_logger

from blocks.notify import NotificationRouting
from blocks.postgres import PostgresTarget
from opsflows.errors import (
    ApprovalTimedOut,
    ConfigurationError,
    GateRejected,
    OpsError,
    Stalled,
    TimedOut,
    scrub,
)
from opsflows.oplog import (
    CANCELLED,
    FAILED,
    REJECTED,
    SUCCEEDED,
    TIMED_OUT,
    OpLogEntry,
    default_impact,
)
from tasks.notify import send_notification
from tasks.oplog import write_oplog

B = TypeVar("B", bound=Block)

#: Block document names the local stack saves (``opsflows bootstrap``); flows default to them.
OPS_DB = "ops-db"
APP_DB = "app-db"
APP_DB_ADMIN = "app-db-admin"
AWS = "opsflows"  # aws-credentials/opsflows: the AWS account the runbooks act in
BACKUPS = "backups"
ROUTING = "default"


def load_block(cls: type[B], name: str) -> B:
    """Load a saved block, or fail with an error that says how to create it."""
    slug = cls.get_block_type_slug()
    try:
        return cast(B, cls.load(name))
    except ValueError as exc:
        raise ConfigurationError(
            f"block {slug}/{name} is missing or invalid",
            hint=f"create it in the Prefect UI (Blocks) or run `opsflows bootstrap`; ({exc})",
        ) from exc


@dataclass
class OperationRecord:
    """Filled in by the flow while it runs; becomes the operation-log entry at the end."""

    operation: str
    reason: str
    impact: str = ""
    issues: list[str] = field(default_factory=list)
    follow_up: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    #: What the run started to change (set by the change slot); for the default Impact.
    changing: str | None = None


@dataclass(frozen=True)
class RunContext:
    """What a runbook run carries everywhere: its operation record and where pages go.

    Set once by :func:`operation_log`; procedures read it with :func:`current_run` instead of
    taking the record and the routing as parameters.
    """

    record: OperationRecord
    routing: NotificationRouting | None


_RUN: ContextVar[RunContext | None] = ContextVar("opsflows_run", default=None)


def current_run() -> RunContext:
    """The run context :func:`operation_log` set; outside one, a throwaway record, no routing.

    The fallback lets a procedure be called on its own (a test, a REPL) without a log entry.
    """
    run = _RUN.get()
    return run if run is not None else RunContext(OperationRecord("ad hoc", "no run"), None)


def _flow_run_id() -> str | None:
    with contextlib.suppress(Exception):
        ctx: Any = get_run_context()
        return str(ctx.flow_run.id)
    return None


@contextlib.contextmanager
def operation_log(
    operation: str,
    reason: str,
    ops_db: PostgresTarget | None,
    routing: NotificationRouting | None = None,
) -> Iterator[OperationRecord]:
    """Wrap a flow body: on success or failure, write exactly one operation-log entry.

    Inside, :func:`current_run` gives the record and ``routing`` (where :func:`notify` and
    :func:`safe_notify` send pages).
    """
    record = OperationRecord(operation=operation, reason=reason)
    started = datetime.now(UTC)
    status = SUCCEEDED
    token = _RUN.set(RunContext(record, routing))
    try:
        yield record
    except BaseException as exc:
        status = run_status(exc)
        record.issues.append(f"{type(exc).__name__}: {scrub(str(exc))}")
        raise
    finally:
        entry = OpLogEntry(
            operation=record.operation,
            reason=record.reason,
            started_at=started,
            finished_at=datetime.now(UTC),
            status=status,
            impact=record.impact or default_impact(status, record.changing),
            issues=tuple(record.issues),
            follow_up=tuple(record.follow_up),
            flow_run_id=_flow_run_id(),
            details=dict(record.details),
        )
        with contextlib.suppress(ValueError):  # reset from another context: nothing to undo
            _RUN.reset(token)
        record_entry(entry, ops_db)


def run_status(exc: BaseException) -> str:
    """How a run that raised ``exc`` ended: rejected, timed out, cancelled or failed."""
    chain = [exc, exc.__cause__]
    if isinstance(exc, TerminationSignal | KeyboardInterrupt):
        return CANCELLED  # someone stopped the run (Cancel in the UI sends SIGTERM)
    if isinstance(exc, asyncio.CancelledError):
        # Prefect enforces timeout_seconds by cancelling the body (see :func:`hung`).
        return TIMED_OUT if run_timeout_s() else CANCELLED
    timeouts = FlowPauseTimeout | TimeoutError | TimedOut | Stalled | ApprovalTimedOut
    if any(isinstance(e, timeouts) for e in chain):
        return TIMED_OUT  # an approval nobody gave in time, a wait that hit its bound
    if isinstance(exc, GateRejected):
        return REJECTED
    return FAILED


def record_entry(entry: OpLogEntry, ops_db: PostgresTarget | None) -> None:
    """Write the entry, never raising: the op log must not replace the run's own result.

    Through the ``write operation log`` task when Prefect can run it; when it cannot (the API
    is down), the same writes run directly, each on its own (:func:`tasks.oplog.write_oplog`).
    """
    try:
        write_oplog(entry, ops_db)
        return
    except Exception as exc:  # noqa: BLE001 - logged; the run's result stands
        _log().error("the operation-log task could not run (%s); writing directly", scrub(str(exc)))
    with contextlib.suppress(Exception):
        write_oplog.fn(entry, ops_db)


def _log() -> Any:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run
        return logging.getLogger("opsflows.oplog")


def try_load_ops_db(name: str = OPS_DB) -> PostgresTarget | None:
    """The operations database block, or None (logged) when it is not configured."""
    try:
        return load_block(PostgresTarget, name)
    except Exception as exc:  # noqa: BLE001 - the run goes on; its entry becomes an artifact
        get_run_logger().warning("operation log will be an artifact only: %s", exc)
        return None


def notify(severity: str, subject: str, body: str) -> int:
    """Route a notification by severity to the run's notification blocks (:func:`current_run`)."""
    routing = current_run().routing
    if routing is None:
        get_run_logger().info("no notification routing configured; %s %s", severity, subject)
        return 0
    return deliver(routing.targets(severity), severity, subject, body)


def deliver(refs: list[str], severity: str, subject: str, body: str) -> int:
    """Send to the notification blocks ``refs`` ("slug/name"); the number that accepted it."""
    targets: list[NotificationBlock] = []
    for ref in refs:
        block = Block.load(ref)
        if not isinstance(block, NotificationBlock):
            raise ConfigurationError(f"{ref} is not a notification block")
        targets.append(block)
    if not targets:
        return 0
    return int(send_notification(targets, severity, subject, body))


def try_load_routing(name: str | None = ROUTING) -> NotificationRouting | None:
    """The notification routing block, or None (logged) when it is not configured."""
    if not name:
        return None
    try:
        return load_block(NotificationRouting, name)
    except Exception as exc:  # noqa: BLE001 - the run goes on; pages are logged instead
        get_run_logger().warning("notifications will only be logged: %s", exc)
        return None


def safe_notify(severity: str, subject: str, body: str) -> int:
    """Notify, never raising: a broken channel must not hide what the run did."""
    try:
        return notify(severity, subject, body)
    except Exception as exc:  # noqa: BLE001 - reported, never fatal
        get_run_logger().warning("could not send %s notification %r: %s", severity, subject, exc)
        return 0


def hung(exc: BaseException) -> bool:
    """Whether a run ended because something hung: a detected stall, or the run's timeout.

    Prefect enforces a flow's ``timeout_seconds`` by cancelling its body (an
    ``asyncio.CancelledError`` subclass, a ``BaseException``) and then marks the run
    TimedOut; every wait of the runbooks is bounded, so the cancellation gets through.
    """
    return isinstance(exc, Stalled | TimeoutError | asyncio.CancelledError)


def run_timeout_s() -> float | None:
    """The running flow's ``timeout_seconds`` (None outside a run or without one)."""
    with contextlib.suppress(Exception):
        ctx: Any = get_run_context()
        return cast(float | None, ctx.flow.timeout_seconds)
    return None


@contextlib.contextmanager
def page_if_hung(rec: OperationRecord, what: str) -> Iterator[None]:
    """Page P2 (through the routing block) when the body ends because something hung.

    A hung backup or restore must not wait for someone to notice: the stall or the run's
    timeout ends it (the work it held is stopped and cleaned up by then) and this pages
    through the run's routing (:func:`current_run`). The page and its delivery are recorded
    in the operation log.
    """
    try:
        yield
    except BaseException as exc:
        if not hung(exc):
            raise
        if isinstance(exc, OpsError):
            message, hint = exc.message, exc.hint
        else:
            limit = run_timeout_s()
            message = "the run exceeded its timeout" + (f" of {limit:g} s" if limit else "")
            hint = "something it waited for hung; its work was stopped and cleaned up"
        subject = f"{what} hung and was stopped"
        body = message + (f"\n\nWhat to do: {hint}" if hint else "")
        delivered = safe_notify("P2", subject, body)
        rec.details["notified"] = f"P2 to {delivered} channel(s): {subject}"
        rec.follow_up.append(f"find out what hung ({message}) and run it again")
        raise


def running_again() -> None:
    """Put this run back into Running after a pause timed out.

    When a pause expires the server may fail the run ("never resumed") before the flow's own
    timeout handling goes on (a rollback, an escalation); without this the run would end
    with that message instead of its own outcome.
    """
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    run_id = get_run_context().flow_run.id  # type: ignore[union-attr]
    for attempt in range(5):
        try:
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(run_id, Running(), force=True)
            return
        except Exception:  # noqa: BLE001 - the API blinked; try again, then give up
            if attempt == 4:
                raise
            time.sleep(2**attempt)
