"""Expectation suites kept with the migrations, with Great Expectations itself: the plan
command lists and checks them; validation against a real database reports every outcome."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blocks.postgres import PostgresTarget
from decisions.expectation_suites import parse_suite
from opsflows.migrate_cli import plan_command
from tasks.migration_checks import run_suites
from tests.migrate_support import (
    apply_files,
    migrations_dir,
    query,
    scratch_database,
    with_suites,
)


@pytest.fixture
def db(stack: Any) -> Iterator[PostgresTarget]:
    with scratch_database(stack, "gx") as target:
        yield target


def test_plan_command_lists_the_suites_and_refuses_an_unknown_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = migrations_dir(tmp_path, "app")
    folder = with_suites(directory, "accounts.json")
    assert plan_command([str(directory)]) == 0
    out = capsys.readouterr().out
    assert "Expectation suites checked after applying (1)" in out
    assert "expectations/accounts.json -> public.accounts: 4 expectation(s)" in out

    (folder / "orders.json").write_text(
        json.dumps(
            {
                "name": "orders",
                "expectations": [{"type": "expect_table_to_be_tidy", "kwargs": {}}],
            }
        )
    )
    assert plan_command([str(directory)]) == 2
    err = capsys.readouterr().err
    assert "expectations/orders.json: expectation 1 (expect_table_to_be_tidy)" in err

    (folder / "orders.json").write_text(
        json.dumps(
            {
                "name": "orders",
                "expectations": [
                    {"type": "expect_column_values_to_not_be_null", "kwargs": {"colum": "id"}}
                ],
            }
        )
    )
    assert plan_command([str(directory)]) == 2
    assert "expectations/orders.json: expectation 1" in capsys.readouterr().err


def test_validation_reports_values_a_missing_column_and_a_missing_table(
    db: PostgresTarget, tmp_path: Path
) -> None:
    apply_files(db, migrations_dir(tmp_path, "app"))
    query(db, "INSERT INTO accounts (email, balance) VALUES ('a@example.invalid', 3)")
    accounts = parse_suite(
        "accounts.json",
        json.dumps(
            {
                "name": "accounts",
                "expectations": [
                    {
                        "type": "expect_column_values_to_be_in_set",
                        "kwargs": {"column": "balance", "value_set": [0, 1]},
                    },
                    {"type": "expect_column_to_exist", "kwargs": {"column": "tier"}},
                    {"type": "expect_table_row_count_to_equal", "kwargs": {"value": 1}},
                ],
            }
        ).encode(),
    )
    orders = parse_suite(
        "orders.json",
        b'{"name": "orders", "expectations": [{"type": "expect_table_row_count_to_equal",'
        b' "kwargs": {"value": 0}}]}',
    )
    results = run_suites(db, [accounts, orders])
    outcome = {(r.table, r.expectation): (r.success, r.column, r.observed) for r in results}
    assert outcome[("public.accounts", "expect_column_values_to_be_in_set")][:2] == (
        False,
        "balance",
    )
    # Counts, not the row's value (3): no row samples unless asked for.
    assert outcome[("public.accounts", "expect_column_values_to_be_in_set")][2] == (
        "1 of 1 rows unexpected (100%)"
    )
    assert outcome[("public.accounts", "expect_column_to_exist")][:2] == (False, "tier")
    assert outcome[("public.accounts", "expect_table_row_count_to_equal")] == (True, "", "1")
    assert outcome[("public.orders", "expect_table_row_count_to_equal")] == (
        False,
        "",
        "table missing",
    )
    sessions = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'opsflows-verify'"
    )
    deadline = time.monotonic() + 20  # a closed session leaves pg_stat_activity soon after
    while query(db, sessions) != [(0,)]:
        assert time.monotonic() < deadline, "GX left a pooled session open after validating"
        time.sleep(0.2)
