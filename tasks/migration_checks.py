"""Great Expectations suites kept with the migrations: load, check, validate after applying.

The suites live in ``<migrations_dir>/expectations/*.json`` (see
:mod:`decisions.migration_suites` for the convention). Before any change the flow reads
them and asks GX to build every expectation, so an unknown expectation type or bad
arguments stop the run with an error naming the file. After the migrations are applied,
each suite is validated with a GX SQL datasource on the migrated database (the same
machinery :mod:`tasks.verify` uses for restores) and the results become a table artifact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from blocks.postgres import PostgresTarget
from decisions.migration_suites import (
    SUITES_DIR,
    SuiteResult,
    TableSuite,
    columns_of,
    parse_suite,
    result_rows,
)
from opsflows import retry
from opsflows.errors import ConfigurationError, scrub
from tasks.postgres import connect
from tasks.verify import _import_gx, _observed, _url

#: Key of the table artifact holding the validation result.
ARTIFACT_KEY = "migration-validation"


def load_suites(migrations_dir: Path) -> tuple[TableSuite, ...]:
    """The suites of ``<migrations_dir>/expectations/*.json`` in name order (may be none)."""
    folder = migrations_dir / SUITES_DIR
    if not folder.is_dir():
        return ()
    files = sorted(p for p in folder.iterdir() if p.suffix == ".json")
    for path in files:
        if not path.is_file():
            raise ConfigurationError(f"expectation suite {SUITES_DIR}/{path.name} is not a file")
    suites = tuple(parse_suite(p.name, p.read_bytes()) for p in files)
    tables: dict[str, str] = {}
    for suite in suites:
        if suite.qualified in tables:
            raise ConfigurationError(
                f"expectation suites {tables[suite.qualified]} and {suite.file} both name"
                f" table {suite.qualified}; keep one file per table"
            )
        tables[suite.qualified] = suite.file
    return suites


def build_expectations(suite: TableSuite) -> list[Any]:
    """GX expectation objects of a suite; an unknown type or bad arguments name the file."""
    _import_gx()
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    built = []
    for index, spec in enumerate(suite.expectations, start=1):
        try:
            config = ExpectationConfiguration(type=spec.type, kwargs=spec.kwargs)
            built.append(config.to_domain_obj())
        except Exception as exc:  # noqa: BLE001 - GX raises many types for a bad spec
            detail = " ".join(str(exc).split())[:300]
            raise ConfigurationError(
                f"expectation suite {SUITES_DIR}/{suite.file}: expectation {index}"
                f" ({spec.type}) is not valid: {detail}",
                hint="use a Great Expectations 1.x expectation type and its documented kwargs"
                " (https://greatexpectations.io/expectations)",
            ) from None
    return built


@task(name="check expectation suites", **retry.ONCE)
def check_suites(suites: Sequence[TableSuite]) -> int:
    """Make sure Great Expectations knows every expectation of the suites (no database).

    Args:
        suites: The suites kept with the migrations.

    Returns:
        The number of expectations checked.
    """
    return sum(len(build_expectations(s)) for s in suites)


def _existing_tables(target: PostgresTarget, suites: Sequence[TableSuite]) -> set[str]:
    names = [s.qualified for s in suites]
    with connect(target) as conn:
        rows = conn.execute(
            "SELECT n FROM unnest(%s::text[]) AS n"
            " WHERE to_regclass(quote_ident(split_part(n, '.', 1)) || '.'"
            " || quote_ident(split_part(n, '.', 2))) IS NOT NULL",
            (names,),
        ).fetchall()
    return {str(r[0]) for r in rows}


def run_suites(target: PostgresTarget, suites: Sequence[TableSuite]) -> tuple[SuiteResult, ...]:
    """Validate each suite against its table in ``target`` with a GX SQL datasource.

    A suite whose table does not exist fails every one of its expectations (observed
    "table missing") instead of stopping the others.
    """
    gx = _import_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    present = _existing_tables(target, suites)
    secret = target.password.get_secret_value()
    results: list[SuiteResult] = []
    for suite in (s for s in suites if s.qualified not in present):
        results += [
            SuiteResult(suite.file, suite.qualified, e.type, e.column, False, "table missing")
            for e in suite.expectations
        ]
    checked = [s for s in suites if s.qualified in present]
    if not checked:
        return tuple(results)
    ctx = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    source = ctx.data_sources.add_postgres(
        "migrated", connection_string=_url(target, target.database)
    )
    try:
        for index, suite in enumerate(checked):
            asset = source.add_table_asset(
                f"t{index}-{suite.qualified}", table_name=suite.table, schema_name=suite.schema
            )
            gx_suite = ctx.suites.add(gx.ExpectationSuite(name=f"{index}-{suite.name}"))
            for expectation in build_expectations(suite):
                gx_suite.add_expectation(expectation)
            validation = ctx.validation_definitions.add(
                gx.ValidationDefinition(
                    name=f"v{index}",
                    data=asset.add_batch_definition_whole_table("all"),
                    suite=gx_suite,
                )
            )
            for item in validation.run().to_json_dict().get("results", []):
                config = item.get("expectation_config") or {}
                results.append(
                    SuiteResult(
                        file=suite.file,
                        table=suite.qualified,
                        expectation=str(config.get("type")),
                        column=columns_of(config.get("kwargs") or {}),
                        success=bool(item.get("success")),
                        observed=scrub(_observed(item), secret),
                    )
                )
    finally:
        # GX pools connections in two engines (the datasource's and its execution engine's):
        # close both, or every run leaves an idle session on the migrated database.
        with contextlib.suppress(Exception):
            source.get_execution_engine().engine.dispose()
        with contextlib.suppress(Exception):
            source.get_engine().dispose()
    return tuple(results)


@task(name="validate expectation suites", **retry.NETWORK)
def validate_suites(
    target: PostgresTarget, suites: Sequence[TableSuite]
) -> tuple[SuiteResult, ...]:
    """Validate the suites kept with the migrations against the migrated database.

    The results (suite, expectation, table, column, success, observed value) are published
    as the ``migration-validation`` table artifact.

    Args:
        target: The database that was migrated.
        suites: The suites from ``<migrations_dir>/expectations/``.
    """
    results = run_suites(target, suites)
    failed = [r for r in results if not r.success]
    create_table_artifact(
        key=ARTIFACT_KEY,
        table=result_rows(results),
        description=f"Great Expectations validation of {target.database} after migrating:"
        f" {len(results) - len(failed)}/{len(results)} passed",
    )
    logger = get_run_logger()
    for r in failed:
        logger.error("expectation failed: %s", r.describe())
    logger.info(
        "validated %d suite(s): %d/%d passed", len(suites), len(results) - len(failed), len(results)
    )
    return results
