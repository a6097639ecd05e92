"""Migration decisions without services: splitting, locks, lint verdicts, plans, verification."""

from __future__ import annotations

import hashlib

import pytest

from decisions.migration_plan_render import render_plan
from decisions.migration_verify import SchemaSnapshot, check_expectations, final_expectations
from decisions.migrations import (
    Applied,
    ApplyPolicy,
    Expectation,
    Finding,
    Migration,
    judge,
    make_plan,
    parse_expectations,
    parse_ignores,
    parse_migration,
    runs_in_transaction,
)
from decisions.sql_locks import (
    AE,
    SUE,
    concurrent_index_names,
    lock_for,
    split_statements,
)
from opsflows.errors import ConfigurationError


def mig(name: str, text: str) -> Migration:
    return parse_migration(name, text.encode())


# -- splitting ----------------------------------------------------------------------------


def test_split_respects_quotes_comments_and_dollar_bodies() -> None:
    text = (
        "-- leading; comment\n"
        "CREATE TABLE a (x text DEFAULT 'a;b', y text DEFAULT E'it\\'s;');\n"
        "/* block ; /* nested ; */ still */\n"
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END $body$;\n"
        'SELECT "odd;name", $$a;b$$ FROM a -- tail ; comment\n'
        ";\n"
        "UPDATE a SET x = 'it''s; fine'"
    )
    stmts = split_statements(text)
    assert [s.line for s in stmts] == [2, 4, 5, 7]
    assert stmts[0].sql.endswith("E'it\\'s;')")
    assert "RETURN 1; END" in stmts[1].sql
    assert stmts[2].code == 'SELECT "odd;name", $$a;b$$ FROM a'
    assert stmts[3].sql == "UPDATE a SET x = 'it''s; fine'"


def test_statement_spanning_lines_keeps_its_span() -> None:
    (stmt,) = split_statements("\n\nALTER TABLE t\n  ADD COLUMN c text;\n-- trailing\n")
    assert (stmt.line, stmt.end_line) == (3, 4)


def test_dollar_sign_in_identifier_or_parameter_is_not_a_quote() -> None:
    stmts = split_statements("SELECT a$b$ FROM t; SELECT $1; SELECT 2")
    assert [s.code for s in stmts] == ["SELECT a$b$ FROM t", "SELECT $1", "SELECT 2"]


# -- locks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "lock", "outside"),
    [
        ("CREATE INDEX i ON t (x)", "SHARE", False),
        ("create unique index concurrently if not exists i on t (x)", SUE, True),
        ("DROP INDEX i", AE, False),
        ("DROP INDEX CONCURRENTLY IF EXISTS i", SUE, True),
        ("ALTER TABLE t ADD COLUMN c text", AE, False),
        ("ALTER TABLE t ALTER COLUMN c TYPE bigint", AE, False),
        (
            "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES u (id) NOT VALID",
            "SHARE ROW EXCLUSIVE on both tables",
            False,
        ),
        ("ALTER TABLE t VALIDATE CONSTRAINT fk", SUE, False),
        ("ALTER TABLE t DETACH PARTITION p CONCURRENTLY", SUE, True),
        ("REINDEX INDEX CONCURRENTLY i", SUE, True),
        ("REINDEX SCHEMA public", AE, True),
        ("VACUUM ANALYZE t", SUE, True),
        ("VACUUM (FULL, ANALYZE) t", AE, True),
        ("CREATE TABLE t (id bigint)", "none (new object)", False),
        (
            "CREATE TABLE t (a bigint REFERENCES u (id))",
            "SHARE ROW EXCLUSIVE on the referenced table",
            False,
        ),
        ("UPDATE t SET a = 1", "ROW EXCLUSIVE", False),
        ("LOCK TABLE t IN SHARE MODE", "SHARE", False),
        ("TRUNCATE t", AE, False),
        ("SET lock_timeout = '1s'", "none", False),
        ("DO $$ BEGIN END $$", "unknown", False),
    ],
)
def test_lock_table(sql: str, lock: str, outside: bool) -> None:
    info = lock_for(sql)
    assert (info.lock, info.outside_transaction) == (lock, outside)


def test_enum_value_runs_outside_a_transaction_only_on_old_servers() -> None:
    m = mig("001.sql", "ALTER TYPE s ADD VALUE IF NOT EXISTS 'x' AFTER 'y';")
    assert runs_in_transaction(m, 150000)
    assert runs_in_transaction(m, None)
    assert not runs_in_transaction(m, 110000)


