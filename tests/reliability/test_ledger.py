"""The tier's ledger sees a loss: a test that drops data which existed before it fails the
session (exit status 1 although every test passed) and is named in the summary.

A small pytest session runs in a subprocess with this folder's ledger (tests/reliability/
conftest.py) on a test file of its own: one test loses a database, a backup manifest and rows
of a table in the shared ``app`` database that its module fixture made before it; one makes
and removes its own database, which is no loss; and the stack cannot be read at the end of
two tests (a simulated outage): once only (it is measured after the teardown) and for good
(reported as not measured, the session goes on).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
from psycopg import sql

from devstack.stack import BACKUP_BUCKET, StackInfo
from tests.backup_support import admin_target, s3

REPO = Path(__file__).resolve().parents[2]

CONFTEST = """
import tests.reliability.conftest as ledger
import tests.safety_support as safety
from tests.conftest import stack  # noqa: F401
from tests.reliability.conftest import (  # noqa: F401
    _data_safety, _existing_data, pytest_runtest_teardown, pytest_sessionfinish,
    pytest_terminal_summary,
)

ledger.RETRY_S = 1
OUTAGE = {"takes": 0}  # how many of the next snapshots fail
_take = safety.take


def take(stack):
    if OUTAGE["takes"] > 0:
        OUTAGE["takes"] -= 1
        raise OSError("PostgreSQL is down (simulated)")
    return _take(stack)


safety.take = take
"""

TESTS = """
import os

import psycopg
import pytest

from devstack.stack import BACKUP_BUCKET
from tests.backup_support import admin_target, s3
from tests.support import count_fault

NAME = "ledger_demo_" + os.environ["LEDGER_DEMO"]
KEY = f"tests/{NAME}/manifest.json"


def sql(stack, statement, database="postgres"):
    with psycopg.connect(admin_target(stack).conninfo(database), autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture(scope="module")
def made(stack):
    sql(stack, f"CREATE DATABASE {NAME}")
    sql(stack, f"CREATE TABLE {NAME} AS SELECT generate_series(1, 3) AS id", "app")
    s3(stack.aws_endpoint_url).put_object(Bucket=BACKUP_BUCKET, Key=KEY, Body=b"{}")
    yield


def test_loses_what_existed_before_it(stack, made):
    count_fault("kill")
    sql(stack, f"DROP DATABASE {NAME}")
    sql(stack, f"DELETE FROM {NAME} WHERE id > 1", "app")
    s3(stack.aws_endpoint_url).delete_object(Bucket=BACKUP_BUCKET, Key=KEY)


def test_removes_only_what_it_made(stack):
    sql(stack, f"CREATE DATABASE {NAME}_own")
    sql(stack, f"DROP DATABASE {NAME}_own")


def test_the_stack_cannot_be_read_when_it_ends_then_can(stack):
    import conftest

    conftest.OUTAGE["takes"] = 1


def test_the_stack_cannot_be_read_any_more(stack):
    import conftest

    conftest.OUTAGE["takes"] = 10**6
"""


def cleanup(stack: StackInfo, name: str) -> None:
    admin = admin_target(stack)
    with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
        for db in (name, f"{name}_own"):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(db)))
    with psycopg.connect(admin.conninfo("app"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
    with contextlib.suppress(Exception):
        s3(stack.aws_endpoint_url).delete_object(
            Bucket=BACKUP_BUCKET, Key=f"tests/{name}/manifest.json"
        )


def test_a_test_that_loses_data_fails_the_session_and_is_named(
    stack: StackInfo, tmp_path: Path
) -> None:
    token = secrets.token_hex(4)
    name = f"ledger_demo_{token}"
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_demo.py").write_text(TESTS)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
             str(tmp_path)],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO), "LEDGER_DEMO": token},
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    finally:
        cleanup(stack, name)
    out = run.stdout
    assert "4 passed" in out, out[-3000:] + run.stderr[-3000:]
    assert run.returncode == 1, "a loss fails the session"
    assert (
        "reliability: 1 faults injected in 1 tests (of 4); data before/after each test: "
        "1 databases lost, 1 backups lost, 2 rows lost; not measured in 1 tests"
    ) in out, out[-3000:]
    assert "  faults by kind: kill: 1" in out
    lost = [line for line in out.splitlines() if line.startswith("  LOST in ")]
    assert lost == [
        f"  LOST in test_demo.py::test_loses_what_existed_before_it: database {name} lost; "
        f"backup tests/{name}/manifest.json lost; 2 rows of app.public.{name} lost"
    ]
    unmeasured = [line for line in out.splitlines() if line.startswith("  not measured in ")]
    assert unmeasured == [
        "  not measured in test_demo.py::test_the_stack_cannot_be_read_any_more: no snapshot "
        "after the test within 1 s (OSError: PostgreSQL is down (simulated))"
    ]
