"""``opsflows oplog`` on the stack's PostgreSQL: entries written by the real writer
(:func:`tasks.oplog.insert_entry`) are listed newest first and filtered by ``--since``,
``--operation`` and ``--status``; ``--json`` and ``show ID`` carry every template field and the
flow run's UI link; an unknown ID, bad input and an unreachable database fail clearly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from blocks.postgres import PostgresTarget
from devstack.stack import StackInfo
from opsflows.cli import main
from opsflows.oplog import FAILED, REJECTED, SUCCEEDED, OpLogEntry
from tasks.oplog import insert_entry
from tasks.postgres import connect
from tests.incident_support import ops_target


@dataclass(frozen=True)
class Written:
    marker: str
    ids: dict[str, int]  # by label: old, failed, rejected
    runs: dict[str, str]

    @property
    def deploy(self) -> str:
        return f"oplog-cli {self.marker} deploy"

    @property
    def backup(self) -> str:
        return f"oplog-cli {self.marker} backup"


@pytest.fixture(scope="module")
def written(stack: StackInfo, bootstrapped: Any) -> Iterator[Written]:
    """Three entries of two operations: 3 days old (succeeded), 2 hours old (failed),
    10 minutes old (rejected); removed afterwards."""
    target = ops_target(stack)
    marker = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    runs = {label: str(uuid.uuid4()) for label in ("old", "failed", "rejected")}
    deploy, backup = f"oplog-cli {marker} deploy", f"oplog-cli {marker} backup"
    entries = {
        "old": OpLogEntry(
            operation=deploy,
            reason="release v1.2.0",
            started_at=now - timedelta(days=3),
            finished_at=now - timedelta(days=3) + timedelta(seconds=95),
            status=SUCCEEDED,
            impact="production runs v1.2.0",
            flow_run_id=runs["old"],
        ),
        "failed": OpLogEntry(
            operation=backup,
            reason="daily backup of app",
            started_at=now - timedelta(hours=2),
            finished_at=now - timedelta(hours=2) + timedelta(seconds=42),
            status=FAILED,
            impact="no change",
            issues=("ServiceUnavailable: S3 down", "retries exhausted"),
            follow_up=("rerun the backup once S3 answers",),
            flow_run_id=runs["failed"],
            details={"database": "app", "failed_step": "upload"},
        ),
        "rejected": OpLogEntry(
            operation=deploy,
            reason="release v1.3.0",
            started_at=now - timedelta(minutes=10),
            finished_at=now - timedelta(minutes=4),
            status=REJECTED,
            impact="no change",
            issues=("GateRejected: production approval rejected by carol",),
            flow_run_id=runs["rejected"],
            details={
                "approvals": [
                    {"gate": "production", "approver": "alice", "role": "lead", "reason": "ok"}
                ],
                "approval_refusals": [
                    {"gate": "production", "approver": "bob", "why": "not on the roster"}
                ],
            },
        ),
    }
    ids = {label: insert_entry(target, entry) for label, entry in entries.items()}
    assert all(ids.values())
    yield Written(marker, {k: int(v) for k, v in ids.items() if v}, runs)
    with connect(target) as conn:
        conn.execute("DELETE FROM ops_log WHERE id = ANY(%s)", (list(ids.values()),))


def oplog(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``opsflows oplog ARGV`` through the CLI's main(); (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = main(["oplog", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def ids_in(stdout: str, written: Written) -> list[int]:
    """The ids of this test's entries in a listing, in printed order."""
    return [int(line.split()[0]) for line in stdout.splitlines() if written.marker in line]