def test_concurrent_index_names_are_found_for_cleanup() -> None:
    m = mig(
        "003.sql",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS a_idx ON t (a);\n"
        'CREATE UNIQUE INDEX CONCURRENTLY "B idx" ON t (b);\nCREATE INDEX c_idx ON t (c);',
    )
    assert concurrent_index_names(m.statements) == ("a_idx", '"B idx"')


# -- files, ignores, verdicts -------------------------------------------------------------


def test_parse_migration_checksums_the_bytes_and_rejects_empty_or_binary_files() -> None:
    data = b"-- verify: t\nCREATE TABLE t (id bigint);\n"
    m = parse_migration("001_t.sql", data)
    assert m.checksum == hashlib.sha256(data).hexdigest()
    assert m.expectations == (Expectation("table", "t"),)
    with pytest.raises(ConfigurationError, match="no SQL statement"):
        parse_migration("002.sql", b"-- only a comment\n")
    with pytest.raises(ConfigurationError, match="not UTF-8"):
        parse_migration("003.sql", b"\xff\xfe")


def test_ignore_comments_follow_squawk_syntax() -> None:
    text = (
        "-- squawk-ignore ban-drop-column, renaming-column -- reviewed by ops\n"
        "ALTER TABLE t DROP COLUMN c;\n"
        "/* squawk-ignore-file prefer-robust-stmts */\n"
        "-- squawk-ignore-file\n"
        "-- squawk-ignored-not-a-directive x\n"
    )
    ignores = parse_ignores(text)
    assert [(i.line, sorted(i.rules), i.whole_file) for i in ignores] == [
        (1, ["ban-drop-column", "renaming-column"], False),
        (3, ["prefer-robust-stmts"], True),
        (4, [], True),
    ]


def test_a_finding_blocks_unless_reviewed_for_that_rule_and_statement() -> None:
    m = mig(
        "005.sql",
        "-- squawk-ignore ban-drop-column\n"
        "ALTER TABLE t DROP COLUMN a;\n"
        "\n"
        "ALTER TABLE t\n"
        "  -- squawk-ignore renaming-column\n"
        "  RENAME COLUMN b TO c;\n"
        "ALTER TABLE t DROP COLUMN d;\n",
    )
    verdict = {
        (f.line, f.rule): judge(f, m).verdict
        for f in (
            Finding("005.sql", 2, "ban-drop-column", "drop"),
            Finding("005.sql", 6, "renaming-column", "rename"),
            Finding("005.sql", 7, "ban-drop-column", "drop"),
            Finding("005.sql", 2, "prefer-robust-stmts", "robust"),
            Finding("005.sql", 7, "require-lock-timeout", "timeout"),
        )
    }
    assert verdict == {
        (2, "ban-drop-column"): "reviewed",
        (6, "renaming-column"): "reviewed",
        (7, "ban-drop-column"): "blocks",
        (2, "prefer-robust-stmts"): "blocks",
        (7, "require-lock-timeout"): "runner",
    }


def test_file_level_ignore_reviews_the_rule_everywhere() -> None:
    m = mig("006.sql", "ALTER TABLE t DROP COLUMN a;\n-- squawk-ignore-file ban-drop-column\n")
    assert judge(Finding("006.sql", 1, "ban-drop-column", "x"), m).verdict == "reviewed"
    assert judge(Finding("006.sql", 1, "renaming-column", "x"), m).verdict == "blocks"


# -- plans --------------------------------------------------------------------------------


def three() -> list[Migration]:
    return [
        mig("001_a.sql", "CREATE TABLE a (id bigint);"),
        mig("002_b.sql", "ALTER TABLE a ADD COLUMN b text;"),
        mig("003_c.sql", "CREATE INDEX CONCURRENTLY IF NOT EXISTS c ON a (b);"),
    ]


def test_plan_lists_pending_in_order_with_modes() -> None:
    files = three()
    plan = make_plan(list(reversed(files)), [Applied("001_a.sql", files[0].checksum)])
    assert plan.applied == ("001_a.sql",)
    assert [(p.migration.name, p.transactional) for p in plan.pending] == [
        ("002_b.sql", True),
        ("003_c.sql", False),
    ]
    assert not plan.blocked


def test_edited_applied_migration_is_an_error_not_a_rerun() -> None:
    files = three()
    plan = make_plan(files, [Applied("001_a.sql", "0" * 64)])
    assert plan.blocked
    assert "001_a.sql was edited after it was applied" in plan.errors[0]
    assert "001_a.sql" not in [p.migration.name for p in plan.pending]


