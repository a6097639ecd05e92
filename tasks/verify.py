"""Verify a restored database with Great Expectations against the backup's manifest.

Checks, each a GX expectation run against the scratch database itself:

* tables present: the set of tables equals the manifest's (none missing, none extra);
* row counts and highest primary keys: every ``(table, count)`` pair equals the manifest's;
* schema hash: the same SQL that fingerprinted the dump hashes the restored schema;
* the user's own suites for the database, if any (``<prefix>expectations/<db>.json``:
  ``{"tables": {"public.orders": [{"type": "expect_column_values_to_not_be_null",
  "kwargs": {"column": "id"}}]}}``).

The results become a table artifact and a markdown artifact holding the GX JSON. GX is
imported lazily (it takes seconds): :func:`preload` warms it in a thread while a restore
streams.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from decisions.backups import Manifest
from opsflows import retry
from opsflows.errors import ConfigurationError, NotFoundError, scrub
from tasks.catalog import _get_json
from tasks.dump import SCHEMA_HASH_SQL, TABLES_SQL, table_rows_query
from tasks.postgres import connect

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
_GX_LOCK = threading.Lock()
_MAX_JSON = 60_000


def preload() -> threading.Thread:
    """Import Great Expectations in the background (several seconds of CPU) and return."""
    thread = threading.Thread(target=_import_gx, name="gx-preload", daemon=True)
    thread.start()
    return thread


def _import_gx() -> Any:
    with _GX_LOCK:
        import great_expectations as gx

        return gx


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


def load_user_suites(store: BackupStore, database: str, key: str | None) -> dict[str, Any]:
    """The user's suites for ``database`` (``{}`` when the conventional object is absent)."""
    path = store.key(key) if key else store.key("expectations", f"{database}.json")
    try:
        data = _get_json(store.s3_client(), store.bucket, path)
    except NotFoundError as exc:
        if key:
            raise ConfigurationError(
                f"expectation suite s3://{store.bucket}/{path} not found"
            ) from exc
        return {}
    tables = data.get("tables")
    if not isinstance(tables, dict):
        raise ConfigurationError(f'{path}: expected {{"tables": {{table: [expectations]}}}}')
    return tables


@task(name="read expectation suites", **retry.NETWORK)
def read_user_suites(store: BackupStore, database: str, key: str | None) -> dict[str, Any]:
    """The user's expectation suites for ``database`` kept in the backup store, if any."""
    return load_user_suites(store, database, key)


def _observed(result: dict[str, Any]) -> str:
    res = result.get("result") or {}
    exc = result.get("exception_info") or {}
    if exc.get("raised_exception"):
        return "error: " + str(exc.get("exception_message"))[:200]
    for name in ("observed_value", "partial_unexpected_list", "partial_missing_list"):
        value = res.get(name)
        if value not in (None, []):
            return json.dumps(value, default=str)[:300]
    unexpected = res.get("partial_unexpected_list") or res.get("partial_missing_list")
    return json.dumps(unexpected, default=str)[:300] if unexpected else "as expected"


def _url(admin: PostgresTarget, database: str) -> str:
    from sqlalchemy.engine import URL

    return URL.create(
        "postgresql+psycopg",
        username=admin.user,
        password=admin.password.get_secret_value(),
        host=admin.host,
        port=admin.port,
        database=database,
        query={"options": "-c search_path=pg_catalog", "application_name": "opsflows-verify"},
    ).render_as_string(hide_password=False)


def _expectations_from(name: str, specs: list[dict[str, Any]]) -> list[Any]:
    """GX expectation objects from ``[{"type": ..., "kwargs": {...}}]`` specs."""
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    if not isinstance(specs, list):
        raise ConfigurationError(f"suite for {name} must be a list of expectations")
    built = []
    for spec in specs:
        try:
            config = ExpectationConfiguration(type=spec["type"], kwargs=spec.get("kwargs", {}))
            built.append(config.to_domain_obj())
        except Exception as exc:  # noqa: BLE001 - GX raises many types for a bad spec
            raise ConfigurationError(f"bad expectation in the suite for {name}: {exc}") from exc
    return built


