"""What the reliability tier measures around every test: the faults it injected, and whether
any data that existed before the test is gone after it.

A ``Snapshot`` is a few cheap reads of the stack: the databases on its PostgreSQL (templates
excluded), the complete backups in its bucket (every ``manifest.json`` key) and the row count
of every user table in the shared databases (``app``, and ``opsflows`` without ``ops_log``,
which grows with every run). A loss is something present before and absent after: a database,
a manifest, rows of a table (a table that vanished lost all of its rows). What a test makes
and removes itself was not there before, so it never counts.

Faults are counted where they are made: the fault proxies and ``tests.support.count_fault``
add to :mod:`devstack.faultcount` in this process, the simulator counts the requests its
``/_sim/faults`` rules acted on (``injected``); a test's faults are the difference.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
from botocore.config import Config
from psycopg import sql

from devstack import faultcount
from devstack.stack import AWS_REGION, BACKUP_BUCKET, MOTO_KEYS, StackInfo, stack_secrets

#: The shared databases whose rows are counted, and the tables left out (they only grow by
#: design, and may be trimmed by retention).
SHARED_DATABASES = ("app", "opsflows")
NOT_COUNTED = frozenset({"opsflows.public.ops_log"})
_TIMEOUT_S = 10


@dataclass(frozen=True)
class Snapshot:
    """The stack's data at one moment (see the module docstring)."""

    databases: frozenset[str]
    backups: frozenset[str]
    rows: dict[str, int]


@dataclass(frozen=True)
class Loss:
    """What one test lost: names of databases and manifests, and rows per table."""

    databases: tuple[str, ...] = ()
    backups: tuple[str, ...] = ()
    rows: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.databases or self.backups or self.rows)

    def describe(self) -> str:
        parts = [f"database {d} lost" for d in self.databases]
        parts += [f"backup {b} lost" for b in self.backups]
        parts += [f"{n} rows of {t} lost" for t, n in sorted(self.rows.items())]
        return "; ".join(parts)


def _admin(stack: StackInfo, database: str) -> psycopg.Connection[Any]:
    password = stack_secrets(Path(stack.state_dir))["postgres"]
    return psycopg.connect(
        host=stack.host, port=stack.postgres_port, user="postgres", password=password,
        dbname=database, connect_timeout=5, autocommit=True,
        options=f"-c statement_timeout={_TIMEOUT_S * 1000}", application_name="reltest-ledger",
    )  # fmt: skip


def _row_counts(stack: StackInfo, database: str) -> dict[str, int]:
    """``{"db.schema.table": rows}`` for every user table of ``database``, in one query."""
    with _admin(stack, database) as conn:
        tables = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid ="
            " c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN"
            " ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
        ).fetchall()
        names = {f"{database}.{s}.{t}": (s, t) for s, t in tables}
        names = {k: v for k, v in names.items() if k not in NOT_COUNTED}
        if not names:
            return {}
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}, count(*) FROM {}").format(sql.Literal(key), sql.Identifier(s, t))
            for key, (s, t) in sorted(names.items())
        )
        return {str(k): int(n) for k, n in conn.execute(query).fetchall()}


def _manifests(stack: StackInfo) -> frozenset[str]:
    client = boto3.client(
        "s3", endpoint_url=stack.aws_endpoint_url, region_name=AWS_REGION,
        aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
        config=Config(connect_timeout=5, read_timeout=_TIMEOUT_S, retries={"max_attempts": 1}),
    )  # fmt: skip
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BACKUP_BUCKET):
        keys |= {str(o["Key"]) for o in page.get("Contents", [])}
    return frozenset(k for k in keys if k.endswith("manifest.json"))


def take(stack: StackInfo) -> Snapshot:
    """Read the stack's data now (raises when PostgreSQL or S3 cannot be read)."""
    with _admin(stack, "postgres") as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate").fetchall()
    databases = frozenset(str(r[0]) for r in rows)
    counts: dict[str, int] = {}
    for name in SHARED_DATABASES:
        if name in databases:
            counts |= _row_counts(stack, name)
    return Snapshot(databases=databases, backups=_manifests(stack), rows=counts)


def lost(before: Snapshot, after: Snapshot, existed: Snapshot | None = None) -> Loss:
    """What was in ``before`` and is not in ``after``; with ``existed``, only what also
    existed then (what a module's own fixtures made and removed is not a loss)."""

    def kept(names: frozenset[str], among: frozenset[str] | None) -> frozenset[str]:
        return names if among is None else names & among

    databases = kept(before.databases, existed.databases if existed else None)
    backups = kept(before.backups, existed.backups if existed else None)
    rows = {
        table: n - after.rows.get(table, 0)
        for table, n in before.rows.items()
        if (existed is None or table in existed.rows) and after.rows.get(table, 0) < n
    }
    return Loss(
        databases=tuple(sorted(databases - after.databases)),
        backups=tuple(sorted(backups - after.backups)),
        rows=rows,
    )


def simulator_faults(stack: StackInfo) -> dict[str, int] | None:
    """The simulator's count of injected faults by kind (``None`` when it cannot be read)."""
    try:
        response = httpx.get(f"{stack.kube_url}/_sim/faults", timeout=5)
        response.raise_for_status()
        injected = response.json().get("injected", {})
    except (httpx.HTTPError, ValueError):
        return None
    return {f"kube {kind}": int(n) for kind, n in injected.items()}


def fault_totals(stack: StackInfo) -> tuple[dict[str, int], bool]:
    """Every fault counted so far (this process and the simulator); False if the simulator
    could not be read."""
    sim = simulator_faults(stack)
    return {**faultcount.totals(), **(sim or {})}, sim is not None


def difference(before: dict[str, int], after: dict[str, int]) -> Counter[str]:
    return Counter({k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)})


@dataclass
class Record:
    """One test: its faults, and what it lost (``None``: not measured, ``why`` says so)."""

    nodeid: str
    faults: Counter[str] = field(default_factory=Counter)
    loss: Loss | None = None
    why: str = ""


@dataclass
class Ledger:
    """Every reliability test of the session, for the terminal summary."""

    records: list[Record] = field(default_factory=list)

    @property
    def lost(self) -> list[Record]:
        return [r for r in self.records if r.loss]

    def summary(self) -> list[str]:
        faults: Counter[str] = Counter()
        for record in self.records:
            faults += record.faults
        measured = [r.loss for r in self.records if r.loss is not None]
        faulted = sum(1 for r in self.records if r.faults)
        line = (
            f"reliability: {sum(faults.values())} faults injected in {faulted} tests "
            f"(of {len(self.records)}); data before/after each test: "
            f"{sum(len(x.databases) for x in measured)} databases lost, "
            f"{sum(len(x.backups) for x in measured)} backups lost, "
            f"{sum(sum(x.rows.values()) for x in measured)} rows lost"
        )
        unmeasured = [r for r in self.records if r.loss is None]
        if unmeasured:
            line += f"; not measured in {len(unmeasured)} tests"
        lines = [line]
        if faults:
            kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(faults.items()))
            lines.append(f"  faults by kind: {kinds}")
        lines += [f"  LOST in {r.nodeid}: {r.loss.describe()}" for r in self.lost if r.loss]
        lines += [f"  not measured in {r.nodeid}: {r.why}" for r in unmeasured]
        return lines
