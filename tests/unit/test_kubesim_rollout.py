"""The deployment controller's arithmetic and conditions (pure functions, no store)."""

from __future__ import annotations

import pytest

from devstack.kubesim.rollout import (
    NEW_RS_AVAILABLE,
    RS_UPDATED,
    TIMED_OUT,
    ReplicaSetView,
    RolloutFacts,
    deployment_complete,
    fenceposts,
    find_condition,
    next_conditions,
    plan_recreate,
    plan_rolling_update,
    progress_made,
    resolve_int_or_percent,
    set_condition,
)

ROLLING = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}


@pytest.mark.parametrize(
    ("value", "total", "round_up", "expected"),
    [
        ("25%", 2, True, 1),
        ("25%", 2, False, 0),
        ("25%", 10, True, 3),
        ("25%", 10, False, 2),
        (3, 10, True, 3),
    ],
)
def test_int_or_percent_rounds_like_kubernetes(
    value: int | str, total: int, round_up: bool, expected: int
) -> None:
    assert resolve_int_or_percent(value, total, round_up=round_up) == expected


def test_fenceposts_never_leave_a_rollout_stuck() -> None:
    assert fenceposts(ROLLING, 2) == (1, 0)
    assert fenceposts(ROLLING, 4) == (1, 1)
    zero = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}
    assert fenceposts(zero, 3) == (0, 1)
    assert fenceposts({"type": "Recreate"}, 3) == (0, 0)


def test_rolling_update_surges_first_then_scales_old_down_as_new_pods_become_available() -> None:
    old = ReplicaSetView("old", replicas=2, available=2, pods=2)
    new = ReplicaSetView("new", replicas=0, available=0)
    # Step 1: surge one new pod, old ones untouched.
    assert plan_rolling_update(2, 1, 0, new, [old]) == {"old": 2, "new": 1}
    # Nothing available on the new side yet: nothing may go away.
    waiting = ReplicaSetView("new", replicas=1, available=0, pods=1)
    assert plan_rolling_update(2, 1, 0, waiting, [old]) == {"old": 2, "new": 1}
    # The new pod is available: one old pod can go.
    ready = ReplicaSetView("new", replicas=1, available=1, pods=1)
    assert plan_rolling_update(2, 1, 0, ready, [old]) == {"old": 1, "new": 1}
    # Then the new ReplicaSet grows into the freed room.
    shrunk = ReplicaSetView("old", replicas=1, available=1, pods=1)
    assert plan_rolling_update(2, 1, 0, ready, [shrunk]) == {"old": 1, "new": 2}


def test_rolling_update_drops_unhealthy_old_pods_first() -> None:
    broken_old = ReplicaSetView("old", replicas=4, available=1, pods=4)
    new = ReplicaSetView("new", replicas=1, available=1, pods=1)
    targets = plan_rolling_update(4, 1, 1, new, [broken_old])
    # 5 pods, 3 must stay (4 - maxUnavailable): two unavailable old pods may go.
    assert targets == {"old": 2, "new": 1}
    healthy_old = ReplicaSetView("old", replicas=4, available=4, pods=4)
    assert plan_rolling_update(4, 1, 1, new, [healthy_old]) == {"old": 2, "new": 1}
    dead_new = ReplicaSetView("new", replicas=1, available=0, pods=1)
    assert plan_rolling_update(4, 1, 1, dead_new, [broken_old]) == {"old": 3, "new": 1}


def test_rolling_update_scales_a_complete_replicaset_directly() -> None:
    current = ReplicaSetView("rs", replicas=2, available=2, pods=2)
    assert plan_rolling_update(4, 1, 1, current, []) == {"rs": 4}
    assert plan_rolling_update(1, 1, 0, current, []) == {"rs": 1}


def test_recreate_empties_old_replicasets_before_starting_new_pods() -> None:
    old = ReplicaSetView("old", replicas=2, available=2, pods=2)
    new = ReplicaSetView("new", replicas=0, available=0)
    assert plan_recreate(2, new, [old]) == {"old": 0, "new": 0}
    gone = ReplicaSetView("old", replicas=0, available=0, pods=0)
    assert plan_recreate(2, new, [gone]) == {"old": 0, "new": 2}


def test_complete_and_progress_checks() -> None:
    done = {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
    assert deployment_complete(2, 2, done)
    assert not deployment_complete(2, 3, done), "a newer generation is not observed yet"
    assert not deployment_complete(2, 2, {**done, "replicas": 3}), "old pods still exist"
    assert progress_made({"updatedReplicas": 1}, {"updatedReplicas": 2})
    assert progress_made(
        {"replicas": 3, "updatedReplicas": 1}, {"replicas": 2, "updatedReplicas": 1}
    )
    assert not progress_made({"readyReplicas": 2}, {"readyReplicas": 2})


def test_set_condition_keeps_the_transition_time_when_status_is_unchanged() -> None:
    first = set_condition([], "Progressing", "True", "A", "a", 100.0)
    second = set_condition(first, "Progressing", "True", "B", "b", 200.0)
    (cond,) = second
    assert cond["lastTransitionTime"] == first[0]["lastTransitionTime"]
    assert cond["lastUpdateTime"] != first[0]["lastUpdateTime"]
    assert set_condition(second, "Progressing", "True", "B", "b", 300.0) is second


def facts(progress_at: float, deadline: int = 10) -> RolloutFacts:
    return RolloutFacts(
        name="web",
        new_rs="web-abc",
        desired=2,
        generation=2,
        max_unavailable=0,
        paused=False,
        deadline_seconds=deadline,
        progress_at=progress_at,
    )


def test_progress_deadline_is_exceeded_only_without_progress() -> None:
    stuck = {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2}
    conditions = set_condition([], "Progressing", "True", RS_UPDATED, "x", 0.0)

    early, _ = next_conditions(conditions, facts(0.0), stuck, stuck, 9.0)
    assert find_condition(early, "Progressing")["reason"] == RS_UPDATED  # type: ignore[index]

    late, _ = next_conditions(conditions, facts(0.0), stuck, stuck, 10.0)
    progressing = find_condition(late, "Progressing")
    assert progressing is not None
    assert (progressing["status"], progressing["reason"]) == ("False", TIMED_OUT)
    assert progressing["message"] == 'ReplicaSet "web-abc" has timed out progressing.'

    moved = {**stuck, "updatedReplicas": 2}
    progressed, progress_at = next_conditions(conditions, facts(0.0), stuck, moved, 10.0)
    assert find_condition(progressed, "Progressing")["reason"] == RS_UPDATED  # type: ignore[index]
    assert progress_at == 10.0, "progress resets the deadline"


def test_complete_rollout_reports_new_replicaset_available_and_availability() -> None:
    done = {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
    conditions, _ = next_conditions([], facts(0.0), {}, done, 5.0)
    assert find_condition(conditions, "Progressing")["reason"] == NEW_RS_AVAILABLE  # type: ignore[index]
    assert find_condition(conditions, "Available")["status"] == "True"  # type: ignore[index]
    short = {**done, "availableReplicas": 1}
    conditions, _ = next_conditions(conditions, facts(0.0), done, short, 6.0)
    assert find_condition(conditions, "Available")["reason"] == "MinimumReplicasUnavailable"  # type: ignore[index]
    assert find_condition(conditions, "Progressing")["reason"] == NEW_RS_AVAILABLE  # type: ignore[index]
