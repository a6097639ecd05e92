"""Verify a restored database with Great Expectations against the backup's manifest.

Checks, each a GX expectation run against the scratch database itself:

* tables present: the set of tables equals the manifest's (none missing, none extra);
* row counts and highest primary keys: every ``(table, count)`` pair equals the manifest's;
* schema hash: the same SQL that fingerprinted the dump hashes the restored schema;
* the user's own suites for the database, if any: one GX 1.x suite per table, in the format
  the migrations use (:mod:`decisions.expectation_suites`), kept in the backup store as
  ``<prefix>expectations/<database>/<table>.json`` (or ``<schema>.<table>.json``).

The user's suites are read, checked against the allow-list of
:mod:`decisions.suite_policy` (no expectation that takes SQL) and every expectation built by
GX before the restore creates the scratch database: a malformed or refused suite stops it
with an error naming the S3 object. The manifest checks (opsflows' own queries) run as the
admin; the user's suites as the read-only role ``opsflows_verify`` (:mod:`tasks.verify_role`)
and, unless the run asks for row samples, their results hold counts and percentages only.
The results become a table artifact and a markdown artifact holding the GX JSON. GX runs
through :mod:`tasks.gx_validation` (lazy import, libpq settings, both engines closed
afterwards).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from decisions.backups import Manifest
from decisions.expectation_suites import (
    MAX_SUITE_BYTES,
    SUITES_DIR,
    SuiteResult,
    TableSuite,
    one_per_table,
    parse_suite,
)
from opsflows import retry
from opsflows.errors import ConfigurationError, scrub
from tasks.fingerprint import SCHEMA_HASH_SQL, TABLES_SQL, table_rows_query
from tasks.gx_validation import (
    GxSession,
    build_expectations,
    gx_session,
    observed,
    table_missing,
)
from tasks.gx_validation import preload as preload
from tasks.postgres import connect
from tasks.storage import aws_errors
from tasks.verify_role import verify_role

_MAX_JSON = 60_000


@dataclass(frozen=True)
class CheckResult:
    """One expectation's outcome, flattened for reports."""

    check: str
    expectation: str
    success: bool
    observed: str


@dataclass(frozen=True)
class VerificationReport:
    """Every expectation's outcome and the raw GX results."""

    database: str
    backup_id: str
    checks: tuple[CheckResult, ...]
    raw: list[dict[str, Any]] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return bool(self.checks) and all(c.success for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]

    def summary(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "evaluated": len(self.checks),
            "failed": [
                f"{c.check}: {c.expectation} (observed {c.observed})" for c in self.failures
            ],
        }


def suites_folder(store: BackupStore, database: str, key: str | None = None) -> str:
    """The S3 folder of the user's suites: ``key`` under the prefix, or the convention."""
    folder = store.key(key) if key else store.key(SUITES_DIR, database)
    return folder.rstrip("/") + "/"


def load_user_suites(
    store: BackupStore, database: str, key: str | None = None
) -> tuple[TableSuite, ...]:
    """The user's suites for ``database``: every ``*.json`` object in its suites folder.

    Each object is one GX suite named for its table; anything else (bad JSON, not a GX 1.x
    suite, a bad name, two suites for one table) is a ConfigurationError naming the object.
    No folder means no user checks, unless ``key`` named it explicitly.
    """
    client = store.s3_client()
    folder = suites_folder(store, database, key)
    where = f"s3://{store.bucket}/{folder}"
    objects: list[dict[str, Any]] = []
    with aws_errors(f"list {where}"):
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=store.bucket, Prefix=folder
        ):
            objects += [o for o in page.get("Contents", []) if str(o["Key"]).endswith(".json")]
    if not objects and key:
        raise ConfigurationError(
            f"no expectation suites under {where}",
            hint="keep one GX suite per table there: <table>.json or <schema>.<table>.json",
        )
    suites = []
    for obj in sorted(objects, key=lambda o: str(o["Key"])):
        name = str(obj["Key"])
        url = f"s3://{store.bucket}/{name}"
        if int(obj.get("Size") or 0) > MAX_SUITE_BYTES:
            raise ConfigurationError(
                f"expectation suite {url} is larger than {MAX_SUITE_BYTES} bytes"
            )
        with aws_errors(f"read {url}"):
            body = client.get_object(Bucket=store.bucket, Key=name)["Body"].read()
        suites.append(parse_suite(name[len(folder) :], body, url))
    return one_per_table(suites)


