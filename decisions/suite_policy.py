"""What a user's expectation suite may ask for, and what of its results reports show.

Suites come from outside the code (the backup store, the migrations folder) and GX runs
them against real data, so only expectation types that take no SQL and read no other table
are accepted: :data:`ALLOWED_TYPES`, the column and table expectations of Great
Expectations 1.x that compare values, counts and the schema. Refused, whatever their
arguments: ``expect_query_results_to_match_comparison`` and ``unexpected_rows_expectation``
(they run the suite's own SQL), ``expect_table_row_count_to_equal_other_table`` (it reads a
table the suite names), custom and unknown types. On an allowed type:

* ``row_condition`` is accepted in the forms GX turns into a SQLAlchemy expression of a
  quoted column and bound literals: a condition object (``comparison``, ``nullity``,
  ``and``, ``or``) or a ``col("name") <op> value`` string with the ``great_expectations``
  ``condition_parser``. A ``pass_through`` condition or a ``pandas``/``spark`` parser (raw
  filter text) is refused;
* ``result_format`` and ``batch_id`` are the runner's, refused;
* any argument named like ``query``/``sql`` (``*_query``, ``sql_*``) is refused.

Results: by default (``row_samples`` off) a user expectation is reported by counts and
percentages (``3 of 30 rows unexpected (10%)``) and, for the kinds whose observed value is
a count or describes the schema, that value; sample rows (``partial_unexpected_list``,
unexpected index lists and queries) and values computed from the data (min, max, the
distinct values ...) are left out of messages and artifacts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

#: Observed value is a count, a proportion or describes the schema: shown.
SHOWN = "shown"
#: Column map expectation: reported as counts of unexpected rows.
ROWS = "rows"
#: Observed value is computed from the data (min, max, distinct values ...): withheld.
WITHHELD = "withheld"

_SHOWN = (
    "expect_column_to_exist",
    "expect_column_values_to_be_of_type",
    "expect_column_values_to_be_in_type_list",
    "expect_table_columns_to_match_set",
    "expect_table_columns_to_match_ordered_list",
    "expect_table_column_count_to_be_between",
    "expect_table_column_count_to_equal",
    "expect_table_row_count_to_be_between",
    "expect_table_row_count_to_equal",
    "expect_column_unique_value_count_to_be_between",
    "expect_column_proportion_of_unique_values_to_be_between",
    "expect_column_proportion_of_non_null_values_to_be_between",
)
_ROWS = (
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_null",
    "expect_column_values_to_be_unique",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_not_be_in_set",
    "expect_column_values_to_match_regex",
    "expect_column_values_to_not_match_regex",
    "expect_column_values_to_match_regex_list",
    "expect_column_values_to_not_match_regex_list",
    "expect_column_values_to_match_like_pattern",
    "expect_column_values_to_not_match_like_pattern",
    "expect_column_values_to_match_like_pattern_list",
    "expect_column_values_to_not_match_like_pattern_list",
    "expect_column_value_lengths_to_be_between",
    "expect_column_value_lengths_to_equal",
    "expect_column_pair_values_to_be_equal",
    "expect_column_pair_values_a_to_be_greater_than_b",
    "expect_column_pair_values_to_be_in_set",
    "expect_compound_columns_to_be_unique",
    "expect_select_column_values_to_be_unique_within_record",
)
_WITHHELD = (
    "expect_column_min_to_be_between",
    "expect_column_max_to_be_between",
    "expect_column_mean_to_be_between",
    "expect_column_median_to_be_between",
    "expect_column_sum_to_be_between",
    "expect_column_stdev_to_be_between",
    "expect_column_distinct_values_to_be_in_set",
    "expect_column_distinct_values_to_contain_set",
    "expect_column_distinct_values_to_equal_set",
    "expect_column_most_common_value_to_be_in_set",
)
#: Every expectation type a user suite may hold, and how its result is reported.
ALLOWED_TYPES: Mapping[str, str] = {
    **dict.fromkeys(_SHOWN, SHOWN),
    **dict.fromkeys(_ROWS, ROWS),
    **dict.fromkeys(_WITHHELD, WITHHELD),
}
#: ``condition_parser`` values GX parses into a column, an operator and a bound literal.
SAFE_PARSERS = frozenset({"great_expectations", "great_expectations__experimental__"})
_CONDITIONS = frozenset({"comparison", "nullity", "and", "or"})
_OPERATORS = frozenset({"==", "!=", "<", "<=", ">", ">=", "IN", "NOT_IN"})
_RUNNER_KWARGS = ("batch_id", "result_format")
_SQL_NAME = re.compile(r"(?:^|_)(?:query|queries|sql)(?:_|$)", re.IGNORECASE)
#: Result fields kept when row samples are off (counts and percentages).
_COUNTS = (
    "element_count",
    "unexpected_count",
    "unexpected_percent",
    "unexpected_percent_total",
    "unexpected_percent_nonmissing",
    "missing_count",
    "missing_percent",
)


def allowed_list() -> str:
    """The allowed types, for an error's hint."""
    return ", ".join(sorted(ALLOWED_TYPES))


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _condition_refusal(cond: Any, depth: int = 0) -> str | None:
    if depth > 8 or not isinstance(cond, dict):
        return "a row_condition object must be a JSON object"
    kind = cond.get("type")
    if kind not in _CONDITIONS:
        return (
            f"row_condition type {str(kind)[:40]!r} is not allowed"
            " (comparison, nullity, and, or; no pass_through)"
        )
    if kind in ("and", "or"):
        parts = cond.get("conditions")
        if not isinstance(parts, list) or not parts:
            return f"a row_condition '{kind}' needs a list of conditions"
        return next(filter(None, (_condition_refusal(p, depth + 1) for p in parts)), None)
    column = cond.get("column")
    if not isinstance(column, dict) or not isinstance(column.get("name"), str):
        return 'a row_condition names its column as {"name": "<column>"}'
    if kind == "comparison":
        if cond.get("operator") not in _OPERATORS:
            return f"row_condition operator {str(cond.get('operator'))[:20]!r} is not allowed"
        param = cond.get("parameter")
        if not (_scalar(param) or (isinstance(param, list) and all(map(_scalar, param)))):
            return "a row_condition parameter must be a value or a list of values"
    return None


