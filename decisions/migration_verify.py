"""What the schema must hold after the migrations ran: the files' ``-- verify:`` declarations
folded in order and checked against a snapshot of the migrated database (pure decisions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from decisions.migrations import Expectation, Migration


@dataclass(frozen=True)
class SchemaSnapshot:
    """What the database has: names are lowercase, with and without their schema."""

    tables: frozenset[str] = frozenset()
    columns: frozenset[str] = frozenset()
    indexes: Mapping[str, bool] | None = None  # name -> valid


def final_expectations(migrations: Iterable[Migration]) -> tuple[Expectation, ...]:
    """Expectations of files applied in order; a later file's word on an object wins."""
    state: dict[tuple[str, str], Expectation] = {}
    for m in migrations:
        for e in m.expectations:
            state[(e.kind, e.name)] = e
    return tuple(state.values())


def check_expectations(
    expectations: Iterable[Expectation], snapshot: SchemaSnapshot
) -> tuple[str, ...]:
    """Every expectation the snapshot contradicts, described."""
    failures = []
    indexes = dict(snapshot.indexes or {})
    for e in expectations:
        if e.kind == "index":
            exists, valid = e.name in indexes, indexes.get(e.name, False)
            if e.present and not valid:
                failures.append(f"index {e.name} is {'INVALID' if exists else 'missing'}")
            elif not e.present and exists:
                failures.append(f"index {e.name} should be gone but exists")
            continue
        exists = e.name in (snapshot.tables if e.kind == "table" else snapshot.columns)
        if exists != e.present:
            failures.append(f"{e.kind} {e.name} {'is missing' if e.present else 'still exists'}")
    return tuple(failures)