@task(name="read expectation suites", **retry.NETWORK)
def read_user_suites(
    store: BackupStore, database: str, key: str | None = None
) -> tuple[TableSuite, ...]:
    """Read the user's expectation suites for ``database`` and have GX build each one.

    Runs before the scratch database is created: a malformed suite, or an expectation
    type or argument GX does not know, stops the restore with an error naming the object.

    Args:
        store: The backup store holding the suites.
        database: The live database's name (the conventional folder is
            ``<prefix>expectations/<database>/``).
        key: Another folder under the store prefix, if given (it must hold suites).

    Returns:
        The suites, in object-name order (none when the conventional folder is empty).
    """
    suites = load_user_suites(store, database, key)
    expectations = sum(len(build_expectations(s)) for s in suites)
    if suites:
        get_run_logger().info(
            "user suites: %s (%d expectations)",
            ", ".join(s.qualified for s in suites),
            expectations,
        )
    return suites


def run_checks(
    admin: PostgresTarget,
    database: str,
    manifest: Manifest,
    user_suites: Sequence[TableSuite] | None = None,
    row_samples: bool = False,
) -> VerificationReport:
    """Validate ``database`` against ``manifest`` (and ``user_suites``) with GX.

    The manifest checks (opsflows' own queries) run as ``admin``; the user's suites as the
    read-only role of :mod:`tasks.verify_role`, reported by counts unless ``row_samples``.
    A user suite whose table is not in ``database`` fails each of its expectations
    ("table missing"); the GX sessions are closed before this returns.
    """
    with connect(admin, database=database) as conn:
        present = [(str(s), str(t), pk) for s, t, pk in conn.execute(TABLES_SQL).fetchall()]
        expected = {t.name: t for t in manifest.fingerprint.tables}
        common = [(s, t, pk) for s, t, pk in present if f"{s}.{t}" in expected]
        counts_sql = table_rows_query(common).as_string(conn) if common else None
    tables = {f"{s}.{t}" for s, t, _ in present}
    suites = list(user_suites or ())
    secret = admin.password.get_secret_value()
    checks: list[CheckResult] = []
    raw: list[dict[str, Any]] = []
    with gx_session(admin, database, "restored") as session:
        for index, (check, asset, expectations) in enumerate(
            _manifest_plans(session, manifest, counts_sql)
        ):
            outcome = session.validate(f"{index}-{check}", asset, expectations)
            raw.append(outcome)
            for item in outcome.get("results", []):
                config = item.get("expectation_config") or {}
                checks.append(
                    CheckResult(
                        check=check,
                        expectation=str(config.get("type")),
                        success=bool(item.get("success")),
                        observed=scrub(observed(item), secret),
                    )
                )
    results: list[SuiteResult] = []
    for suite in (s for s in suites if s.qualified not in tables):
        results += table_missing(suite)
    found, suite_raw = run_user_suites(
        admin, database, [s for s in suites if s.qualified in tables], row_samples
    )
    checks += [
        CheckResult(f"user suite {r.table}", r.expectation, r.success, r.observed)
        for r in results + found
    ]
    return VerificationReport(database, manifest.backup_id, tuple(checks), raw + suite_raw)


def run_user_suites(
    admin: PostgresTarget, database: str, suites: Sequence[TableSuite], row_samples: bool
) -> tuple[list[SuiteResult], list[dict[str, Any]]]:
    """Validate the user's suites as the read-only role (never as ``admin``)."""
    if not suites:
        return [], []
    with verify_role(admin, database) as reader, gx_session(reader, database, "user") as gx:
        return gx.validate_suites(suites, row_samples)


