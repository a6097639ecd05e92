"""Great Expectations suites kept with the migrations: load, check, validate after applying.

The suites live in ``<migrations_dir>/expectations/*.json`` (see
:mod:`decisions.expectation_suites` for the format, shared with the restore verification).
Before any change the flow reads them and asks GX to build every expectation, so an unknown
expectation type or bad arguments stop the run with an error naming the file. After the
migrations are applied, each suite is validated with a GX SQL datasource on the migrated
database (:mod:`tasks.gx_validation`, the machinery the restore verification uses too) and
the results become a table artifact.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from blocks.postgres import PostgresTarget
from decisions.expectation_suites import (
    SUITES_DIR,
    SuiteResult,
    TableSuite,
    one_per_table,
    parse_suite,
    result_rows,
)
from opsflows import retry
from opsflows.errors import ConfigurationError
from tasks.gx_validation import build_expectations, existing_tables, gx_session, table_missing

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
    return one_per_table(parse_suite(p.name, p.read_bytes()) for p in files)


@task(name="check expectation suites", **retry.ONCE)
def check_suites(suites: Sequence[TableSuite]) -> int:
    """Make sure Great Expectations knows every expectation of the suites (no database).

    Args:
        suites: The suites kept with the migrations.

    Returns:
        The number of expectations checked.
    """
    return sum(len(build_expectations(s)) for s in suites)


def run_suites(target: PostgresTarget, suites: Sequence[TableSuite]) -> tuple[SuiteResult, ...]:
    """Validate each suite against its table in ``target`` with a GX SQL datasource.

    A suite whose table does not exist fails every one of its expectations (observed
    "table missing") instead of stopping the others.
    """
    present = existing_tables(target, target.database, [s.qualified for s in suites])
    results: list[SuiteResult] = []
    for suite in (s for s in suites if s.qualified not in present):
        results += table_missing(suite)
    checked = [s for s in suites if s.qualified in present]
    if not checked:
        return tuple(results)
    with gx_session(target, target.database, "migrated") as session:
        results += session.validate_suites(checked)[0]
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