def test_the_list_is_newest_first_and_filters_by_operation_and_since(
    written: Written, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = oplog(capsys, "--operation", written.deploy.upper())
    assert code == 0, err
    assert ids_in(out, written) == [written.ids["rejected"], written.ids["old"]]
    assert out.splitlines()[0].split()[:3] == ["id", "date/time", "(UTC)"]

    code, out, _ = oplog(capsys, "--operation", written.deploy, "--since", "1d")
    assert code == 0 and ids_in(out, written) == [written.ids["rejected"]]

    code, out, _ = oplog(capsys, "--since", "4d", "--limit", "1000")
    assert ids_in(out, written) == [
        written.ids["rejected"],
        written.ids["failed"],
        written.ids["old"],
    ]


def test_status_failed_lists_only_the_failed_entries(
    written: Written, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = oplog(capsys, "--status", "failed", "--since", "4d", "--limit", "1000")
    assert code == 0, err
    assert ids_in(out, written) == [written.ids["failed"]]
    line = next(line for line in out.splitlines() if written.marker in line)
    assert "failed" in line and "3: ServiceUnavailable: S3 down" in line


def test_an_operation_without_entries_lists_none(
    written: Written, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = oplog(capsys, "--operation", f"{written.backup}-never")
    assert code == 0 and out.strip() == "no operation-log entries match"
    code, out, _ = oplog(capsys, "--operation", f"{written.backup}-never", "--json")
    assert code == 0 and out == ""


def test_json_lines_carry_the_template_fields(
    stack: StackInfo, written: Written, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = oplog(capsys, "--operation", written.deploy, "--json")
    assert code == 0, err
    entries = [json.loads(line) for line in out.splitlines()]
    assert [e["id"] for e in entries] == [written.ids["rejected"], written.ids["old"]]
    rejected, old = entries
    assert rejected["status"] == "rejected" and rejected["reason"] == "release v1.3.0"
    assert rejected["duration"] == "6 min 00 s" and rejected["follow_up"] == ["—"]
    assert rejected["approvals"] == ["alice (lead) at production: ok"]
    assert "approval refused at production: bob (not on the roster)" in rejected["issues"]
    run = written.runs["rejected"]
    assert rejected["flow_run_url"] == f"{stack.prefect_ui_url}/runs/flow-run/{run}"
    assert old["issues"] == ["none"] and old["impact"] == "production runs v1.2.0"


def test_show_prints_the_entry_in_the_template_with_its_run_link(
    stack: StackInfo, written: Written, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = oplog(capsys, "show", str(written.ids["failed"]))
    assert code == 0, err
    assert out.startswith(f"Operation log entry {written.ids['failed']}\n")
    assert f"Operation:  {written.backup}\n" in out
    assert "Reason:     daily backup of app\n" in out
    assert "Impact:     no change\n" in out and "Duration:   42 s\n" in out
    assert "  - ServiceUnavailable: S3 down\n  - retries exhausted\n" in out
    assert "  - failed at step upload\n" in out
    assert "Follow-up:  rerun the backup once S3 answers\n" in out
    assert f"{stack.prefect_ui_url}/runs/flow-run/{written.runs['failed']}" in out
    assert '"database": "app"' in out
    by_run = oplog(capsys, "show", written.runs["failed"], "--json")
    assert by_run[0] == 0 and json.loads(by_run[1])["id"] == written.ids["failed"]


def test_an_unknown_id_fails_and_says_where_to_look(
    written: Written, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = oplog(capsys, "show", str(max(written.ids.values()) + 10_000_000))
    assert code == 1 and out == ""
    assert "no operation-log entry" in err and "`opsflows oplog`" in err


def test_bad_input_is_refused_before_anything_is_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = oplog(capsys, "--since", "last week", "--ops-db", "no-such-block")
    assert code == 2 and "7d, 12h or 30m" in err and "no-such-block" not in err
    code, _, err = oplog(capsys, "--status", "broken")
    assert code == 2 and "timed out" in err


def test_a_missing_block_or_an_unreachable_database_says_what_to_do(
    stack: StackInfo, bootstrapped: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = oplog(capsys, "--ops-db", f"oplog-missing-{uuid.uuid4().hex[:6]}")
    assert code == 1 and "is missing or invalid" in err and "opsflows bootstrap" in err

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    good = ops_target(stack)
    down = PostgresTarget(
        host=good.host, port=closed, database=good.database, user=good.user, password=good.password
    )
    down.save("oplog-cli-down", overwrite=True)
    code, out, err = oplog(capsys, "--ops-db", "oplog-cli-down")
    assert code == 1 and out == ""
    assert "cannot reach PostgreSQL" in err and "start that database" in err
    assert good.password.get_secret_value() not in err


def test_the_installed_command_shows_an_entry(stack: StackInfo, written: Written) -> None:
    """The real entry point in its own process, pointed at the stack as a person's shell is."""
    done = subprocess.run(
        [sys.executable, "-m", "opsflows.cli", "oplog", "show", str(written.ids["rejected"])],
        env={**os.environ, **stack.client_env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Status:     rejected" in done.stdout
    assert f"{stack.prefect_ui_url}/runs/flow-run/{written.runs['rejected']}" in done.stdout