def _manifest_plans(
    session: GxSession, manifest: Manifest, counts_sql: str | None
) -> list[tuple[str, Any, list[Any]]]:
    """(check, GX asset, expectations) for the tables, row counts and schema hash."""
    E = session.gx.expectations
    expected = {t.name: t for t in manifest.fingerprint.tables}
    names = sorted(expected)
    tables_q = f"SELECT t.nspname || '.' || t.relname AS table_name FROM ({TABLES_SQL}) AS t"
    plans: list[tuple[str, Any, list[Any]]] = [
        (
            "tables present",
            session.query_asset("tables", tables_q),
            [E.ExpectColumnDistinctValuesToEqualSet(column="table_name", value_set=names)]
            if names
            else [E.ExpectTableRowCountToEqual(value=0)],
        )
    ]
    if counts_sql:
        pk_pairs = [(n, t.max_pk) for n, t in expected.items() if t.max_pk is not None]
        checks = [
            E.ExpectColumnPairValuesToBeInSet(
                column_A="table_name",
                column_B="row_count",
                value_pairs_set=[(n, t.rows) for n, t in expected.items()],
            )
        ]
        if pk_pairs:
            checks.append(
                E.ExpectColumnPairValuesToBeInSet(
                    column_A="table_name",
                    column_B="max_pk",
                    value_pairs_set=pk_pairs,
                    ignore_row_if="either_value_is_missing",
                )
            )
        plans.append(("row counts", session.query_asset("counts", counts_sql), checks))
    plans.append(
        (
            "schema hash",
            session.query_asset("schema", SCHEMA_HASH_SQL.strip()),
            [
                E.ExpectColumnValuesToBeInSet(
                    column="schema_hash", value_set=[manifest.fingerprint.schema_hash]
                )
            ],
        )
    )
    return plans


def publish(report: VerificationReport) -> None:
    """The validation result as run artifacts: a table of checks and the GX JSON."""
    create_table_artifact(
        key="restore-verification",
        table=[
            {
                "check": c.check,
                "expectation": c.expectation,
                "success": c.success,
                "observed": c.observed,
            }
            for c in report.checks
        ],
        description=f"GX validation of {report.database} (backup {report.backup_id})",
    )
    body = json.dumps(report.raw, indent=1, default=str)
    if len(body) > _MAX_JSON:
        body = body[:_MAX_JSON] + "\n… (truncated)"
    verdict = "PASSED" if report.success else "FAILED"
    create_markdown_artifact(
        key="restore-validation-result",
        markdown=f"# Restore verification {verdict}\n\nBackup `{report.backup_id}` restored "
        f"into `{report.database}`.\n\n```json\n{body}\n```\n",
        description="Great Expectations validation result",
    )


@task(name="verify restored database", **retry.NETWORK)
def verify_restore(
    admin: PostgresTarget,
    database: str,
    manifest: Manifest,
    user_suites: Sequence[TableSuite] | None = None,
    row_samples: bool = False,
) -> VerificationReport:
    """Check the restored database against the manifest fingerprint with Great Expectations.

    Args:
        admin: superuser target on the server holding ``database``.
        database: the restored (scratch) database.
        manifest: the backup's manifest (tables, row counts, max keys, schema hash).
        user_suites: the user's suites (from :func:`read_user_suites`), if any; they run
            as the read-only role ``opsflows_verify``, never as ``admin``.
        row_samples: report sample values of the rows a user expectation found unexpected
            (default: counts and percentages only).
    """
    report = run_checks(admin, database, manifest, user_suites, row_samples)
    publish(report)
    logger = get_run_logger()
    if report.success:
        logger.info("verification passed: %d expectations", len(report.checks))
    else:
        for failure in report.failures:
            logger.error(
                "verification failed: %s %s: %s",
                failure.check,
                failure.expectation,
                failure.observed,
            )
    return report
