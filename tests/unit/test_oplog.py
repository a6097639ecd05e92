"""The operation-log entry follows the runbook template."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
