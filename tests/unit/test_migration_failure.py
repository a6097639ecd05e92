"""Migration units, the re-run check of autocommit files, the failure report and the statement
scrubber: pure decisions, no services."""

from __future__ import annotations

import pytest

from decisions.migration_failure import FailedAt, failure_report, render_failure, touched_indexes
from decisions.migration_plan_render import render_plan
from decisions.migrations import ApplyUnit, Migration, apply_units, make_plan, parse_migration
from opsflows.errors import GateRejected, scrub_statement, statement_secrets
from procedures.migration_plan import refuse_if_blocked

FALLBACK = "the pre-migration backup b/1.dump"


def mig(name: str, text: str) -> Migration:
    return parse_migration(name, text.encode())


# -- units -------------------------------------------------------------------------------


def test_consecutive_transactional_files_share_a_unit_and_autocommit_files_stand_alone() -> None:
    files = [
        mig("001.sql", "CREATE TABLE a (id bigint);"),
        mig("002.sql", "ALTER TABLE a ADD COLUMN b text;"),
        mig("003.sql", "CREATE INDEX CONCURRENTLY IF NOT EXISTS a_b ON a (b);"),
        mig("004.sql", "CREATE INDEX CONCURRENTLY IF NOT EXISTS a_id ON a (id);"),
        mig("005.sql", "ALTER TABLE a ADD COLUMN c text;"),
        mig("006.sql", "ALTER TABLE a ADD COLUMN d text;"),
    ]
    plan = make_plan(files, [])
    assert [(u.names, u.transactional) for u in plan.units] == [
        (("001.sql", "002.sql"), True),
        (("003.sql",), False),
        (("004.sql",), False),
        (("005.sql", "006.sql"), True),
    ]
    assert apply_units(()) == ()
    text = render_plan(plan)
    assert "applied as 4 unit(s), in order:" in text
    assert "unit 1: 001.sql, 002.sql (one transaction: all of them or none" in text
    assert "002.sql  (in one transaction, unit 1," in text
    assert "003.sql  (OUTSIDE a transaction (autocommit), unit 2," in text


# -- re-running autocommit files -----------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "fix"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t (x)", "IF NOT EXISTS <name> ON"),
        ("CREATE UNIQUE INDEX CONCURRENTLY i ON t (x)", "IF NOT EXISTS <name> ON"),
        ("CREATE INDEX CONCURRENTLY ON t (x)", "IF NOT EXISTS <name> ON"),
        ("DROP INDEX CONCURRENTLY i", "DROP INDEX CONCURRENTLY IF EXISTS <name>"),
    ],
)
def test_an_unguarded_concurrent_statement_is_refused_at_plan_time(sql: str, fix: str) -> None:
    plan = make_plan([mig("003_idx.sql", f"{sql};\n")], [])
    (problem,) = plan.blocking
    assert problem.startswith("003_idx.sql: line 1: not-rerunnable: `")
    assert sql in problem and fix in problem
    with pytest.raises(GateRejected, match="003_idx.sql: line 1: not-rerunnable") as info:
        refuse_if_blocked(plan)
    assert sql in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (x);\nDROP INDEX CONCURRENTLY IF EXISTS j;",
        "SET maintenance_work_mem = '1GB';\n"
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON t (x);",
        "REINDEX INDEX CONCURRENTLY i;\nVACUUM ANALYZE t;",
        "ALTER TABLE t DETACH PARTITION p CONCURRENTLY;",
    ],
)
def test_guarded_repeatable_or_lone_statements_pass(text: str) -> None:
    assert make_plan([mig("003.sql", text)], []).blocking == ()


def test_an_unguardable_statement_must_be_alone_in_its_file() -> None:
    plan = make_plan(
        [
            mig(
                "003.sql",
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON p1 (x);\n"
                "ALTER TABLE t DETACH PARTITION p CONCURRENTLY;",
            )
        ],
        [],
    )
    (problem,) = plan.blocking
    assert "line 2: not-rerunnable" in problem and "move it to a file of its own" in problem


# -- the failure report ------------------------------------------------------------------


def folder(*files: Migration) -> tuple[ApplyUnit, ...]:
    return make_plan(list(files), []).units


def test_a_failed_transaction_unit_leaves_nothing_applied() -> None:
    units = folder(
        mig("001.sql", "CREATE TABLE a (id bigint);"),
        mig("002.sql", "ALTER TABLE a ADD COLUMN b text;"),
        mig("003.sql", "ALTER TABLE missing ADD COLUMN c text;"),
    )
    report = failure_report(
        database="app",
        units=units,
        failed_unit=0,
        applied=[],
        failed_at=FailedAt("003.sql", 1),
        before={},
        after={},
        invalid_before=frozenset(),
        invalid_after=frozenset(),
        error='relation "missing" does not exist',
        fallback=FALLBACK,
    )
    assert report.not_applied == ("001.sql", "002.sql", "003.sql")
    assert report.rolled_back == ("001.sql", "002.sql", "003.sql")
    assert report.applied == () and report.leftovers == ()
    assert report.revert == ("nothing to revert: the database is as it was before this run",)
    assert report.impact() == "no change: nothing applied (001.sql, 002.sql, 003.sql not applied)"
    text = render_failure(report)
    assert "failed at 003.sql line 1" in text
    assert "rolled back together (one transaction, none of them applied): 001.sql" in text


