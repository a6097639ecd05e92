"""User expectation suites may hold only expectations that take no SQL; their results are
reported as counts unless row samples are asked for. No services."""

from __future__ import annotations

import json
from typing import Any

import pytest

from decisions.expectation_suites import parse_suite
from decisions.suite_policy import (
    ALLOWED_TYPES,
    SHOWN,
    observed_counts,
    redact_result,
    refusal,
)
from opsflows.errors import ConfigurationError

PG_AUTHID = "SELECT rolname, rolpassword FROM pg_authid"


def suite_with(*expectations: dict[str, Any]) -> bytes:
    return json.dumps({"name": "accounts", "expectations": list(expectations)}).encode()


@pytest.mark.parametrize(
    ("expectation", "named"),
    [
        (
            {
                "type": "expect_query_results_to_match_comparison",
                "kwargs": {
                    "base_query": PG_AUTHID,
                    "comparison_data_source_name": "restored",
                    "comparison_query": PG_AUTHID,
                },
            },
            "expect_query_results_to_match_comparison",
        ),
        (
            {
                "type": "expect_table_row_count_to_equal_other_table",
                "kwargs": {"other_table_name": "pg_authid"},
            },
            "expect_table_row_count_to_equal_other_table",
        ),
        ({"type": "expect_column_values_to_be_purple", "kwargs": {}}, "to_be_purple"),
    ],
    ids=["query-comparison", "other-table", "unknown"],
)
def test_a_type_outside_the_allow_list_is_refused_naming_it_and_the_allowed_ones(
    expectation: dict[str, Any], named: str
) -> None:
    ok = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "email"}}
    with pytest.raises(ConfigurationError) as err:
        parse_suite("accounts.json", suite_with(ok, expectation), "s3://b/expectations/a.json")
    message = str(err.value)
    assert "s3://b/expectations/a.json: expectation 2" in message
    assert named in message and "not an allowed expectation type" in message
    assert err.value.hint and "expect_column_values_to_not_be_null" in err.value.hint
    assert "expect_table_row_count_to_be_between" in err.value.hint
    assert "pg_authid" not in (err.value.hint or "")


def test_unexpected_rows_expectation_is_refused() -> None:
    spec = {
        "type": "unexpected_rows_expectation",
        "kwargs": {"unexpected_rows_query": "SELECT rolpassword FROM pg_authid, {batch}"},
    }
    with pytest.raises(ConfigurationError, match="unexpected_rows_expectation"):
        parse_suite("accounts.json", suite_with(spec))


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"value": 1, "result_format": "COMPLETE"}, "'result_format' is set by the runner"),
        ({"value": 1, "batch_id": "b"}, "'batch_id' is set by the runner"),
        ({"value": 1, "unexpected_rows_query": "SELECT 1"}, "would carry SQL"),
        ({"value": 1, "sql": "SELECT 1"}, "would carry SQL"),
        (
            {"value": 1, "row_condition": "rolpassword > ''", "condition_parser": "pandas"},
            "raw filter text",
        ),
        ({"value": 1, "row_condition": "x > 1"}, "raw filter text"),
        (
            {"value": 1, "row_condition": {"type": "pass_through", "pass_through_filter": "1=1"}},
            "pass_through",
        ),
        (
            {
                "value": 1,
                "row_condition": {
                    "type": "or",
                    "conditions": [
                        {"type": "nullity", "column": {"name": "a"}, "is_null": True},
                        {"type": "pass_through", "pass_through_filter": "1=1"},
                    ],
                },
            },
            "pass_through",
        ),
        (
            {
                "value": 1,
                "row_condition": {
                    "type": "comparison",
                    "column": {"name": "a"},
                    "operator": "==",
                    "parameter": {"$sql": "x"},
                },
            },
            "a value or a list of values",
        ),
        (
            {
                "value": 1,
                "row_condition": {
                    "type": "comparison",
                    "column": {"name": "a"},
                    "operator": "LIKE",
                    "parameter": "x",
                },
            },
            "operator 'LIKE' is not allowed",
        ),
    ],
)
def test_sql_carrying_arguments_are_refused_even_on_an_allowed_type(
    kwargs: dict[str, Any], why: str
) -> None:
    assert why in (refusal("expect_table_row_count_to_equal", kwargs) or "")
    with pytest.raises(ConfigurationError, match="expect_table_row_count_to_equal"):
        parse_suite(
            "accounts.json",
            suite_with({"type": "expect_table_row_count_to_equal", "kwargs": kwargs}),
        )