def test_missing_and_out_of_order_files_refuse_the_run() -> None:
    files = three()
    applied = [Applied("002_b.sql", files[1].checksum), Applied("009_gone.sql", "x")]
    plan = make_plan(files, applied)
    assert any("009_gone.sql is recorded as applied but missing" in e for e in plan.errors)
    assert any("001_a.sql sorts before the already applied 009_gone.sql" in e for e in plan.errors)


def test_transaction_control_and_mixed_modes_block() -> None:
    files = [
        mig("001.sql", "BEGIN;\nALTER TABLE a ADD COLUMN b text;\nCOMMIT;"),
        mig(
            "002.sql",
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON a (b);\nALTER TABLE a ADD COLUMN c text;",
        ),
        mig(
            "003.sql",
            "SET maintenance_work_mem = '1GB';\n"
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON a (b);",
        ),
    ]
    plan = make_plan(files, [])
    assert [p.problems for p in plan.pending][2] == ()
    assert "transaction-control" in plan.pending[0].problems[0]
    assert "line 2: mixed-transaction-modes" in plan.pending[1].problems[0]
    assert len(plan.blocking) == 2


def test_only_unreviewed_findings_of_pending_files_block() -> None:
    files = three()
    findings = [
        Finding("002_b.sql", 1, "require-lock-timeout", "t"),
        Finding("003_c.sql", 1, "prefer-robust-stmts", "robust"),
        Finding("other.sql", 1, "ban-drop-table", "x"),
    ]
    plan = make_plan(files, [Applied("001_a.sql", files[0].checksum)], findings)
    assert plan.blocking == ("003_c.sql:1 prefer-robust-stmts: robust",)
    text = render_plan(plan)
    assert "verdict: BLOCKED" in text
    assert "BLOCKS: squawk prefer-robust-stmts at line 1" in text
    assert "OUTSIDE a transaction" in text
    assert "lock: SHARE UPDATE EXCLUSIVE" in text


def test_policy_validates_and_backs_off_exponentially() -> None:
    policy = ApplyPolicy(
        lock_timeout_s=0.5,
        statement_timeout_s=10,
        lock_retries=4,
        backoff_base_s=0.5,
        backoff_cap_s=3,
    )
    assert policy.delays() == (0.5, 1.0, 2.0, 3.0)
    assert ApplyPolicy(lock_retries=0).delays() == ()
    with pytest.raises(ConfigurationError, match="lock_timeout_s"):
        ApplyPolicy(lock_timeout_s=0)
    with pytest.raises(ConfigurationError, match="statement_timeout_s"):
        ApplyPolicy(lock_timeout_s=5, statement_timeout_s=1)
    with pytest.raises(ConfigurationError, match="lock_retries"):
        ApplyPolicy(lock_retries=-1)


# -- verification -------------------------------------------------------------------------


def test_verify_declarations_parse_and_reject_nonsense() -> None:
    exps = parse_expectations(
        "-- verify: Accounts, accounts.note, index accounts_note_idx\n"
        "--verify: absent accounts.legacy, absent index old_idx, public.accounts.email\n"
    )
    assert [e.describe() for e in exps] == [
        "table accounts",
        "column accounts.note",
        "index accounts_note_idx",
        "absent column accounts.legacy",
        "absent index old_idx",
        "column public.accounts.email",
    ]
    with pytest.raises(ConfigurationError, match="007.sql:1"):
        parse_expectations("-- verify: drop table x\n", "007.sql")


def test_later_files_override_earlier_declarations() -> None:
    first = mig("001.sql", "-- verify: t.legacy, t\nCREATE TABLE t (legacy text);")
    second = mig("002.sql", "-- verify: absent t.legacy\nALTER TABLE t DROP COLUMN legacy;")
    assert set(final_expectations([first, second])) == {
        Expectation("column", "t.legacy", present=False),
        Expectation("table", "t"),
    }


def test_check_expectations_reports_each_mismatch() -> None:
    snap = SchemaSnapshot(
        tables=frozenset({"t"}),
        columns=frozenset({"t.a", "t.legacy"}),
        indexes={"good_idx": True, "bad_idx": False},
    )
    exps = [
        Expectation("table", "t"),
        Expectation("column", "t.b"),
        Expectation("column", "t.legacy", present=False),
        Expectation("index", "good_idx"),
        Expectation("index", "bad_idx"),
        Expectation("index", "gone_idx"),
        Expectation("index", "good_idx", present=False),
    ]
    assert check_expectations(exps, snap) == (
        "column t.b is missing",
        "column t.legacy still exists",
        "index bad_idx is INVALID",
        "index gone_idx is missing",
        "index good_idx should be gone but exists",
    )
