"""What a failed migration left behind, exactly, and the commands that finish or revert it.

Pending files are applied in units (:func:`decisions.migrations.apply_units`). A unit of
transactional files is one transaction: when it fails none of its files is applied. A file
that runs outside a transaction commits statement by statement: when it fails, the
statements before the failing one stay, and a ``CREATE INDEX CONCURRENTLY`` that failed part
way leaves an INVALID index behind (``pg_index.indisvalid``), which this report calls
half-applied. The units before the failed one stay committed in either case.

The report names the files applied by this run, the files not applied, the statements of
the failed file that are in effect, each half-applied index with the SQL that finishes it
and the SQL that reverts it, and what to do next. Statement text is shown scrubbed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from decisions.migrations import ApplyUnit, MigrationPlan
from decisions.sql_locks import concurrent_index_change

#: Artifact key of the failure report.
ARTIFACT_KEY = "migration-failure"


@dataclass(frozen=True)
class FailedAt:
    """Where the runner failed: the file and the 1-based line of the failing statement
    (None when the failure came before any statement: a connection, a lock, the table)."""

    file: str
    line: int | None = None


@dataclass(frozen=True)
class Leftover:
    """A half-applied statement: the INVALID index it left, and the SQL for each way out."""

    index: str
    what: str
    finish: str
    revert: str
    #: Running the migration again finishes it too (the runner drops an INVALID index the
    #: file builds and builds it again; a failed drop is simply run again).
    rerun_finishes: bool = True


@dataclass(frozen=True)
class FailureReport:
    """Exactly what a failed migration run changed and how to go on (see the module doc)."""

    database: str
    applied: tuple[str, ...]
    not_applied: tuple[str, ...]
    failed_file: str | None
    failed_line: int | None
    rolled_back: tuple[str, ...]
    in_effect: tuple[str, ...]
    leftovers: tuple[Leftover, ...]
    finish: tuple[str, ...]
    revert: tuple[str, ...]
    error: str

    def as_details(self) -> dict[str, Any]:
        """For the operation log's details."""
        return {
            "applied": list(self.applied),
            "not_applied": list(self.not_applied),
            "failed_at": self.where(),
            "rolled_back": list(self.rolled_back),
            "in_effect": list(self.in_effect),
            "half_applied": [
                f"{x.what}; finish: {x.finish}; revert: {x.revert}" for x in self.leftovers
            ],
            "finish": list(self.finish),
            "revert": list(self.revert),
        }

    def where(self) -> str:
        if self.failed_file is None:
            return "unknown"
        return self.failed_file + (f" line {self.failed_line}" if self.failed_line else "")

    def impact(self) -> str:
        """The operation log's Impact: what the run changed, exactly."""
        parts = [f"applied {len(self.applied)} migration(s): {', '.join(self.applied) or 'none'}"]
        if self.in_effect:
            parts.append(f"partly applied {self.failed_file}: {'; '.join(self.in_effect)}")
        parts += [f"half-applied: {x.what}" for x in self.leftovers]
        if len(parts) == 1 and not self.applied:
            return f"no change: nothing applied ({', '.join(self.not_applied)} not applied)"
        return "; ".join([*parts, f"not applied: {', '.join(self.not_applied)}"])

    def hint(self) -> str:
        """One paragraph for the exception and the page: state, then the way forward."""
        parts = [
            f"applied by this run: {', '.join(self.applied) or 'none'}",
            f"not applied: {', '.join(self.not_applied) or 'none'}",
        ]
        if self.rolled_back:
            parts.append(f"rolled back together (one transaction): {', '.join(self.rolled_back)}")
        if self.in_effect:
            parts.append(f"in effect from {self.failed_file}: {'; '.join(self.in_effect)}")
        parts += [f"half-applied: {x.what}" for x in self.leftovers]
        parts.append("to finish: " + " ".join(self.finish))
        parts.append("to revert: " + " ".join(self.revert))
        return "; ".join(parts)


#: What is known of an index: True valid, False INVALID, None absent.
IndexStates = Mapping[str, bool | None]


def touched_indexes(step: MigrationPlan) -> tuple[str, ...]:
    """Indexes a file builds or drops CONCURRENTLY, as it spells them."""
    changes = (concurrent_index_change(st.statement) for st in step.steps)
    return tuple(c[1] for c in changes if c is not None)


def _index_statuses(
    step: MigrationPlan, line: int | None, before: IndexStates, after: IndexStates | None
) -> tuple[list[str], list[Leftover], list[str]]:
    """Statements of a failed autocommit file in effect, half-applied ones, their reverts."""
    in_effect: list[str] = []
    leftovers: list[Leftover] = []
    reverts: list[str] = []
    for st in step.steps:
        stmt = st.statement
        change = concurrent_index_change(stmt)
        if change is None or after is None:
            if line is not None and stmt.line < line:
                in_effect.append(f"line {stmt.line}: {stmt.head}")
            continue
        verb, name = change
        was, now = before.get(name), after.get(name)
        drop = f"DROP INDEX CONCURRENTLY IF EXISTS {name};"
        at = f"line {stmt.line}"
        if verb == "create" and now is True:
            if was is True:
                in_effect.append(f"{at}: index {name} exists (it did before this run)")
            else:
                in_effect.append(f"{at}: index {name} built")
                reverts.append(drop)
        elif verb == "create" and now is False:
            leftovers.append(
                Leftover(
                    name,
                    f"index {name} is INVALID ({at}: the CONCURRENTLY build failed part way; it"
                    " slows every write to its table and answers no query)",
                    f"REINDEX INDEX CONCURRENTLY {name};",
                    drop,
                )
            )
            reverts.append(drop)
        elif verb == "drop" and now is None and was is not None:
            in_effect.append(f"{at}: index {name} dropped")
        elif verb == "drop" and now is False:
            leftovers.append(
                Leftover(
                    name,
                    f"index {name} is INVALID ({at}: the CONCURRENTLY drop failed part way)",
                    drop,
                    f"REINDEX INDEX CONCURRENTLY {name};",
                )
            )
    if after is None and step.steps:
        names = ", ".join(touched_indexes(step)) or "none"
        in_effect.append(
            f"the indexes could not be read after the failure: check pg_index.indisvalid of {names}"
        )
    return in_effect, leftovers, reverts


