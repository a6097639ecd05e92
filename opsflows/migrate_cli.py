"""``opsflows migrate plan DIR --database-url URL``: the migration plan, for people and CI.

Prints the same plan the ``migrate-database`` flow publishes (pending files, the lock each
statement takes, which files run outside a transaction, squawk's findings, the Great
Expectations suites of ``DIR/expectations/`` validated after applying) and exits
non-zero when anything blocks. Suites are checked the way the flow checks them (valid
GX 1.x suites of expectation types GX knows; importing GX takes a few seconds).
Read-only: nothing is created in the database. Without ``--database-url`` every file
counts as pending and the server version is unknown.

Exit status: 0 ok to apply, 1 blocked (lint, edited or missing files), 2 bad input (a
malformed suite included) or an unreachable database. The password (from the URL, else
``PGPASSWORD``) is never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import psycopg
from psycopg.conninfo import conninfo_to_dict

from blocks.postgres import PostgresTarget
from decisions.expectation_suites import render_suites
from decisions.migrations import render_plan
from opsflows.errors import ConfigurationError, OpsError
from procedures.migration_plan import compute_plan, load_migrations
from tasks.gx_validation import build_expectations
from tasks.migration_checks import load_suites


def target_from_url(url: str) -> PostgresTarget:
    """A PostgresTarget from a libpq URL or key=value string (never echoed back)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ConfigurationError(
            "cannot read --database-url",
            hint="use postgresql://USER@HOST:PORT/DBNAME (password in the URL or PGPASSWORD)",
        ) from None
    user = str(params.get("user") or "")
    database = str(params.get("dbname") or user)
    if not user or not database:
        raise ConfigurationError("--database-url must name the user and the database")
    return PostgresTarget(
        host=str(params.get("host") or "127.0.0.1"),
        port=int(params.get("port") or 5432),
        database=database,
        user=user,
        password=str(params.get("password") or os.environ.get("PGPASSWORD", "")),
        sslmode=str(params.get("sslmode") or "prefer"),
    )


def plan_command(argv: Sequence[str] | None = None) -> int:
    """``migrate plan DIR [--database-url URL]``: print the plan; 1 when blocked."""
    parser = argparse.ArgumentParser(
        prog="opsflows migrate plan",
        description="Print the migration plan (locks, transaction mode, squawk findings).",
    )
    parser.add_argument("directory", help="folder of NNN_name.sql migration files")
    parser.add_argument(
        "--database-url",
        default=None,
        help="database to plan against (read-only); without it every file is pending",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        target = target_from_url(args.database_url) if args.database_url else None
        directory, migrations = load_migrations(args.directory)
        suites = load_suites(directory)
        for suite in suites:
            build_expectations(suite)
        plan = compute_plan(directory, migrations, target)
    except OpsError as exc:
        print(f"migrate plan: {exc}", file=sys.stderr)
        return 2
    where = target.describe() if target else "no database (every file counted as pending)"
    print(f"database: {where}; directory: {directory}")
    print(render_plan(plan), end="")
    print(render_suites(suites), end="")
    if plan.blocked:
        print(f"BLOCKED: {len(plan.errors) + len(plan.blocking)} item(s) need a fix")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``opsflows migrate <command> ...`` (only ``plan`` exists)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["plan"]:
        return plan_command(args[1:])
    print("usage: opsflows migrate plan DIR [--database-url URL]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
