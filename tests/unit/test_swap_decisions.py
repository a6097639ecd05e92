"""The swap's next step from what is observed: pure, checked on a model of ``pg_database``."""

from __future__ import annotations

import pytest

from decisions.swap import (
    Database,
    Goal,
    Observed,
    Step,
    SwapPlan,
    next_step,
    parse_mark,
)
from opsflows.errors import ConflictError, NotFoundError

LIVE, SCRATCH, KEEP = "app", "app_restore_20250101t000000_ab12", "app_before_restore_1"
VERIFIED = (
    "opsflows restore of app from backup 20250101T000000000000Z: verified, kept until dropped"
)
PLAN = SwapPlan(LIVE, SCRATCH, KEEP, scratch_comment=VERIFIED, live_comment="the app's data")
FORWARD = [
    Step.MARK,
    Step.CLOSE_LIVE,
    Step.RENAME_LIVE,
    Step.REOPEN_KEEP,
    Step.RENAME_SCRATCH,
    Step.LABEL_KEEP,
    Step.UNMARK_LIVE,
]

Server = dict[str, tuple[str, Database]]  # name -> (which database it is, its state)


def start() -> Server:
    return {
        LIVE: ("old", Database(True, PLAN.live_comment)),
        SCRATCH: ("restore", Database(True, VERIFIED)),
    }


def observe(server: Server, plan: SwapPlan = PLAN) -> Observed:
    def get(name: str) -> Database | None:
        return server[name][1] if name in server else None

    return Observed(get(plan.live), get(plan.keep_as), get(plan.scratch))


def apply(server: Server, step: Step, plan: SwapPlan = PLAN) -> None:
    def comment(name: str, text: str | None) -> None:
        who, db = server[name]
        server[name] = (who, Database(db.allow_connections, text))

    def allow(name: str, value: bool) -> None:
        who, db = server[name]
        server[name] = (who, Database(value, db.comment))

    def rename(old: str, new: str) -> None:
        assert new not in server
        server[new] = server.pop(old)

    {
        Step.MARK: lambda: comment(plan.scratch, plan.mark()),
        Step.CLOSE_LIVE: lambda: allow(plan.live, False),
        Step.RENAME_LIVE: lambda: rename(plan.live, plan.keep_as),
        Step.REOPEN_KEEP: lambda: allow(plan.keep_as, True),
        Step.RENAME_SCRATCH: lambda: rename(plan.scratch, plan.live),
        Step.LABEL_KEEP: lambda: comment(plan.keep_as, plan.keep_label()),
        Step.UNMARK_LIVE: lambda: comment(plan.live, plan.live_comment),
        Step.REOPEN_LIVE: lambda: allow(plan.live, True),
        Step.RENAME_KEEP_BACK: lambda: rename(plan.keep_as, plan.live),
        Step.UNMARK_SCRATCH: lambda: comment(plan.scratch, plan.scratch_comment),
    }[step]()


def drive(server: Server, goal: Goal, plan: SwapPlan = PLAN) -> list[Step]:
    steps: list[Step] = []
    for _ in range(20):
        step = next_step(plan, observe(server, plan), goal)
        steps.append(step)
        if step.terminal:
            return steps
        apply(server, step, plan)
        if step.finishes:
            return [*steps, Step.FINISHED]
    raise AssertionError(f"no end: {steps}")


def test_a_swap_takes_its_steps_in_order_and_a_rerun_finds_it_finished() -> None:
    server = start()
    assert drive(server, Goal.FINISH) == [*FORWARD, Step.FINISHED]
    assert server == {
        LIVE: ("restore", Database(True, PLAN.live_comment)),
        KEEP: ("old", Database(True, PLAN.keep_label())),
    }
    assert drive(server, Goal.FINISH) == [Step.FINISHED]
    assert drive(server, Goal.UNDO) == [Step.FINISHED], "a finished swap is not undone"