def failure_report(
    *,
    database: str,
    units: Sequence[ApplyUnit],
    failed_unit: int,
    applied: Sequence[str],
    failed_at: FailedAt | None,
    before: IndexStates,
    after: IndexStates | None,
    invalid_before: frozenset[str],
    invalid_after: frozenset[str],
    error: str,
    fallback: str,
) -> FailureReport:
    """The report of a run whose unit ``units[failed_unit]`` failed.

    Args:
        database: The migrated database (for people).
        units: Every unit of the run, in order.
        failed_unit: Index of the unit that failed; the ones before it are committed.
        applied: Files this run committed (files found already recorded are left out).
        failed_at: Where the runner failed, when it said.
        before: Before the failed unit, each index of :func:`touched_indexes` of its file
            (for a unit that runs outside a transaction; empty otherwise).
        after: The same after the failure; None when they could not be read.
        invalid_before: Every INVALID index (qualified name) before the failed unit.
        invalid_after: The same after the failure (a ``REINDEX … CONCURRENTLY`` that failed
            leaves ``<name>_ccnew``).
        error: The error, scrubbed.
        fallback: The backup to fall back on, described.
    """
    unit = units[failed_unit]
    not_applied = tuple(n for u in units[failed_unit:] for n in u.names)
    only = unit.names[0] if len(unit.names) == 1 else None
    failed_file = failed_at.file if failed_at else only
    line = failed_at.line if failed_at else None
    in_effect: list[str] = []
    leftovers: list[Leftover] = []
    reverts: list[str] = []
    if not unit.transactional:
        in_effect, leftovers, reverts = _index_statuses(unit.files[0], line, before, after)
    named = {x.index for x in leftovers} | {
        n.split(".")[-1] for n in touched_indexes(unit.files[0])
    }
    for name in sorted(invalid_after - invalid_before):
        if name in named or name.split(".")[-1] in named:
            continue
        drop = f"DROP INDEX CONCURRENTLY IF EXISTS {name};"
        leftovers.append(
            Leftover(
                name,
                f"index {name} is INVALID (left by the failed statement)",
                drop,
                drop,
                rerun_finishes=False,
            )
        )
        reverts.append(drop)
    rerun = (
        f"fix the cause in {failed_file or ', '.join(unit.names)} and run the migration again:"
        " files recorded in schema_migrations are skipped"
    )
    if not unit.transactional:
        rerun += (
            f", and {unit.names[0]} runs again from its first statement (each is guarded, and an"
            " INVALID index it builds is dropped and built again)"
        )
    finish = [x.finish for x in leftovers if not x.rerun_finishes]
    finish.append(rerun + ".")
    finish += [
        f"or finish {x.index} by hand, once the cause is fixed: `{x.finish}` (the next run then"
        " records the file)"
        for x in leftovers
        if x.rerun_finishes
    ]
    revert = list(dict.fromkeys(reverts))
    if applied:
        revert.append(
            f"the files this run committed ({', '.join(applied)}) stay: write a migration that"
            f" undoes them, or restore {fallback}"
        )
    if not revert and in_effect:
        revert.append(
            f"no SQL reverts the statements in effect listed above; restore {fallback} if they"
            " must go"
        )
    elif not revert:
        revert.append("nothing to revert: the database is as it was before this run")
    return FailureReport(
        database=database,
        applied=tuple(applied),
        not_applied=not_applied,
        failed_file=failed_file,
        failed_line=line,
        rolled_back=unit.names if unit.transactional else (),
        in_effect=tuple(in_effect),
        leftovers=tuple(leftovers),
        finish=tuple(finish),
        revert=tuple(revert),
        error=error,
    )


def render_failure(report: FailureReport, *, markdown: bool = False) -> str:
    """The report for people: the ``migration-failure`` artifact and the page."""
    h, li = ("## ", "- ") if markdown else ("", "  ")
    code = "`" if markdown else ""
    out = [
        f"{'# ' if markdown else ''}Migration of {report.database} failed at {report.where()}",
        "",
        f"{li}error: {report.error}",
        f"{li}applied by this run (committed): {', '.join(report.applied) or 'none'}",
        f"{li}not applied: {', '.join(report.not_applied) or 'none'}",
    ]
    if report.rolled_back:
        out.append(
            f"{li}rolled back together (one transaction, none of them applied):"
            f" {', '.join(report.rolled_back)}"
        )
    if report.in_effect:
        out.append(f"{li}in effect from {report.failed_file} (committed one by one):")
        out += [f"  {li}{x}" for x in report.in_effect]
    for x in report.leftovers:
        out.append(f"{li}HALF-APPLIED: {x.what}")
    for title, commands in (("To finish", report.finish), ("To revert", report.revert)):
        out += ["", f"{h}{title}"]
        out += [f"{li}{code}{c}{code}" if _is_sql(c) else f"{li}{c}" for c in commands]
    return "\n".join(out) + "\n"


def _is_sql(command: str) -> bool:
    return command.endswith(";") and command.split()[0].isupper()
