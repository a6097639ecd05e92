"""The real squawk binary on the fixture migrations: every unsafe case blocks, every rewrite
passes, squawk's own ignore comments mark a statement reviewed, and ``migrate plan`` exits
non-zero exactly when something blocks. No database is needed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from decisions.migrations import Migration, make_plan, parse_migration, runs_in_transaction
from opsflows.migrate_cli import main, plan_command
from tasks.squawk import PINNED_VERSION, lint_migrations, parse_report, run_squawk, squawk_version
from tests.migrate_support import FIXTURES, REPO

UNSAFE = FIXTURES / "lint" / "unsafe"
SAFE = FIXTURES / "lint" / "safe"


def load(folder: Path) -> list[Migration]:
    return [parse_migration(p.name, p.read_bytes()) for p in sorted(folder.glob("*.sql"))]


def blocking_tags(folder: Path, pg: str = "15") -> dict[str, set[str]]:
    """Per file: rules of blocking squawk findings plus tags of structural problems."""
    files = load(folder)
    num = int(pg) * 10000
    findings = lint_migrations.fn(
        folder, [(m.name, runs_in_transaction(m, num)) for m in files], pg
    )
    plan = make_plan(files, [], findings, pg, num)
    return {
        p.migration.name: {j.finding.rule for j in p.findings if j.verdict == "blocks"}
        | {problem.split(": ")[1] for problem in p.problems}
        for p in plan.pending
    }


def test_the_pinned_squawk_is_the_one_that_runs() -> None:
    assert squawk_version() == PINNED_VERSION


def test_every_unsafe_operation_is_blocked_by_the_rule_it_breaks() -> None:
    tags = blocking_tags(UNSAFE)
    assert len(tags) >= 18
    for name, found in tags.items():
        expected = re.search(r"^-- expect: (\S+)", (UNSAFE / name).read_text(), re.M)
        assert expected, f"{name} does not say which rule it expects"
        assert expected.group(1) in found, f"{name}: expected {expected.group(1)}, got {found}"


def test_every_safe_rewrite_passes() -> None:
    tags = blocking_tags(SAFE)
    assert len(tags) >= 18
    assert {name: found for name, found in tags.items() if found} == {}
    for name in tags:
        assert (SAFE / name).read_text().startswith("-- rewrite of:"), name


def test_ignore_comment_only_reviews_the_named_rule_on_the_next_statement(tmp_path: Path) -> None:
    (tmp_path / "001.sql").write_text(
        "-- squawk-ignore ban-drop-column -- reviewed: unused since release 42\n"
        "ALTER TABLE accounts DROP COLUMN IF EXISTS a;\n"
        "ALTER TABLE accounts DROP COLUMN IF EXISTS b;\n"
        "-- squawk-ignore renaming-column\n"
        "ALTER TABLE accounts DROP COLUMN IF EXISTS c;\n"
    )
    findings = run_squawk(tmp_path, ["001.sql"], assume_in_transaction=True)
    drops = sorted(f.line for f in findings if f.rule == "ban-drop-column")
    assert drops == [3, 5]


def test_pg_version_changes_the_verdict(tmp_path: Path) -> None:
    (tmp_path / "001.sql").write_text(
        "ALTER TABLE accounts ADD COLUMN IF NOT EXISTS tier bigint NOT NULL DEFAULT 0;\n"
    )

    def rules(pg: str) -> set[str]:
        return {
            f.rule
            for f in run_squawk(tmp_path, ["001.sql"], assume_in_transaction=True, pg_version=pg)
        }

    assert "adding-field-with-default" in rules("10")
    assert "adding-field-with-default" not in rules("15")


def test_outside_transaction_files_are_linted_as_such(tmp_path: Path) -> None:
    (tmp_path / "001.sql").write_text("CREATE INDEX CONCURRENTLY idx ON accounts (email);\n")
    findings = lint_migrations.fn(tmp_path, [("001.sql", False)])
    assert "prefer-robust-stmts" in {f.rule for f in findings}


def test_report_lines_are_one_based_and_names_are_bare() -> None:
    report = (
        '[{"file":"sub/001.sql","line":0,"column":0,"level":"Warning","message":"m",'
        '"help":null,"rule_name":"ban-drop-column","column_end":1,"line_end":0}]'
    )
    (finding,) = parse_report(report)
    assert (finding.file, finding.line, finding.rule, finding.help) == (
        "001.sql",
        1,
        "ban-drop-column",
        "",
    )


def test_plan_command_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert plan_command([str(SAFE)]) == 0
    out = capsys.readouterr().out
    assert "verdict: ok to apply" in out
    assert "index_concurrently.sql  (OUTSIDE a transaction" in out
    assert main(["plan", str(UNSAFE)]) == 1
    out = capsys.readouterr().out
    assert "BLOCKED" in out
    assert "BLOCKS: squawk require-concurrent-index-creation" in out
    assert "lock: SHARE; blocks: writes" in out


def test_plan_command_bad_input_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert plan_command([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert plan_command([str(tmp_path)]) == 2
    assert "no .sql files" in capsys.readouterr().err
    assert main(["apply", str(tmp_path)]) == 2


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app@db.internal:abc/app",
        "postgresql://app@db.internal:99999/app",
        "postgresql://app@h1,h2:5432,5433/app",
        "postgresql://app@[::1/app",
        "not a url at all",
    ],
)
def test_a_malformed_database_url_is_a_clear_error(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert plan_command([str(SAFE), "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("migrate plan: ") and "Traceback" not in err
    assert "OPSFLOWS_MIGRATE_PASSWORD" in err


def test_the_command_prints_no_traceback_and_no_password(tmp_path: Path) -> None:
    url = "postgresql://app:hunter2-cli-9x@db.internal:abc/app"
    done = subprocess.run(
        [sys.executable, "-m", "opsflows.migrate_cli", "plan", str(SAFE), "--database-url", url],
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr and "hunter2-cli-9x" not in done.stderr + done.stdout
    (tmp_path / "001_role.sql").write_text(
        "CREATE ROLE reader LOGIN PASSWORD 'hunter2-cli-9x';\n"
        "ALTER USER reader WITH PASSWORD 'hunter2-cli-9x';\n"
    )
    shown = subprocess.run(
        [sys.executable, "-m", "opsflows.migrate_cli", "plan", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
    )  # fmt: skip
    assert shown.returncode in (0, 1), shown
    assert "CREATE ROLE reader LOGIN PASSWORD '***'" in shown.stdout
    assert "hunter2-cli-9x" not in shown.stdout + shown.stderr