def run_checks(
    admin: PostgresTarget,
    database: str,
    manifest: Manifest,
    user_suites: dict[str, Any] | None = None,
) -> VerificationReport:
    """Validate ``database`` against ``manifest`` (and ``user_suites``) with GX."""
    gx = _import_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    with connect(admin, database=database) as conn:
        present = [(str(s), str(t), pk) for s, t, pk in conn.execute(TABLES_SQL).fetchall()]
        expected = {t.name: t for t in manifest.fingerprint.tables}
        common = [(s, t, pk) for s, t, pk in present if f"{s}.{t}" in expected]
        counts_sql = table_rows_query(common).as_string(conn) if common else None

    ctx = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    source = ctx.data_sources.add_postgres("restored", connection_string=_url(admin, database))
    E = gx.expectations
    plans: list[tuple[str, Any, list[Any]]] = []
    tables_q = f"SELECT t.nspname || '.' || t.relname AS table_name FROM ({TABLES_SQL}) AS t"
    names = sorted(expected)
    plans.append(
        (
            "tables present",
            source.add_query_asset("tables", query=tables_q),
            [E.ExpectColumnDistinctValuesToEqualSet(column="table_name", value_set=names)]
            if names
            else [E.ExpectTableRowCountToEqual(value=0)],
        )
    )
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
        plans.append(("row counts", source.add_query_asset("counts", query=counts_sql), checks))
    plans.append(
        (
            "schema hash",
            source.add_query_asset("schema", query=SCHEMA_HASH_SQL.strip()),
            [
                E.ExpectColumnValuesToBeInSet(
                    column="schema_hash", value_set=[manifest.fingerprint.schema_hash]
                )
            ],
        )
    )
    for table, specs in (user_suites or {}).items():
        schema, _, name = table.rpartition(".")
        asset = source.add_table_asset(
            f"user-{table}", table_name=name, schema_name=schema or "public"
        )
        plans.append((f"user suite {table}", asset, _expectations_from(table, specs)))

    try:
        return _validate(gx, ctx, plans, admin, database, manifest)
    finally:
        # GX pools its connections: close them, or the database cannot be renamed/dropped.
        with contextlib.suppress(Exception):
            source.get_engine().dispose()


def _validate(
    gx: Any,
    ctx: Any,
    plans: list[tuple[str, Any, list[Any]]],
    admin: PostgresTarget,
    database: str,
    manifest: Manifest,
) -> VerificationReport:
    results: list[CheckResult] = []
    raw: list[dict[str, Any]] = []
    secret = admin.password.get_secret_value()
    for index, (check, asset, expectations) in enumerate(plans):
        batch_def = asset.add_batch_definition_whole_table("all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"{check}-{index}"))
        for expectation in expectations:
            suite.add_expectation(expectation)
        validation = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=f"v-{index}", data=batch_def, suite=suite)
        )
        outcome = validation.run().to_json_dict()
        raw.append(json.loads(scrub_json(outcome, secret)))
        for item in outcome.get("results", []):
            config = item.get("expectation_config") or {}
            results.append(
                CheckResult(
                    check=check,
                    expectation=str(config.get("type")),
                    success=bool(item.get("success")),
                    observed=scrub(_observed(item), secret),
                )
            )
    return VerificationReport(database, manifest.backup_id, tuple(results), raw)


def scrub_json(data: Any, secret: str) -> str:
    """JSON text with the secret masked (GX results should not hold it; be sure anyway)."""
    text = json.dumps(data, default=str)
    return text.replace(secret, "***") if secret else text


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
    user_suites: dict[str, Any] | None = None,
) -> VerificationReport:
    """Check the restored database against the manifest fingerprint with Great Expectations.

    Args:
        admin: superuser target on the server holding ``database``.
        database: the restored (scratch) database.
        manifest: the backup's manifest (tables, row counts, max keys, schema hash).
        user_suites: the user's expectations per table, if any.
    """
    report = run_checks(admin, database, manifest, user_suites)
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
