"""Capacity report runbook (weekly): how much of each resource is used, where it is going, and
what the scaling plan says to do (RUNBOOK.md "Capacity Planning").

For CPU, memory, disk (the app's volume), database connections (of max_connections), request
rate, database size (Prometheus range queries over 30 days, hourly) and the backup store (the
S3 listing): the current value, capacity and utilization, the Theil-Sen trend over 7 and 30
days, the days until the trend crosses the scaling threshold ("not within 90 days" when flat
or falling) and the advice (``decisions.capacity``). The ``capacity-report`` table artifact
has the runbook's columns (Resource | Current | Capacity | Utilization | note) and a link to
each query's Prometheus graph; a PNG chart per resource goes to the backup bucket under
``reports/capacity/<date>/`` and into the run as an image artifact.

A query that returns nothing, or Prometheus down, does not make an empty report: the report
is published with a row per resource saying what is missing, and then the run fails naming
the missing rows. The report changes nothing.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value.

import time
from datetime import UTC, datetime
from typing import Any

from prefect import flow

from blocks.kube import KubeEnvironment
from blocks.storage import BackupStore
from decisions.capacity import RESOURCES, Assessment, assess
from opsflows.errors import ConfigurationError, OpsError, ServiceUnavailable
from procedures.operation import (
    BACKUPS,
    ROUTING,
    load_block,
    operation_log,
    try_load_ops_db,
    try_load_routing,
)
from tasks.capacity_charts import publish_table, render_png, store_chart
from tasks.capacity_metrics import graph_url, queries, read_history, read_store_growth

RUNBOOK = "capacity-report"
GIB = 2**30


def _capacities(request_capacity_rps: float, database_disk_gb: float) -> dict[str, float]:
    return {
        "cpu": 1.0,
        "memory": 1.0,
        "disk": 1.0,
        "request_rate": request_capacity_rps,
        "db_size": database_disk_gb * GIB,
    }


@flow(name="capacity-report")
def capacity_report(
    environment: str = "production",
    store: str = BACKUPS,
    days: int = 30,
    step_s: int = 3600,
    request_capacity_rps: float = 50.0,
    database_disk_gb: float = 20.0,
    backup_quota_gb: float = 100.0,
    routing: str = ROUTING,
) -> dict[str, Any]:
    """Report the capacity of an environment: use, trends, forecasts and the scaling advice.

    Args:
        environment: KubeEnvironment block of the environment (its Prometheus and env label).
        store: BackupStore block: the bucket whose size is reported and where charts go.
        days: History to read (at least 7; trends over 7 and 30 days, or ``days``).
        step_s: Resolution of the range queries in seconds (60 to 86400).
        request_capacity_rps: Requests per second the environment serves at its replica
            count (the request rate's capacity; from the last load test).
        database_disk_gb: The database volume's size (the database size's capacity).
        backup_quota_gb: The backup store's quota (its capacity).
        routing: NotificationRouting block (failures of the run are notified through it).
    """
    if days < 7 or days > 90:
        raise ConfigurationError(f"days must be in [7, 90], got {days}")
    if not 60 <= step_s <= 86400:
        raise ConfigurationError(f"step_s must be in [60, 86400], got {step_s}")
    if min(request_capacity_rps, database_disk_gb, backup_quota_gb) <= 0:
        raise ConfigurationError(
            "request_capacity_rps, database_disk_gb and backup_quota_gb must be positive",
            hint="give each resource's capacity in its unit",
        )
    with operation_log(
        RUNBOOK,
        f"weekly capacity report of {environment}",
        try_load_ops_db(),
        try_load_routing(routing),
    ) as rec:
        env = load_block(KubeEnvironment, environment)
        backups = load_block(BackupStore, store)
        now = time.time()
        date = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        capacities = _capacities(request_capacity_rps, database_disk_gb)
        rows: list[Assessment] = []
        series: dict[str, list[tuple[float, float]]] = {}
        for name, q in queries(env.environment).items():
            link = graph_url(env.prometheus_url, q.series, days)
            try:
                got = read_history(env.prometheus_url, q, days, step_s, now)
            except OpsError as exc:
                rows.append(_missing(name, f"missing: {exc.message}", link))
                continue
            if not got["samples"] and got["current"] is None:
                why = f"missing: the query returned nothing ({q.series})"
                rows.append(_missing(name, why, link))
                continue
            cap = got["capacity"] if got["capacity"] is not None else capacities.get(name)
            series[name] = got["samples"]
            rows.append(
                assess(
                    RESOURCES[name], got["samples"], now, got["current"], cap, got["extra"], link
                )
            )
        try:
            growth = read_store_growth(backups, days, now)
            series["backup_store"] = growth["samples"]
            rows.append(
                assess(
                    RESOURCES["backup_store"],
                    growth["samples"],
                    now,
                    growth["current"],
                    backup_quota_gb * GIB,
                    graph_url="",
                )
            )
        except OpsError as exc:
            rows.append(_missing("backup_store", f"missing: {exc.message}", ""))
        publish_table([a.row() for a in rows], env.environment)
        charts = [
            store_chart(backups, date, a.resource.name, render_png(a, series[a.resource.name], now))
            for a in rows
            if not a.missing
        ]
        missing = [a.resource.title for a in rows if a.missing]
        rec.impact = "none (read-only report)"
        rec.details["rows"] = [a.row() for a in rows]
        soon = [a for a in rows if a.days is not None]
        rec.follow_up.extend(f"{a.resource.title}: {a.advice}" for a in soon)
        if missing:
            rec.issues.append("rows without data: " + ", ".join(missing))
            raise ServiceUnavailable(
                f"capacity report of {environment} is partial: no data for " + ", ".join(missing),
                hint="the report artifact says why per row; is Prometheus up and scraping?",
            )
        return {
            "environment": env.environment,
            "rows": [a.row() for a in rows],
            "charts": [c["key"] for c in charts],
            "forecasts": {a.resource.name: a.days for a in rows},
        }


def _missing(name: str, why: str, link: str) -> Assessment:
    return Assessment(RESOURCES[name], None, None, missing=why, graph_url=link)
