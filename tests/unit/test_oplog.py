"""The operation-log entry follows the runbook template."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from opsflows.oplog import OpLogEntry, render_markdown
from tasks.oplog import artifact_key


def test_markdown_has_every_template_field() -> None:
    start = datetime(2025, 11, 19, 14, 30, tzinfo=UTC)
    entry = OpLogEntry(
        operation="backup",
        reason="daily | scheduled",
        started_at=start,
        finished_at=start + timedelta(seconds=92.5),
        status="failed",
        impact="none",
        issues=("S3 down",),
        follow_up=("retry tomorrow",),
        details={"size": 10},
    )
    md = render_markdown(entry)
    for field in ("Date/Time", "Operation", "Reason", "Impact", "Duration", "Issues", "Follow-up"):
        assert f"| {field} |" in md
    assert "2025-11-19 14:30:00" in md
    assert "92.5 s" in md
    assert "daily \\| scheduled" in md  # a pipe in a value does not break the table
    assert entry.duration_s == 92.5


def test_artifact_keys_are_valid() -> None:
    assert artifact_key("Stack smoke check!") == "oplog-stack-smoke-check"
    assert artifact_key("???") == "oplog-run"


def test_run_status_names_how_a_run_ended() -> None:
    import asyncio
    import signal

    from prefect.exceptions import FlowPauseTimeout, TerminationSignal

    from opsflows.errors import ApprovalTimedOut, ConflictError, GateRejected, TimedOut
    from procedures.operation import run_status

    def caused(exc: BaseException, cause: BaseException) -> BaseException:
        exc.__cause__ = cause
        return exc

    assert run_status(ConflictError("x")) == "failed"
    assert run_status(GateRejected("rejected by bob")) == "rejected"
    assert run_status(ApprovalTimedOut("approval timed out")) == "timed out"
    # An approval nobody gave in time is a timeout, even though it surfaces as a rejection.
    assert run_status(caused(GateRejected("nobody approved"), FlowPauseTimeout())) == "timed out"
    assert run_status(TimedOut("dump stalled")) == "timed out"
    assert run_status(TimeoutError()) == "timed out"
    assert run_status(TerminationSignal(signal.SIGTERM)) == "cancelled"
    assert run_status(asyncio.CancelledError()) == "cancelled"


def test_impact_is_filled_on_every_path() -> None:
    from opsflows.oplog import STATUSES, default_impact

    for status in STATUSES:
        assert default_impact(status, None) == "no change"
        changed = default_impact(status, "production")
        assert changed.startswith("production may have changed") and status in changed


def test_the_op_log_scrubs_secrets_from_the_error(monkeypatch: Any) -> None:
    import pytest

    from procedures.operation import operation_log

    written: list[OpLogEntry] = []
    monkeypatch.setattr("procedures.operation.write_oplog", lambda e, _db: written.append(e))
    with pytest.raises(RuntimeError), operation_log("t", "r", None) as rec:
        rec.details["x"] = 1
        raise RuntimeError("connect failed: postgresql://app:hunter2@db/app password=hunter2")
    (entry,) = written
    assert entry.status == "failed" and entry.impact == "no change"
    assert "hunter2" not in " ".join(entry.issues)
