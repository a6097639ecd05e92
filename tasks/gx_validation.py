"""Great Expectations plumbing shared by the restore verification and the migration suites.

GX is imported lazily (it takes seconds): :func:`preload` warms it in a thread. A
:func:`gx_session` is an ephemeral GX context with a PostgreSQL datasource on one database;
leaving it closes both engines GX pools connections in (the datasource's and its execution
engine's), or an idle session stays on the database and blocks renaming or dropping it.

The datasource URL carries every libpq setting of the target (``sslmode``,
``connect_timeout``) but never the password, which reaches the driver as a connect argument.
Whatever GX raises is translated into the opsflows tree with the password masked and the
vendor exception not chained (it may hold connection details).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import psycopg

from blocks.postgres import PostgresTarget, keepalive_params
from decisions.expectation_suites import SuiteResult, TableSuite, columns_of
from decisions.suite_policy import error_of, observed_counts, redact_result
from opsflows.errors import ConfigurationError, OpsError, PermanentError, scrub
from tasks.postgres import connect, translate

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
_GX_LOCK = threading.Lock()
#: ``application_name`` of the sessions GX opens (how to find them in ``pg_stat_activity``).
APPLICATION_NAME = "opsflows-verify"
#: GX ``result_format`` of user suites without row samples: counts, no sample rows fetched.
COUNTS_ONLY: dict[str, Any] = {"result_format": "BASIC", "partial_unexpected_count": 0}
#: ... and with row samples (GX's default: up to 20 unexpected values per expectation).
WITH_SAMPLES = "SUMMARY"


def preload() -> threading.Thread:
    """Import Great Expectations in the background (several seconds of CPU) and return."""
    thread = threading.Thread(target=import_gx, name="gx-preload", daemon=True)
    thread.start()
    return thread


def import_gx() -> Any:
    """The ``great_expectations`` module, imported once (waits for :func:`preload`)."""
    with _GX_LOCK:
        import great_expectations as gx

        return gx


def sqlalchemy_url(target: PostgresTarget, database: str) -> str:
    """The URL GX connects with: every libpq setting of ``target`` except the password.

    User and database are percent-encoded (GX validates the URL, and would take ``${...}``
    for a config variable); a host starting with ``/`` is a unix-socket directory, passed
    as the ``host`` parameter.
    """
    query = {
        "sslmode": target.sslmode,
        "connect_timeout": str(target.connect_timeout),
        "application_name": APPLICATION_NAME,
        "options": "-c search_path=pg_catalog",
        **keepalive_params(),
    }
    host = target.host
    if host.startswith("/"):
        query["host"] = host
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return (
        f"postgresql+psycopg://{quote(target.user, safe='')}@{host}:{target.port}"
        f"/{quote(database, safe='')}?{urlencode(sorted(query.items()))}"
    )


def engine_kwargs(target: PostgresTarget) -> dict[str, Any]:
    """``create_engine`` arguments for GX: the password goes to the driver, not the URL."""
    return {"connect_args": {"password": target.password.get_secret_value()}}


def _where(target: PostgresTarget, database: str) -> str:
    return f"{target.user}@{target.host}:{target.port}/{database}"


def _translate(exc: Exception, target: PostgresTarget, action: str) -> OpsError:
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        driver = cause if isinstance(cause, psycopg.Error) else getattr(cause, "orig", None)
        if isinstance(driver, psycopg.Error):
            return translate(driver, target, action)
        cause = cause.__cause__ or cause.__context__
    text = scrub(" ".join(str(exc).split()), target.password.get_secret_value())
    return PermanentError(f"{action}: Great Expectations failed: {type(exc).__name__}: {text}")


@contextlib.contextmanager
def gx_errors(target: PostgresTarget, action: str) -> Iterator[None]:
    """Translate what GX (or the driver under it) raises; the password never shows."""
    try:
        yield
    except OpsError:
        raise
    except Exception as exc:  # noqa: BLE001 - GX wraps driver errors in many types
        raise _translate(exc, target, action) from None


def scrub_json(data: Any, secret: str) -> str:
    """JSON text with the secret masked (GX results should not hold it; be sure anyway)."""
    text = json.dumps(data, default=str)
    return text.replace(secret, "***") if secret else text


def observed(result: dict[str, Any]) -> str:
    """What one GX expectation result saw, short."""
    res = result.get("result") or {}
    error = error_of(result)
    if error:
        return error
    for name in ("observed_value", "partial_unexpected_list", "partial_missing_list"):
        value = res.get(name)
        if value not in (None, []):
            return json.dumps(value, default=str)[:300]
    return "as expected"


def build_expectations(suite: TableSuite) -> list[Any]:
    """GX expectation objects of a suite; an unknown type or bad arguments name the file."""
    import_gx()
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
                f"expectation suite {suite.where}: expectation {index}"
                f" ({spec.type}) is not valid: {detail}",
                hint="use a Great Expectations 1.x expectation type and its documented kwargs"
                " (https://greatexpectations.io/expectations)",
            ) from None
    return built


def existing_tables(target: PostgresTarget, database: str, names: Sequence[str]) -> set[str]:
    """Which of the ``schema.table`` names exist in ``database``."""
    with connect(target, database=database) as conn:
        rows = conn.execute(
            "SELECT n FROM unnest(%s::text[]) AS n"
            " WHERE to_regclass(quote_ident(split_part(n, '.', 1)) || '.'"
            " || quote_ident(split_part(n, '.', 2))) IS NOT NULL",
            (list(names),),
        ).fetchall()
    return {str(r[0]) for r in rows}


def table_missing(suite: TableSuite) -> list[SuiteResult]:
    """Every expectation of a suite whose table does not exist, failed."""
    return [
        SuiteResult(suite.file, suite.qualified, e.type, e.column, False, "table missing")
        for e in suite.expectations
    ]


@dataclass(frozen=True)
class GxSession:
    """An ephemeral GX context and a PostgreSQL datasource on one database."""

    gx: Any
    context: Any
    source: Any
    target: PostgresTarget
    database: str

    @property
    def where(self) -> str:
        return _where(self.target, self.database)

    def table_asset(self, name: str, schema: str, table: str) -> Any:
        with gx_errors(self.target, f"read table {schema}.{table} of {self.where}"):
            return self.source.add_table_asset(name, table_name=table, schema_name=schema)

    def query_asset(self, name: str, query: str) -> Any:
        with gx_errors(self.target, f"query {self.where}"):
            return self.source.add_query_asset(name, query=query)

    def validate(
        self,
        name: str,
        asset: Any,
        expectations: Sequence[Any],
        result_format: str | dict[str, Any] = WITH_SAMPLES,
    ) -> dict[str, Any]:
        """Validate the whole table (or query) of ``asset``; the GX result, password masked."""
        with gx_errors(self.target, f"validate {name} on {self.where}"):
            suite = self.context.suites.add(self.gx.ExpectationSuite(name=name))
            for expectation in expectations:
                suite.add_expectation(expectation)
            validation = self.context.validation_definitions.add(
                self.gx.ValidationDefinition(
                    name=f"v-{name}",
                    data=asset.add_batch_definition_whole_table("all"),
                    suite=suite,
                )
            )
            outcome = validation.run(result_format=result_format).to_json_dict()
        value: dict[str, Any] = json.loads(
            scrub_json(outcome, self.target.password.get_secret_value())
        )
        return value

    def validate_suites(
        self, suites: Sequence[TableSuite], row_samples: bool = False
    ) -> tuple[list[SuiteResult], list[dict[str, Any]]]:
        """Validate each suite against its (existing) table: the results and the GX results.

        Without ``row_samples`` GX fetches no sample rows, and both hold only counts and
        percentages (:func:`decisions.suite_policy.observed_counts`, ``redact_result``).
        """
        secret = self.target.password.get_secret_value()
        results: list[SuiteResult] = []
        raw: list[dict[str, Any]] = []
        fmt = WITH_SAMPLES if row_samples else dict(COUNTS_ONLY)
        for index, suite in enumerate(suites):
            asset = self.table_asset(f"t{index}-{suite.qualified}", suite.schema, suite.table)
            outcome = self.validate(f"{index}-{suite.name}", asset, build_expectations(suite), fmt)
            items = outcome.get("results", [])
            raw.append(
                {**outcome, "results": items if row_samples else list(map(redact_result, items))}
            )
            for item in items:
                config = item.get("expectation_config") or {}
                kind = str(config.get("type"))
                seen = observed(item) if row_samples else observed_counts(kind, item)
                results.append(
                    SuiteResult(
                        file=suite.file,
                        table=suite.qualified,
                        expectation=kind,
                        column=columns_of(config.get("kwargs") or {}),
                        success=bool(item.get("success")),
                        observed=scrub(seen, secret),
                    )
                )
        return results, raw


def close_engines(source: Any) -> None:
    """Close both engines GX pools connections in: the datasource's and its execution
    engine's (closing only one leaves an idle session on the database)."""
    with contextlib.suppress(Exception):
        source.get_execution_engine().engine.dispose()
    with contextlib.suppress(Exception):
        source.get_engine().dispose()


@contextlib.contextmanager
def gx_session(target: PostgresTarget, database: str, datasource: str) -> Iterator[GxSession]:
    """A GX context with a datasource on ``database``; both engines are closed on leaving."""
    gx = import_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    with gx_errors(target, f"connect Great Expectations to {_where(target, database)}"):
        source = context.data_sources.add_postgres(
            datasource,
            connection_string=sqlalchemy_url(target, database),
            kwargs=engine_kwargs(target),
        )
    try:
        yield GxSession(gx, context, source, target, database)
    finally:
        close_engines(source)
