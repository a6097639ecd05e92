"""``opsflows migrate plan DIR [--database-url URL | --block NAME]``: the migration plan, for
people and CI.

Prints the same plan the ``migrate-database`` flow publishes (pending files and the units
they are applied in, the lock each statement takes, which files run outside a transaction,
squawk's findings, the Great Expectations suites of ``DIR/expectations/`` validated after
applying) and exits non-zero when anything blocks. Suites are checked the way the flow
checks them (valid GX 1.x suites of the allowed expectation types, see
``decisions.suite_policy``; importing GX takes a few seconds). Read-only: nothing is
created in the database. Without a database every file counts as pending and the server
version is unknown.

The password never goes on the command line, where ``ps`` and the shell history show it: a
URL holding one is refused. It comes from ``OPSFLOWS_MIGRATE_PASSWORD``, else
``PGPASSWORD``, else libpq's password file (``~/.pgpass``); or ``--block NAME`` uses a saved
``opsflows-postgres-target`` block (host, database, role and password). Statement text is
printed scrubbed: a ``PASSWORD '…'`` literal shows as ``'***'``.

Exit status: 0 ok to apply, 1 blocked (lint, edited or missing files), 2 bad input (a
malformed URL or suite, a password in the URL) or an unreachable database or Prefect API.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

import psycopg
from psycopg.conninfo import conninfo_to_dict

from blocks.postgres import PostgresTarget
from decisions.expectation_suites import render_suites
from decisions.migration_plan_render import render_plan
from opsflows.errors import ConfigurationError, OpsError
from procedures.migration_plan import compute_plan, load_migrations
from tasks.gx_validation import build_expectations
from tasks.migration_checks import load_suites

#: Where the password comes from, first found wins (then libpq's ~/.pgpass).
PASSWORD_VARIABLES = ("OPSFLOWS_MIGRATE_PASSWORD", "PGPASSWORD")
_URL_HELP = (
    "use postgresql://USER@HOST:PORT/DBNAME without a password, and put the password in"
    " OPSFLOWS_MIGRATE_PASSWORD or PGPASSWORD (or ~/.pgpass), or use --block NAME"
)


def target_from_url(url: str, environ: Mapping[str, str] | None = None) -> PostgresTarget:
    """A PostgresTarget from a libpq URL or key=value string (never echoed back).

    Raises:
        ConfigurationError: the URL cannot be read, names no user or database, has a bad
            port, or holds a password.
    """
    env = os.environ if environ is None else environ
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ConfigurationError("cannot read --database-url", hint=_URL_HELP) from None
    if params.get("password"):
        raise ConfigurationError(
            "--database-url holds a password: refused, because the command line shows in `ps`"
            " and the shell history",
            hint=_URL_HELP,
        )
    user = str(params.get("user") or "")
    database = str(params.get("dbname") or user)
    if not user or not database:
        raise ConfigurationError("--database-url must name the user and the database")
    host, port = str(params.get("host") or "127.0.0.1"), str(params.get("port") or "5432")
    if "," in host or "," in port:
        raise ConfigurationError("--database-url must name one host", hint=_URL_HELP)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError("--database-url has a port that is not 1-65535", hint=_URL_HELP)
    password = next((env[v] for v in PASSWORD_VARIABLES if env.get(v)), "")
    try:
        return PostgresTarget(
            host=host,
            port=int(port),
            database=database,
            user=user,
            password=password,
            sslmode=str(params.get("sslmode") or "prefer"),
        )
    except ValueError:  # pydantic's message would quote the values
        raise ConfigurationError("cannot read --database-url", hint=_URL_HELP) from None


def target_from_block(name: str) -> PostgresTarget:
    """The saved ``opsflows-postgres-target/<name>`` block (needs the Prefect API)."""
    from opsflows.cli_blocks import load_for_cli

    return load_for_cli(PostgresTarget, name)


def plan_command(argv: Sequence[str] | None = None) -> int:
    """``migrate plan DIR [--database-url URL | --block NAME]``: print the plan; 1 when
    blocked, 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="opsflows migrate plan",
        description="Print the migration plan (units, locks, transaction mode, squawk findings).",
    )
    parser.add_argument("directory", help="folder of NNN_name.sql migration files")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--database-url",
        default=None,
        help="database to plan against (read-only), without a password: it comes from "
        "OPSFLOWS_MIGRATE_PASSWORD, PGPASSWORD or ~/.pgpass; without a database every file "
        "is pending",
    )
    where.add_argument(
        "--block",
        default=None,
        metavar="NAME",
        help="a saved opsflows-postgres-target block to plan against (read-only)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        target = None
        if args.database_url:
            target = target_from_url(args.database_url)
        elif args.block:
            target = target_from_block(args.block)
        directory, migrations = load_migrations(args.directory)
        suites = load_suites(directory)
        for suite in suites:
            build_expectations(suite)
        plan = compute_plan(directory, migrations, target)
    except OpsError as exc:
        print(f"migrate plan: {exc}", file=sys.stderr)
        return 2
    shown = target.describe() if target else "no database (every file counted as pending)"
    print(f"database: {shown}; directory: {directory}")
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
    print("usage: opsflows migrate plan DIR [--database-url URL | --block NAME]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
