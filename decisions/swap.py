"""Replacing the live database by a verified restore, as steps decided from what is observed.

The swap renames the live database to a kept name and the restore (a scratch database) to
the live name. PostgreSQL cannot do that in one transaction, so it is a sequence of changes,
each recorded on the server itself; a run that stops anywhere (killed, connection lost, an
error) leaves a state from which :func:`next_step` tells how to go on::

    MARK             the restore's comment records the plan (names, comments to put back)
    CLOSE_LIVE       live refuses new connections
    RENAME_LIVE      live (its sessions ended) renamed to keep_as
    REOPEN_KEEP      the kept database accepts connections again
    RENAME_SCRATCH   the restore renamed to the live name: from here on it serves
    LABEL_KEEP       the kept database's comment says what it is
    UNMARK_LIVE      the new live database gets the old one's comment: done

Undoing walks back (``REOPEN_LIVE``, ``RENAME_KEEP_BACK``, ``UNMARK_SCRATCH``) until the
restore is a verified scratch database again and the old database is live. Once the restore
holds the live name, undoing would take the live database away a second time, so the swap is
finished instead. Each step is one statement and the decision is made again from a fresh
observation before every step, so a step that was interrupted is simply done again or skipped.
Pure: the observation is read by ``tasks/swap.py``.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from opsflows.errors import ConflictError, NotFoundError

MARK_PREFIX = "opsflows swap in progress: "


class Goal(enum.Enum):
    FINISH = "finish"
    UNDO = "undo"


class Step(enum.Enum):
    MARK = "mark the restore with the plan"
    CLOSE_LIVE = "refuse new connections to the live database"
    RENAME_LIVE = "rename the live database to the kept name"
    REOPEN_KEEP = "allow connections to the kept database"
    RENAME_SCRATCH = "rename the restore to the live name"
    LABEL_KEEP = "label the kept database"
    UNMARK_LIVE = "give the new live database its comment back"
    REOPEN_LIVE = "allow connections to the live database again"
    RENAME_KEEP_BACK = "rename the kept database back to the live name"
    UNMARK_SCRATCH = "give the restore its verified mark back"
    FINISHED = "finished: the restore is live, the old database kept"
    UNDONE = "undone: the old database is live, the restore kept"

    @property
    def terminal(self) -> bool:
        return self in (Step.FINISHED, Step.UNDONE)

    @property
    def finishes(self) -> bool:
        """The last step: once applied the swap is finished (no need to observe again; with
        no kept database, the state after it looks like a swap whose restore is missing)."""
        return self is Step.UNMARK_LIVE


@dataclass(frozen=True)
class SwapPlan:
    """One swap: the three names, and the comments the databases had before it began."""

    live: str
    scratch: str
    keep_as: str
    scratch_comment: str | None = None
    live_comment: str | None = None
    #: Whether a live database existed when the swap began (else there is nothing to keep).
    had_live: bool = True

    def same_swap(self, other: SwapPlan) -> bool:
        return (self.live, self.scratch, self.keep_as) == (other.live, other.scratch, other.keep_as)

    def mark(self) -> str:
        """The comment that records the plan on the restore while the swap is under way."""
        return MARK_PREFIX + json.dumps(
            {
                "live": self.live,
                "scratch": self.scratch,
                "keep_as": self.keep_as,
                "scratch_comment": self.scratch_comment,
                "live_comment": self.live_comment,
                "had_live": self.had_live,
            },
            sort_keys=True,
        )

    def keep_label(self) -> str:
        """The kept database's comment once the swap is finished."""
        return (
            f"opsflows: {self.live} as it was before the restore {self.scratch} replaced it;"
            " kept until dropped"
        )


def parse_mark(comment: str | None) -> SwapPlan | None:
    """The plan a database comment records, or None when it is not a swap mark."""
    if not comment or not comment.startswith(MARK_PREFIX):
        return None
    try:
        data = json.loads(comment[len(MARK_PREFIX) :])
        live, scratch, keep_as = data["live"], data["scratch"], data["keep_as"]
        scratch_comment, live_comment = data.get("scratch_comment"), data.get("live_comment")
        had_live = data.get("had_live", True)
    except (ValueError, KeyError, TypeError):
        return None
    if not all(isinstance(n, str) and n for n in (live, scratch, keep_as)):
        return None
    if not all(c is None or isinstance(c, str) for c in (scratch_comment, live_comment)):
        return None
    if not isinstance(had_live, bool):
        return None
    return SwapPlan(live, scratch, keep_as, scratch_comment, live_comment, had_live)


