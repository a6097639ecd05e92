"""Scratch databases and fixture folders for the migration tests.

Every test migrates its own database (``migtest_<purpose>_<random>``, created and dropped
with the stack's superuser), never the shared ``app`` database.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from blocks.postgres import PostgresTarget
from devstack import stack as devstack
from procedures.operation import AWS

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "migrations"


def superuser_password(info: Any) -> str:
    return devstack.stack_secrets(Path(info.state_dir))["postgres"]


def target_for(info: Any, database: str) -> PostgresTarget:
    """A PostgresTarget (superuser) for ``database`` on the test stack; not saved."""
    return PostgresTarget(
        host=info.host,
        port=info.postgres_port,
        database=database,
        user="postgres",
        password=superuser_password(info),
    )


@contextlib.contextmanager
def scratch_database(info: Any, purpose: str) -> Iterator[PostgresTarget]:
    """Create an empty database for one test and drop it afterwards."""
    name = f"migtest_{purpose}_{secrets.token_hex(3)}"
    admin = target_for(info, "postgres")
    with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield target_for(info, name)
    finally:
        with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def migrations_dir(tmp_path: Path, *folders: str) -> Path:
    """A fresh folder holding the ``*.sql`` files of the named fixture folders."""
    out = tmp_path / "migrations"
    out.mkdir(exist_ok=True)
    for folder in folders:
        for src in sorted((FIXTURES / folder).glob("*.sql")):
            shutil.copy(src, out / src.name)
    return out


def query(target: PostgresTarget, text: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement (autocommit); its rows, or [] when it returns none."""
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        cur = conn.execute(text.encode(), params or None)
        return cur.fetchall() if cur.description else []


def migrations_table(target: PostgresTarget) -> list[tuple[Any, ...]] | None:
    """``(name, checksum)`` rows of schema_migrations, or None when the table is absent."""
    if not query(target, "SELECT to_regclass('schema_migrations') IS NOT NULL")[0][0]:
        return None
    return query(target, "SELECT name, checksum FROM schema_migrations ORDER BY name")


@contextlib.contextmanager
def saved_target(target: PostgresTarget, purpose: str) -> Iterator[str]:
    """Save ``target`` as a uniquely named block for a flow run; delete it afterwards."""
    name = f"migtest-{purpose}-{secrets.token_hex(3)}"
    target.save(name, overwrite=True)
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            PostgresTarget.delete(name)


@contextlib.contextmanager
def change_limit(environment: str) -> Iterator[str]:
    """A strict limit of 1 named ``change-<environment>`` owned by the test; removed after."""
    from prefect.client.orchestration import get_client

    name = f"change-{environment}"
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, 1)
    try:
        yield name
    finally:
        with get_client(sync_client=True) as client, contextlib.suppress(Exception):
            client.delete_global_concurrency_limit_by_name(name)


@contextlib.contextmanager
def flow_database(
    info: Any, purpose: str, environment: str
) -> Iterator[tuple[PostgresTarget, str]]:
    """What a migrate-flow test runs against: a scratch database saved as a block, and the
    strict change limit of ``environment``; yields ``(target, block name)``."""
    with (
        scratch_database(info, purpose) as target,
        saved_target(target, purpose) as block,
        change_limit(environment),
    ):
        yield target, block


def run_flow(directory: Path, block: str, environment: str, **params: Any) -> Any:
    """Run the migrate flow on ``directory`` against ``block``; its final state."""
    from flows.migrate import migrate_database

    params.setdefault("lock_timeout_s", 0.5)
    return migrate_database(
        str(directory), database=block, environment=environment, return_state=True, **params
    )