@pytest.mark.parametrize(
    "condition",
    [
        'col("status") == "active"',
        {"type": "comparison", "column": {"name": "a"}, "operator": "IN", "parameter": [1, 2]},
        {
            "type": "and",
            "conditions": [
                {"type": "nullity", "column": {"name": "a"}, "is_null": False},
                {"type": "comparison", "column": {"name": "b"}, "operator": ">", "parameter": 0},
            ],
        },
    ],
)
def test_parsed_row_conditions_are_allowed(condition: Any) -> None:
    kwargs = {"column": "email", "row_condition": condition}
    if isinstance(condition, str):
        kwargs["condition_parser"] = "great_expectations"
    parsed = parse_suite(
        "accounts.json",
        suite_with({"type": "expect_column_values_to_not_be_null", "kwargs": kwargs}),
    )
    assert parsed.expectations[0].kwargs["row_condition"] == condition


def test_no_allowed_type_takes_sql_or_another_table() -> None:
    from great_expectations.expectations.registry import get_expectation_impl

    for kind in ALLOWED_TYPES:
        fields = set(get_expectation_impl(kind).__fields__)
        risky = {f for f in fields if "query" in f or "sql" in f or "table" in f}
        assert risky == set(), f"{kind} takes {risky}"


RESULT: dict[str, Any] = {
    "success": False,
    "expectation_config": {
        "type": "expect_column_values_to_match_regex",
        "kwargs": {"column": "email", "regex": "@"},
    },
    "result": {
        "element_count": 30,
        "unexpected_count": 3,
        "unexpected_percent": 10.0,
        "missing_count": 0,
        "partial_unexpected_list": ["alice-secret", "bob-secret"],
        "partial_unexpected_counts": [{"value": "alice-secret", "count": 1}],
        "partial_unexpected_index_list": [{"email": "alice-secret"}],
        "unexpected_index_query": "SELECT email FROM accounts WHERE ...",
    },
    "exception_info": {"raised_exception": False},
}


def test_results_show_counts_and_percentages_not_row_values() -> None:
    text = observed_counts("expect_column_values_to_match_regex", RESULT)
    assert text == "3 of 30 rows unexpected (10%)"
    redacted = json.dumps(redact_result(RESULT))
    assert "secret" not in redacted and "unexpected_index_query" not in redacted
    assert redact_result(RESULT)["result"] == {
        "element_count": 30,
        "unexpected_count": 3,
        "unexpected_percent": 10.0,
        "missing_count": 0,
    }


@pytest.mark.parametrize(
    ("kind", "value", "shown"),
    [
        ("expect_table_row_count_to_equal", 30, "30"),
        ("expect_table_columns_to_match_set", ["email", "id"], '["email", "id"]'),
        ("expect_column_max_to_be_between", 99_000, "value withheld (row samples off)"),
        ("expect_column_distinct_values_to_be_in_set", ["alice"], "value withheld"),
    ],
)
def test_observed_values_are_shown_only_for_counts_and_schema(
    kind: str, value: Any, shown: str
) -> None:
    result = {"expectation_config": {"type": kind}, "result": {"observed_value": value}}
    assert observed_counts(kind, result).startswith(shown)
    kept = redact_result(result)["result"]
    assert ("observed_value" in kept) == (ALLOWED_TYPES[kind] == SHOWN)


def test_an_error_of_a_metric_is_reported_not_as_expected() -> None:
    failed_metric = {
        "success": False,
        "result": {},
        "exception_info": {
            "MetricConfigurationID(metric_name='base_query.table')": {
                "exception_traceback": "Traceback ...",
                "exception_message": "(psycopg.errors.InsufficientPrivilege) permission\n denied",
                "raised_exception": True,
            }
        },
    }
    kind = "expect_table_row_count_to_equal"
    assert observed_counts(kind, failed_metric) == (
        "error: (psycopg.errors.InsufficientPrivilege) permission denied"
    )
    plain = {"exception_info": {"raised_exception": True, "exception_message": "boom"}}
    assert observed_counts(kind, plain) == "error: boom"
    fine = {"exception_info": {"raised_exception": False, "exception_message": None}}
    assert observed_counts(kind, {**fine, "result": {"observed_value": 3}}) == "3"