@pytest.mark.parametrize("done", range(len(FORWARD) + 1))
def test_stopped_after_any_step_it_can_be_finished_or_undone(done: int) -> None:
    for goal in Goal:
        server = start()
        for step in FORWARD[:done]:
            apply(server, step)
        restore_live = done >= FORWARD.index(Step.RENAME_SCRATCH) + 1
        steps = drive(server, goal)
        live_who, live_db = server[LIVE]
        assert live_db.allow_connections, "the live name accepts connections"
        if goal is Goal.FINISH or restore_live:
            assert steps[-1] is Step.FINISHED
            assert steps[:-1] == FORWARD[done:], "each remaining step once"
            assert live_who == "restore" and server[KEEP][0] == "old"
            assert SCRATCH not in server
        else:
            assert steps[-1] is Step.UNDONE
            assert server == start(), "as before the swap, comments included"


def test_a_taken_keep_name_is_refused_before_any_change() -> None:
    server = start()
    server[KEEP] = ("someone else's", Database(True, None))
    with pytest.raises(ConflictError, match=f"{KEEP} already exists"):
        next_step(PLAN, observe(server), Goal.FINISH)
    assert next_step(PLAN, observe(server), Goal.UNDO) is Step.UNDONE


def test_a_keep_name_taken_while_live_is_closed_stops_the_swap_and_undo_reopens() -> None:
    server = start()
    for step in FORWARD[:2]:
        apply(server, step)
    server[KEEP] = ("someone else's", Database(True, None))
    with pytest.raises(ConflictError, match=f"{KEEP} already exists"):
        next_step(PLAN, observe(server), Goal.FINISH)
    assert drive(server, Goal.UNDO) == [Step.REOPEN_LIVE, Step.UNMARK_SCRATCH, Step.UNDONE]
    assert server[LIVE] == start()[LIVE] and server[KEEP][0] == "someone else's"


def test_a_missing_restore_is_not_found_and_nothing_to_undo() -> None:
    server = start()
    del server[SCRATCH]
    with pytest.raises(NotFoundError, match=SCRATCH):
        next_step(PLAN, observe(server), Goal.FINISH)
    assert next_step(PLAN, observe(server), Goal.UNDO) is Step.UNDONE


def test_without_a_live_database_the_restore_simply_takes_the_name() -> None:
    plan = SwapPlan(LIVE, SCRATCH, KEEP, scratch_comment=VERIFIED, had_live=False)
    server: Server = {SCRATCH: ("restore", Database(True, VERIFIED))}
    assert drive(server, Goal.FINISH, plan) == [
        Step.MARK,
        Step.RENAME_SCRATCH,
        Step.UNMARK_LIVE,
        Step.FINISHED,
    ]
    assert server == {LIVE: ("restore", Database(True, None))}
    server = {SCRATCH: ("restore", Database(True, VERIFIED))}
    apply(server, Step.MARK, plan)
    assert drive(server, Goal.UNDO, plan) == [Step.UNMARK_SCRATCH, Step.UNDONE]


def test_a_state_no_swap_leaves_is_a_conflict_that_says_what_was_seen() -> None:
    server = start()
    for step in FORWARD[:3]:
        apply(server, step)
    del server[KEEP]  # the old database was dropped by hand mid-swap
    with pytest.raises(ConflictError, match="no swap leaves") as info:
        next_step(PLAN, observe(server), Goal.UNDO)
    assert f"{LIVE} absent, {KEEP} absent, {SCRATCH} open (marked)" in info.value.message
    assert next_step(PLAN, observe(server), Goal.FINISH) is Step.RENAME_SCRATCH


def test_the_mark_records_the_plan_and_other_comments_are_not_marks() -> None:
    assert parse_mark(PLAN.mark()) == PLAN
    odd = SwapPlan('a "b"', "a'; DROP", "c\nd", None, None, had_live=False)
    assert parse_mark(odd.mark()) == odd
    for text in (
        None,
        "",
        VERIFIED,
        "opsflows swap in progress: {",
        'opsflows swap in progress: {"live": 1}',
    ):
        assert parse_mark(text) is None
    other = SwapPlan(LIVE, "another_restore", KEEP)
    assert not other.same_swap(PLAN) and PLAN.same_swap(parse_mark(PLAN.mark()) or other)