def test_a_failed_concurrent_build_reports_the_invalid_index_and_both_ways_out() -> None:
    units = folder(
        mig("001.sql", "CREATE TABLE a (id bigint, email text);"),
        mig(
            "002.sql",
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS a_id ON a (id);\n"
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS a_email ON a (email);\n"
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS a_both ON a (id, email);",
        ),
        mig("003.sql", "ALTER TABLE a ADD COLUMN c text;"),
    )
    step = units[1].files[0]
    assert touched_indexes(step) == ("a_id", "a_email", "a_both")
    report = failure_report(
        database="app",
        units=units,
        failed_unit=1,
        applied=["001.sql"],
        failed_at=FailedAt("002.sql", 2),
        before={"a_id": None, "a_email": None, "a_both": None},
        after={"a_id": True, "a_email": False, "a_both": None},
        invalid_before=frozenset(),
        invalid_after=frozenset({"a_email"}),
        error="could not create unique index",
        fallback=FALLBACK,
    )
    assert report.applied == ("001.sql",)
    assert report.not_applied == ("002.sql", "003.sql")
    assert report.in_effect == ("line 1: index a_id built",)
    (left,) = report.leftovers
    assert left.index == "a_email" and "INVALID" in left.what
    assert left.finish == "REINDEX INDEX CONCURRENTLY a_email;"
    assert left.revert == "DROP INDEX CONCURRENTLY IF EXISTS a_email;"
    assert report.revert[:2] == (
        "DROP INDEX CONCURRENTLY IF EXISTS a_id;",
        "DROP INDEX CONCURRENTLY IF EXISTS a_email;",
    )
    assert FALLBACK in report.revert[2]
    assert "run the migration again" in report.finish[0]
    assert "`REINDEX INDEX CONCURRENTLY a_email;`" in report.finish[1]
    markdown = render_failure(report, markdown=True)
    assert "HALF-APPLIED: index a_email is INVALID" in markdown
    assert "- `DROP INDEX CONCURRENTLY IF EXISTS a_email;`" in markdown
    hint = report.hint()
    assert "not applied: 002.sql, 003.sql" in hint and "half-applied: index a_email" in hint
    assert report.impact().startswith("applied 1 migration(s): 001.sql; partly applied 002.sql")
    details = report.as_details()
    assert details["failed_at"] == "002.sql line 2" and details["half_applied"]


def test_an_index_that_existed_before_is_not_reverted_and_a_stray_invalid_one_is_named() -> None:
    units = folder(
        mig(
            "002.sql",
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS a_id ON a (id);\n"
            "REINDEX INDEX CONCURRENTLY a_x;",
        )
    )
    report = failure_report(
        database="app",
        units=units,
        failed_unit=0,
        applied=[],
        failed_at=FailedAt("002.sql", 2),
        before={"a_id": True},
        after={"a_id": True},
        invalid_before=frozenset({"old_broken"}),
        invalid_after=frozenset({"old_broken", "a_x_ccnew"}),
        error="deadlock",
        fallback=FALLBACK,
    )
    assert report.in_effect == ("line 1: index a_id exists (it did before this run)",)
    (left,) = report.leftovers
    assert left.index == "a_x_ccnew" and not left.rerun_finishes
    assert report.finish[0] == "DROP INDEX CONCURRENTLY IF EXISTS a_x_ccnew;"
    assert report.revert == ("DROP INDEX CONCURRENTLY IF EXISTS a_x_ccnew;",)


# -- secrets in statements -----------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE ROLE app2 LOGIN PASSWORD 'hunter2-9x'",
        "ALTER ROLE app2 WITH ENCRYPTED PASSWORD 'hunter2-9x' VALID UNTIL 'infinity'",
        "ALTER USER app2 PASSWORD E'hunter2-9x'",
        "ALTER USER app2 PASSWORD $p$hunter2-9x$p$",
        "CREATE USER MAPPING FOR app2 SERVER s OPTIONS (user 'u', password 'hunter2-9x')",
        "SELECT dblink_connect('postgresql://u:hunter2-9x@db/app')",
    ],
)
def test_statement_text_never_shows_a_password(sql: str) -> None:
    shown = scrub_statement(sql)
    assert "hunter2-9x" not in shown and "***" in shown
    step = make_plan([mig("001.sql", sql + ";")], []).pending[0]
    assert "hunter2-9x" not in step.steps[0].statement.head
    assert "hunter2-9x" not in render_plan(make_plan([mig("001.sql", sql + ";")], []))


def test_statement_secrets_are_the_masked_literals() -> None:
    assert statement_secrets("ALTER ROLE a PASSWORD 'it''s-long'") == ("it''s-long",)
    assert statement_secrets("CREATE TABLE t (x text DEFAULT 'abc')") == ()
    assert scrub_statement("ALTER ROLE \"o'k\" PASSWORD 'x'") == "ALTER ROLE \"o'k\" PASSWORD '***'"
