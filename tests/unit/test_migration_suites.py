"""Expectation suites kept with the migrations, without services: reading files, results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from decisions.expectation_suites import (
    SuiteExpectation,
    SuiteResult,
    TableSuite,
    columns_of,
    failures,
    parse_suite,
    render_suites,
    result_rows,
)
from opsflows.errors import ConfigurationError
from tasks.migration_checks import load_suites

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "migrations" / "suites"


def suite(**doc: Any) -> bytes:
    doc.setdefault("name", "accounts")
    doc.setdefault(
        "expectations",
        [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "email"}}],
    )
    return json.dumps(doc).encode()


def test_the_fixture_suite_as_gx_writes_it_is_read() -> None:
    parsed = parse_suite("accounts.json", (FIXTURE / "accounts.json").read_bytes())
    assert (parsed.schema, parsed.table, parsed.name) == ("public", "accounts", "accounts")
    assert [e.type for e in parsed.expectations] == [
        "expect_table_columns_to_match_set",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_unique",
        "expect_column_values_to_be_between",
    ]
    assert parsed.expectations[3].kwargs == {"column": "balance", "min_value": 0}
    assert [e.column for e in parsed.expectations] == ["", "email", "id", "balance"]


def test_the_file_name_names_schema_and_table() -> None:
    parsed = parse_suite("billing.Invoices.json", suite())
    assert (parsed.schema, parsed.table, parsed.qualified) == (
        "billing",
        "Invoices",
        "billing.Invoices",
    )


@pytest.mark.parametrize(
    ("file", "data", "message"),
    [
        ("accounts.json", b'{"name": "x", "expectations": [', "accounts.json is not valid JSON"),
        ("accounts.json", b"\xff\xfe", "accounts.json is not valid JSON"),
        ("accounts.json", b"[1, 2]", "must be a JSON object"),
        ("accounts.json", suite(expectations=[]), "has no expectations"),
        ("accounts.json", suite(name=""), "has no 'name'"),
        ("accounts.json", suite(tables={}), "unknown field(s): tables"),
        ("a.b.c.json", suite(), "file name must be <table>.json"),
        ("1accounts.json", suite(), "file name must be <table>.json"),
        ("accounts.json", suite(expectations=["x"]), "expectation 1 is not a JSON object"),
        ("accounts.json", suite(expectations=[{"kwargs": {}}]), "expectation 1 has no valid"),
        (
            "accounts.json",
            suite(expectations=[{"type": "drop table accounts"}]),
            "has no valid 'type'",
        ),
        (
            "accounts.json",
            suite(expectations=[{"expectation_type": "expect_column_to_exist"}]),
            "0.x key 'expectation_type'",
        ),
        (
            "accounts.json",
            suite(expectations=[{"type": "expect_column_to_exist", "kwargs": [1]}]),
            "'kwargs' must be a JSON object",
        ),
        (
            "accounts.json",
            suite(expectations=[{"type": "expect_column_to_exist", "colum": "x"}]),
            "unknown field(s): colum",
        ),
        (
            "accounts.json",
            suite(expectations=[{"type": "expect_column_to_exist", "kwargs": {"batch_id": "b"}}]),
            "'batch_id' is set by the runner",
        ),
    ],
)
def test_a_malformed_suite_is_bad_input_naming_the_file(
    file: str, data: bytes, message: str
) -> None:
    with pytest.raises(ConfigurationError, match="expectation suite expectations/") as err:
        parse_suite(file, data)
    assert message in str(err.value)
    assert file in str(err.value)


def test_the_second_expectation_is_named_when_it_is_the_bad_one() -> None:
    data = suite(
        expectations=[
            {"type": "expect_column_to_exist", "kwargs": {"column": "id"}},
            {"type": 7},
        ]
    )
    with pytest.raises(ConfigurationError, match="accounts.json: expectation 2 has no valid"):
        parse_suite("accounts.json", data)


def test_columns_of_each_domain() -> None:
    assert columns_of({"column": "email"}) == "email"
    assert columns_of({"column_A": "a", "column_B": "b"}) == "a, b"
    assert columns_of({"column_list": ["a", "b", "c"]}) == "a, b, c"
    assert columns_of({"min_value": 0}) == ""


def test_load_suites_reads_the_expectations_folder_in_name_order(tmp_path: Path) -> None:
    assert load_suites(tmp_path) == ()
    folder = tmp_path / "expectations"
    folder.mkdir()
    (folder / "README.md").write_text("suites for the migrations")
    (folder / "orders.json").write_bytes(suite(name="orders"))
    (folder / "accounts.json").write_bytes(suite())
    assert [s.file for s in load_suites(tmp_path)] == ["accounts.json", "orders.json"]
    (folder / "public.accounts.json").write_bytes(suite())
    with pytest.raises(ConfigurationError, match="both name table public.accounts"):
        load_suites(tmp_path)


def test_load_suites_rejects_a_broken_file_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "expectations"
    folder.mkdir()
    (folder / "accounts.json").write_bytes(suite())
    (folder / "orders.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match="expectations/orders.json is not valid JSON"):
        load_suites(tmp_path)


RESULTS = (
    SuiteResult("accounts.json", "public.accounts", "expect_column_to_exist", "id", True, "ok"),
    SuiteResult(
        "accounts.json",
        "public.accounts",
        "expect_column_values_to_be_between",
        "balance",
        False,
        "[-5]",
    ),
    SuiteResult(
        "orders.json", "public.orders", "expect_table_row_count_to_be_between", "", False, "0"
    ),
)


def test_failures_name_the_expectation_the_column_and_what_was_seen() -> None:
    assert failures(RESULTS) == (
        "accounts.json: expect_column_values_to_be_between on public.accounts.balance"
        " (observed [-5])",
        "orders.json: expect_table_row_count_to_be_between on public.orders (observed 0)",
    )
    assert failures(RESULTS[:1]) == ()


def test_result_rows_hold_expectation_table_column_success_and_observed() -> None:
    rows = result_rows(RESULTS)
    assert rows[1] == {
        "suite": "accounts.json",
        "expectation": "expect_column_values_to_be_between",
        "table": "public.accounts",
        "column": "balance",
        "success": False,
        "observed": "[-5]",
    }
    assert rows[2]["column"] == "(table)"


def test_render_suites_lists_each_suite_and_its_expectations() -> None:
    parsed = TableSuite(
        "accounts.json",
        "accounts",
        "public",
        "accounts",
        (SuiteExpectation("expect_column_to_exist", '{"column": "id"}'),),
    )
    text = render_suites([parsed], markdown=True)
    assert "## Expectation suites checked after applying (1)" in text
    assert "expectations/accounts.json -> public.accounts: 1 expectation(s)" in text
    assert "expect_column_to_exist (id)" in text
    assert "Expectation suites: none" in render_suites([])
