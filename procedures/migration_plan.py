"""The migration plan: one builder for the migrate runbook, the deploy preflight and the
``opsflows migrate plan`` command.

Reads the migration files, the database's applied migrations and server version (when a
target is given), lints the pending files with squawk as they will run (inside or outside a
transaction), and decides (:func:`decisions.migrations.make_plan`). Inside a flow run the
reads are tasks (visible in the run); outside one (the CLI) or inside a task (the deploy
preflight) the same functions run plainly.
"""

from collections.abc import Sequence
from pathlib import Path

from prefect.context import FlowRunContext, TaskRunContext

from blocks.postgres import PostgresTarget
from decisions.migrations import Migration, Plan, make_plan, parse_migration, pending
from decisions.migrations import runs_in_transaction as in_transaction
from opsflows.errors import ConfigurationError, GateRejected
from tasks.migrate import read_database_state
from tasks.squawk import lint_migrations


def load_migrations(migrations_dir: str | Path) -> tuple[Path, tuple[Migration, ...]]:
    """The ``*.sql`` files of a directory, parsed, in name order."""
    directory = Path(migrations_dir).expanduser()
    if not directory.is_dir():
        raise ConfigurationError(
            f"migrations directory {str(migrations_dir)!r} does not exist",
            hint="pass the folder holding the NNN_name.sql files",
        )
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix == ".sql")
    if not files:
        raise ConfigurationError(f"no .sql files in {str(migrations_dir)!r}")
    return directory, tuple(parse_migration(p.name, p.read_bytes()) for p in files)


def compute_plan(
    directory: Path, migrations: Sequence[Migration], target: PostgresTarget | None
) -> Plan:
    """Database state (when a target is given), squawk on the pending files, the decision.

    Without a target every file counts as pending and the server version is unknown.
    """
    as_tasks = FlowRunContext.get() is not None and TaskRunContext.get() is None
    read = read_database_state if as_tasks else read_database_state.fn
    lint = lint_migrations if as_tasks else lint_migrations.fn
    state = read(target) if target else None
    applied = state.applied if state else ()
    version = state.server_version if state else None
    version_num = state.server_version_num if state else None
    modes = [(m.name, in_transaction(m, version_num)) for m in pending(migrations, applied)]
    findings = lint(directory, modes, version)
    return make_plan(migrations, applied, findings, version, version_num)


def refuse_if_blocked(plan: Plan) -> None:
    """Raise before any side effect when the plan refuses or blocks the run."""
    if plan.errors:
        raise ConfigurationError(
            "migrations do not match schema_migrations: " + "; ".join(plan.errors)
        )
    if plan.blocking:
        shown = "; ".join(plan.blocking[:5])
        more = f" (and {len(plan.blocking) - 5} more)" if len(plan.blocking) > 5 else ""
        raise GateRejected(
            f"the migration lint blocks {len(plan.blocking)} item(s): {shown}{more}",
            hint="rewrite the statement safely (see the plan artifact), or mark it reviewed"
            " with `-- squawk-ignore <rule>` on the line before it",
        )