@dataclass(frozen=True)
class Database:
    """One database as ``pg_database`` shows it."""

    allow_connections: bool
    comment: str | None = None


@dataclass(frozen=True)
class Observed:
    """What exists under the live, kept and scratch names (None: no such database)."""

    live: Database | None
    keep: Database | None
    scratch: Database | None

    def describe(self, plan: SwapPlan) -> str:
        def one(name: str, db: Database | None) -> str:
            if db is None:
                return f"{name} absent"
            marked = " (marked)" if _marks(db, plan) else ""
            return f"{name} {'open' if db.allow_connections else 'closed'}{marked}"

        return ", ".join(
            one(n, d)
            for n, d in (
                (plan.live, self.live),
                (plan.keep_as, self.keep),
                (plan.scratch, self.scratch),
            )
        )


def _marks(db: Database | None, plan: SwapPlan) -> bool:
    found = parse_mark(db.comment) if db else None
    return found is not None and found.same_swap(plan)


def next_step(plan: SwapPlan, seen: Observed, goal: Goal) -> Step:
    """The next step towards ``goal`` from what is observed (a terminal step when there).

    Raises:
        NotFoundError: asked to finish a swap whose restore does not exist.
        ConflictError: the kept name is taken by another database, or the state is not one
            a swap leaves (changed by hand); the message says what was observed.
    """
    if _marks(seen.live, plan):  # the restore holds the live name: only finishing is left
        if seen.scratch is not None:
            raise _unexpected(plan, seen)
        if seen.keep is not None and seen.keep.comment != plan.keep_label():
            return Step.LABEL_KEEP
        return Step.UNMARK_LIVE
    if _marks(seen.scratch, plan):
        return _marked(plan, seen, goal)
    if seen.scratch is None:  # nothing marked and no restore: finished before, or never begun
        kept = seen.keep is not None and seen.keep.comment == plan.keep_label()
        if seen.live is not None and kept:
            return Step.FINISHED
        if goal is Goal.UNDO:
            return Step.UNDONE
        raise NotFoundError(
            f"the restore {plan.scratch} does not exist ({seen.describe(plan)})",
            hint="restore again; the live database was not changed",
        )
    if goal is Goal.UNDO:
        return Step.UNDONE
    if seen.keep is not None:
        raise _keep_taken(plan)
    return Step.MARK


def _marked(plan: SwapPlan, seen: Observed, goal: Goal) -> Step:
    """The restore carries the mark and is still under its scratch name."""
    live, keep = seen.live, seen.keep
    if live is not None:
        if goal is Goal.UNDO:
            return Step.UNMARK_SCRATCH if live.allow_connections else Step.REOPEN_LIVE
        if keep is not None:
            raise _keep_taken(plan)
        return Step.CLOSE_LIVE if live.allow_connections else Step.RENAME_LIVE
    if keep is not None:
        if goal is Goal.UNDO:
            return Step.RENAME_KEEP_BACK
        return Step.RENAME_SCRATCH if keep.allow_connections else Step.REOPEN_KEEP
    if goal is Goal.FINISH:
        return Step.RENAME_SCRATCH  # no live database (any more): the restore becomes it
    if plan.had_live:
        raise _unexpected(plan, seen)  # there was a live database, and it is gone
    return Step.UNMARK_SCRATCH


def _keep_taken(plan: SwapPlan) -> ConflictError:
    return ConflictError(
        f"database {plan.keep_as} already exists: the live database cannot be kept under that name",
        hint=f"drop or rename {plan.keep_as}, or run the restore again (another name is chosen)",
    )


def _unexpected(plan: SwapPlan, seen: Observed) -> ConflictError:
    return ConflictError(
        f"the swap of {plan.live} found a state no swap leaves: {seen.describe(plan)}",
        hint=f"look at the databases by hand (\\l+ in psql); the plan is: {plan.mark()}",
    )