def ops_log_entry(info: Any, run_id: Any) -> tuple[Any, ...]:
    """``(operation, status, impact, issues, follow_up, details)`` of a flow run's entry."""
    secret = devstack.stack_secrets(Path(info.state_dir))["opsflows"]
    with psycopg.connect(
        host=info.host, port=info.postgres_port, dbname="opsflows", user="opsflows", password=secret
    ) as conn:
        rows = conn.execute(
            "SELECT operation, status, impact, issues, follow_up, details FROM ops_log"
            " WHERE flow_run_id = %s",
            (str(run_id),),
        ).fetchall()
    assert len(rows) == 1, rows
    return tuple(rows[0])


APP_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "migrations" / "app"


def git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env
    )
    return result.stdout.strip()


def make_repo(tmp_path: Path) -> tuple[Path, str, str]:
    """A repo whose db/migrations holds one file at the first commit and all three at the second."""
    repo = tmp_path / "repo"
    folder = repo / "db" / "migrations"
    folder.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    shutil.copy(APP_FIXTURES / "001_create_accounts.sql", folder)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    first = git(repo, "rev-parse", "HEAD")
    for name in ("002_add_note.sql", "003_index_note.sql"):
        shutil.copy(APP_FIXTURES / name, folder)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "second")
    git(repo, "tag", "v2")
    # The working tree has an uncommitted file that no ref contains.
    (folder / "999_uncommitted.sql").write_text("DROP TABLE accounts;\n")
    return repo, first, "v2"


def with_suites(directory: Path, *files: str) -> Path:
    """Copy fixture suites (``tests/fixtures/migrations/suites/<file>``) into
    ``<directory>/expectations/``; the expectations folder."""
    out = directory / "expectations"
    out.mkdir(exist_ok=True)
    for name in files:
        shutil.copy(FIXTURES / "suites" / name, out / name)
    return out


def apply_files(target: PostgresTarget, directory: Path) -> list[str]:
    """Apply a folder's pending files directly (no flow), unit by unit as the runner does;
    their names."""
    from decisions.migrations import ApplyPolicy
    from procedures.migration_plan import compute_plan, load_migrations
    from tasks.migrate import apply_unit

    plan = compute_plan(*load_migrations(str(directory)), target)
    assert not plan.blocked, plan.blocking + plan.errors
    policy = ApplyPolicy(lock_timeout_s=0.5, statement_timeout_s=30, lock_retries=0)
    return [r["name"] for unit in plan.units for r in apply_unit(target, unit, policy, "test")]


@contextlib.contextmanager
def backup_store() -> Iterator[tuple[str, Callable[[], list[str]]]]:
    """A BackupStore block on its own prefix of the test bucket: its name and a function
    listing the keys under it; the objects and the block are removed afterwards."""
    from prefect_aws import AwsCredentials

    from blocks.storage import BackupStore

    name = f"migtest-backups-{secrets.token_hex(3)}"
    store = BackupStore(
        bucket=devstack.BACKUP_BUCKET,
        prefix=f"{name}/",
        aws_credentials=AwsCredentials.load(AWS),
    )
    store.save(name, overwrite=True)
    s3 = store.s3_client()

    def keys() -> list[str]:
        listed = s3.list_objects_v2(Bucket=devstack.BACKUP_BUCKET, Prefix=f"{name}/")
        return [str(item["Key"]) for item in listed.get("Contents", [])]

    try:
        yield name, keys
    finally:
        for key in keys():
            s3.delete_object(Bucket=devstack.BACKUP_BUCKET, Key=key)
        with contextlib.suppress(Exception):
            BackupStore.delete(name)


def sink_messages(info: Any, channel: str) -> list[str]:
    """What the kubesim notification sink received on ``channel`` ("page", "notify")."""
    response = httpx.get(f"{info.kube_url}/_sink/{channel}", timeout=5)
    response.raise_for_status()
    data = response.json()
    items = data if isinstance(data, list) else data.get("items", data.get("messages", []))
    return [str(item) for item in items]


def paged(info: Any, marker: str) -> list[str]:
    """Messages the page channel received that mention ``marker``."""
    return [m for m in sink_messages(info, "page") if marker in m]
