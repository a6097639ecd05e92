"""The migrate-database flow through the real Prefect server, on a scratch database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blocks.postgres import PostgresTarget
from flows.migrate import migrate_database
from opsflows.errors import ConfigurationError, VerificationFailed
from procedures.operation import AWS
from tasks.migration_schema import schema_fingerprint
from tests.migrate_support import (
    flow_database,
    make_repo,
    migrations_dir,
    migrations_table,
    ops_log_entry,
    query,
    run_flow,
    superuser_password,
)
from tests.support import assert_no_secret, flow_run_artifacts, flow_run_id, flow_run_texts

ENV = "migtest-e2e"


@pytest.fixture
def db(stack: Any, bootstrapped: Any) -> Iterator[tuple[PostgresTarget, str]]:
    with flow_database(stack, "flow", ENV) as made:
        yield made


def run(directory: Path, block: str, **params: Any) -> Any:
    return run_flow(directory, block, ENV, **params)


def test_dry_run_publishes_the_plan_and_changes_nothing(
    stack: Any, db: tuple[PostgresTarget, str], tmp_path: Path
) -> None:
    target, block = db
    state = run(migrations_dir(tmp_path, "app"), block, dry_run=True)
    assert state.is_completed(), state
    assert state.result()["pending"] == [
        "001_create_accounts.sql",
        "002_add_note.sql",
        "003_index_note.sql",
    ]
    assert migrations_table(target) is None
    run_id = flow_run_id(state)
    (plan,) = [a for a in flow_run_artifacts(run_id) if a.startswith("migration-plan")]
    assert "003_index_note.sql  (OUTSIDE a transaction" in plan
    assert "lock: ACCESS EXCLUSIVE" in plan and "verdict: ok to apply" in plan
    _, status, impact, _, _, details = ops_log_entry(stack, run_id)
    assert (status, impact, details["dry_run"]) == ("succeeded", "none: dry run, plan only", True)


def test_apply_verify_record_and_refuse_an_edited_file(
    stack: Any, db: tuple[PostgresTarget, str], tmp_path: Path
) -> None:
    target, block = db
    directory = migrations_dir(tmp_path, "app")
    state = run(directory, block, skip_backup=True, reason="e2e migration")
    assert state.is_completed(), state
    result = state.result()
    assert [r["attempts"] for r in result["applied"]] == [1, 1, 1]
    assert "index accounts_note_idx" in result["verified"]
    assert result["schema_hash_after"] != result["schema_hash_before"]
    run_id = flow_run_id(state)
    assert query(target, "SELECT DISTINCT applied_by FROM schema_migrations") == [(str(run_id),)]
    _, status, impact, issues, follow_up, details = ops_log_entry(stack, run_id)
    assert status == "succeeded"
    assert impact.startswith("applied 3 migration(s): 001_create_accounts.sql")
    assert "pre-migration backup skipped (skip_backup=True)" in issues
    assert details["backup"] == "skipped by parameter skip_backup=True"
    assert "take a backup" in follow_up
    assert_no_secret(flow_run_texts(run_id), [superuser_password(stack)])

    before = schema_fingerprint(target)
    note = directory / "002_add_note.sql"
    note.write_text(note.read_text().replace("free text", "notes"))
    state = run(directory, block, skip_backup=True)
    with pytest.raises(
        ConfigurationError, match="002_add_note.sql was edited after it was applied"
    ):
        state.result()
    assert schema_fingerprint(target) == before
    assert len(migrations_table(target) or []) == 3


def test_a_declaration_the_schema_contradicts_fails_verification(
    stack: Any, db: tuple[PostgresTarget, str], tmp_path: Path
) -> None:
    target, block = db
    directory = migrations_dir(tmp_path, "app")
    (directory / "004_tier.sql").write_text(
        "-- verify: accounts.tier, absent accounts.note\n"
        "ALTER TABLE accounts ADD COLUMN IF NOT EXISTS tier bigint;\n"
    )
    state = run(directory, block, skip_backup=True)
    with pytest.raises(VerificationFailed, match="column accounts.note still exists"):
        state.result()
    assert len(migrations_table(target) or []) == 4
    _, status, _, _, follow_up, _ = ops_log_entry(stack, flow_run_id(state))
    assert status == "failed" and "fix-forward" in follow_up


def test_a_missing_change_limit_is_a_configuration_error_before_any_change(
    db: tuple[PostgresTarget, str], tmp_path: Path
) -> None:
    target, block = db
    state = migrate_database(
        str(migrations_dir(tmp_path, "app")),
        database=block,
        environment="migtest-nolimit",
        skip_backup=True,
        return_state=True,
    )
    with pytest.raises(ConfigurationError, match="change-migtest-nolimit does not exist"):
        state.result()
    assert migrations_table(target) is None


def test_the_pre_migration_backup_runs_first(
    stack: Any, db: tuple[PostgresTarget, str], tmp_path: Path
) -> None:
    from prefect_aws import AwsCredentials

    from blocks.storage import BackupStore
    from devstack.stack import BACKUP_BUCKET

    target, block = db
    store = BackupStore(
        bucket=BACKUP_BUCKET, prefix="migtest/", aws_credentials=AwsCredentials.load(AWS)
    )
    store.save("migtest-backups", overwrite=True)
    try:
        state = run(migrations_dir(tmp_path, "app"), block, backup_store="migtest-backups")
        assert state.is_completed(), state
        _, _, _, issues, _, details = ops_log_entry(stack, flow_run_id(state))
        backup = details["backup"]
        assert backup["key"].startswith("migtest/") and len(backup["sha256"]) == 64
        assert backup["tables"] == "{}", "the backup must be taken before the migration"
        assert "backup skipped" not in issues
        assert len(migrations_table(target) or []) == 3
    finally:
        s3 = store.s3_client()
        listed = s3.list_objects_v2(Bucket=BACKUP_BUCKET, Prefix=f"migtest/{target.database}")
        for item in listed.get("Contents", []):
            s3.delete_object(Bucket=BACKUP_BUCKET, Key=item["Key"])
        BackupStore.delete("migtest-backups")


def test_git_ref_applies_the_migrations_of_that_commit(
    stack: Any, db: tuple[PostgresTarget, str], tmp_path: Path
) -> None:
    target, block = db
    repo, first, _ = make_repo(tmp_path)
    state = migrate_database(
        "db/migrations",
        database=block,
        environment=ENV,
        skip_backup=True,
        lock_timeout_s=0.5,
        git_ref=first,
        repository=str(repo),
        return_state=True,
    )
    assert state.is_completed(), state
    assert [r["name"] for r in state.result()["applied"]] == ["001_create_accounts.sql"]
    assert query(target, "SELECT name FROM schema_migrations") == [("001_create_accounts.sql",)]
    details = ops_log_entry(stack, flow_run_id(state))[5]
    assert details["migrations_dir"] == f"db/migrations@{first}"


def test_a_bad_git_ref_still_leaves_its_operation_log_entry(
    stack: Any, db: tuple[PostgresTarget, str], tmp_path: Path
) -> None:
    target, block = db
    repo, _, _ = make_repo(tmp_path)
    state = migrate_database(
        "db/migrations",
        database=block,
        environment=ENV,
        skip_backup=True,
        git_ref="no-such-branch",
        repository=str(repo),
        return_state=True,
    )
    assert state.is_failed(), state
    _, status, impact, issues, _, details = ops_log_entry(stack, flow_run_id(state))
    assert status == "failed" and "no-such-branch" in issues
    assert impact == "no change"
    assert details["migrations_dir"] == "db/migrations@no-such-branch"
    assert migrations_table(target) is None


def test_the_plan_artifact_never_shows_a_password_literal(
    stack: Any, db: tuple[PostgresTarget, str], tmp_path: Path
) -> None:
    _, block = db
    directory = migrations_dir(tmp_path, "app")
    (directory / "004_role.sql").write_text(
        "CREATE ROLE migtest_reader LOGIN PASSWORD 'hunter2-plan-9x';\n"
        "ALTER ROLE migtest_reader PASSWORD 'hunter2-plan-9x';\n"
    )
    state = run(directory, block, dry_run=True)
    assert state.is_completed(), state
    run_id = flow_run_id(state)
    (plan,) = [a for a in flow_run_artifacts(run_id) if a.startswith("migration-plan")]
    assert "CREATE ROLE migtest_reader LOGIN PASSWORD '***'" in plan
    assert "unit 1: 001_create_accounts.sql, 002_add_note.sql" in plan
    assert_no_secret(flow_run_texts(run_id), ["hunter2-plan-9x"])
