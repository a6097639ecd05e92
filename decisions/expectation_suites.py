"""Great Expectations suites, one per table: reading them and judging their results.

One format for every suite the runbooks validate: a file named ``<table>.json`` (or
``<schema>.<table>.json``; the schema defaults to ``public``) holding one Great Expectations
1.x expectation suite in its own JSON format (what ``ExpectationSuite.to_json_dict()``
writes)::

    {"name": "accounts",
     "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "email"}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 0}}]}

The file name says which table the suite is validated against. Where the files live:

* migrations: ``<migrations_dir>/expectations/``, validated once the migrations are
  applied (the suites describe the schema and data as they must be after the newest one);
* restores: ``<prefix>expectations/<database>/`` in the backup store, validated against the
  restored scratch database.

A file that is not such a suite is bad input, rejected before any change with an error
naming the file (or the S3 object). Whether GX knows each expectation type and its
arguments is checked by the task that imports GX; this module only reads JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from decisions.suite_policy import allowed_list, refusal
from opsflows.errors import ConfigurationError

#: The folder, inside the migrations directory, holding the suites.
SUITES_DIR = "expectations"
#: Expectation fields GX 1.x writes besides ``type`` and ``kwargs``; accepted and ignored.
_EXTRA_FIELDS = frozenset(
    {"meta", "id", "notes", "description", "rendered_content", "expectation_context", "severity"}
)
_SUITE_FIELDS = frozenset({"name", "expectations", "id", "meta", "notes", "suite_parameters"})
_IDENT = r"[A-Za-z_][A-Za-z0-9_$]*"
_FILE = re.compile(rf"^(?:(?P<schema>{_IDENT})\.)?(?P<table>{_IDENT})\.json$")
_TYPE = re.compile(r"^expect_[a-z0-9_]+$")
#: The largest suite file accepted, in bytes.
MAX_SUITE_BYTES = 1_000_000


@dataclass(frozen=True)
class SuiteExpectation:
    """One expectation of a suite: its GX type and arguments (kept as canonical JSON)."""

    type: str
    kwargs_json: str = "{}"

    @property
    def kwargs(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.kwargs_json)
        return value

    @property
    def column(self) -> str:
        """The column(s) it looks at, or ``""`` for a table-level expectation."""
        return columns_of(self.kwargs)


@dataclass(frozen=True)
class TableSuite:
    """A suite file and the table it is validated against.

    ``location`` is what errors and reports call the file (``expectations/<file>`` when
    empty; the ``s3://`` URL of a suite kept in the backup store).
    """

    file: str
    name: str
    schema: str
    table: str
    expectations: tuple[SuiteExpectation, ...]
    location: str = ""

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def where(self) -> str:
        """The file's path or object URL, as errors name it."""
        return self.location or f"{SUITES_DIR}/{self.file}"


@dataclass(frozen=True)
class SuiteResult:
    """One expectation's outcome against the validated (migrated or restored) database."""

    file: str
    table: str
    expectation: str
    column: str
    success: bool
    observed: str

    def describe(self) -> str:
        on = f"{self.table}.{self.column}" if self.column else self.table
        return f"{self.file}: {self.expectation} on {on} (observed {self.observed})"


def columns_of(kwargs: Mapping[str, Any]) -> str:
    """The column names an expectation's arguments name, comma-separated."""
    if isinstance(kwargs.get("column"), str):
        return str(kwargs["column"])
    pair = [kwargs.get("column_A"), kwargs.get("column_B")]
    if all(isinstance(c, str) for c in pair):
        return ", ".join(str(c) for c in pair)
    listed = kwargs.get("column_list")
    if isinstance(listed, list) and all(isinstance(c, str) for c in listed):
        return ", ".join(listed)
    return ""


def _expectation(path: str, index: int, raw: Any) -> SuiteExpectation:
    where = f"expectation suite {path}: expectation {index}"
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{where} is not a JSON object")
    if "expectation_type" in raw and "type" not in raw:
        raise ConfigurationError(
            f"{where} uses the Great Expectations 0.x key 'expectation_type'",
            hint="GX 1.x suites name it 'type'; rename the key",
        )
    kind = raw.get("type")
    if not isinstance(kind, str) or not _TYPE.match(kind):
        raise ConfigurationError(
            f"{where} has no valid 'type' (got {str(kind)[:60]!r})",
            hint='write e.g. {"type": "expect_column_values_to_not_be_null",'
            ' "kwargs": {"column": "id"}}',
        )
    unknown = sorted(set(raw) - _EXTRA_FIELDS - {"type", "kwargs"})
    if unknown:
        raise ConfigurationError(f"{where} ({kind}) has unknown field(s): {', '.join(unknown)}")
    kwargs = raw.get("kwargs", {})
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise ConfigurationError(f"{where} ({kind}): 'kwargs' must be a JSON object")
    why = refusal(kind, kwargs)
    if why:
        raise ConfigurationError(
            f"{where} ({kind}) is refused: {why}",
            hint=f"allowed expectation types: {allowed_list()}",
        )
    return SuiteExpectation(kind, json.dumps(kwargs, sort_keys=True))


def parse_suite(file: str, data: bytes, location: str = "") -> TableSuite:
    """Read one suite file; anything but a GX 1.x suite is a ConfigurationError naming it.

    Args:
        file: The file's name, ``<table>.json`` or ``<schema>.<table>.json``.
        data: Its bytes.
        location: How errors name it (default ``expectations/<file>``).
    """
    path = location or f"{SUITES_DIR}/{file}"
    m = _FILE.match(file)
    if not m:
        raise ConfigurationError(
            f"expectation suite {path}: the file name must be <table>.json or"
            " <schema>.<table>.json (the table the suite is validated against)"
        )
    if len(data) > MAX_SUITE_BYTES:
        raise ConfigurationError(f"expectation suite {path} is larger than {MAX_SUITE_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"expectation suite {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigurationError(f"expectation suite {path} must be a JSON object (a GX suite)")
    unknown = sorted(set(doc) - _SUITE_FIELDS)
    if unknown:
        raise ConfigurationError(
            f"expectation suite {path} has unknown field(s): {', '.join(unknown)}",
            hint="a GX 1.x suite has name, expectations and optionally id, meta, notes",
        )
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"expectation suite {path} has no 'name'")
    raw = doc.get("expectations")
    if not isinstance(raw, list) or not raw:
        raise ConfigurationError(
            f"expectation suite {path} has no expectations",
            hint="'expectations' must be a non-empty list; delete the file to check nothing",
        )
    expectations = tuple(_expectation(path, i, item) for i, item in enumerate(raw, start=1))
    return TableSuite(
        file=file,
        name=name.strip(),
        schema=m.group("schema") or "public",
        table=m.group("table"),
        expectations=expectations,
        location=location,
    )


def one_per_table(suites: Iterable[TableSuite]) -> tuple[TableSuite, ...]:
    """The suites, unless two name the same table (a ConfigurationError naming both)."""
    found = tuple(suites)
    seen: dict[str, TableSuite] = {}
    for suite in found:
        if suite.qualified in seen:
            raise ConfigurationError(
                f"expectation suites {seen[suite.qualified].where} and {suite.where} both name"
                f" table {suite.qualified}; keep one file per table"
            )
        seen[suite.qualified] = suite
    return found


def failures(results: Iterable[SuiteResult]) -> tuple[str, ...]:
    """Every failed expectation, described (file, type, table/column, observed value)."""
    return tuple(r.describe() for r in results if not r.success)


def result_rows(results: Iterable[SuiteResult]) -> list[dict[str, Any]]:
    """Rows of the validation artifact."""
    return [
        {
            "suite": r.file,
            "expectation": r.expectation,
            "table": r.table,
            "column": r.column or "(table)",
            "success": r.success,
            "observed": r.observed,
        }
        for r in results
    ]


def render_suites(suites: Iterable[TableSuite], *, markdown: bool = False) -> str:
    """The suites a run will validate after applying, for the plan."""
    found = list(suites)
    h, li = ("## ", "- ") if markdown else ("", "  ")
    if not found:
        return f"\n{h}Expectation suites: none ({SUITES_DIR}/*.json)\n"
    out = ["", f"{h}Expectation suites checked after applying ({len(found)})"]
    for s in found:
        out.append(f"{li}{s.where} -> {s.qualified}: {len(s.expectations)} expectation(s)")
        for e in s.expectations:
            out.append(f"{li}  {e.type}" + (f" ({e.column})" if e.column else ""))
    return "\n".join(out) + "\n"