def _row_condition_refusal(kwargs: Mapping[str, Any]) -> str | None:
    cond = kwargs.get("row_condition")
    parser = kwargs.get("condition_parser")
    if cond is None or cond == "":
        return None
    if isinstance(cond, str):
        if parser not in SAFE_PARSERS:
            return (
                f"row_condition text with condition_parser {str(parser)[:40]!r} is raw filter"
                ' text; use condition_parser "great_expectations" (col("name") > 5)'
                " or a condition object"
            )
        return None
    if parser not in (None, *SAFE_PARSERS):
        return f"condition_parser {str(parser)[:40]!r} is not allowed"
    return _condition_refusal(cond)


def refusal(kind: str, kwargs: Mapping[str, Any]) -> str | None:
    """Why a user suite may not hold this expectation (None when it may).

    Args:
        kind: The expectation's GX type (``expect_column_values_to_not_be_null``).
        kwargs: Its arguments.
    """
    if kind not in ALLOWED_TYPES:
        return (
            f"{kind} is not an allowed expectation type (user suites may hold only column"
            " and table expectations that take no SQL)"
        )
    for name in _RUNNER_KWARGS:
        if name in kwargs:
            return f"'{name}' is set by the runner, remove it"
    sql_named = sorted(k for k in kwargs if _SQL_NAME.search(k))
    if sql_named:
        return f"argument(s) {', '.join(sql_named)} would carry SQL; not allowed"
    return _row_condition_refusal(kwargs)


def _percent(value: Any) -> str:
    number = float(value)
    return f"{number:.4g}%"


def error_of(result: Mapping[str, Any]) -> str | None:
    """The error GX met computing an expectation, if any: ``exception_info`` is one
    ``{raised_exception, exception_message}`` or, for a failed metric, a mapping of metric
    ids to such entries."""
    info = result.get("exception_info") or {}
    if not isinstance(info, dict):
        return None
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if isinstance(entry, dict) and entry.get("raised_exception", True):
            message = entry.get("exception_message")
            if message:
                return "error: " + " ".join(str(message).split())[:200]
    return None


def observed_counts(kind: str, result: Mapping[str, Any]) -> str:
    """What a user expectation saw, without row values: counts, percentages and (for the
    :data:`SHOWN` kinds) the observed count or schema value."""
    res = result.get("result") or {}
    error = error_of(result)
    if error:
        return error
    parts: list[str] = []
    value = res.get("observed_value")
    how = ALLOWED_TYPES.get(kind, WITHHELD)
    if value is not None and how == SHOWN:
        parts.append(json.dumps(value, default=str)[:300])
    elif value is not None:
        parts.append("value withheld (row samples off)")
    if res.get("unexpected_count") is not None:
        total = res.get("element_count")
        text = f"{res['unexpected_count']}" + (f" of {total}" if total is not None else "")
        text += " rows unexpected"
        if res.get("unexpected_percent") is not None:
            text += f" ({_percent(res['unexpected_percent'])})"
        parts.append(text)
    if res.get("missing_count"):
        parts.append(f"{res['missing_count']} null")
    return "; ".join(parts) or "as expected"


def redact_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """A GX expectation result with only counts and percentages left in ``result`` (and
    the observed value of the :data:`SHOWN` kinds)."""
    config = result.get("expectation_config") or {}
    kind = str(config.get("type") if isinstance(config, dict) else "")
    res = result.get("result") or {}
    kept = {k: res[k] for k in _COUNTS if k in res}
    if "observed_value" in res and ALLOWED_TYPES.get(kind) == SHOWN:
        kept["observed_value"] = res["observed_value"]
    return {**result, "result": kept}
