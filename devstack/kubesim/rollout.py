"""The deployment controller's arithmetic, as pure functions.

Ported from the Kubernetes deployment controller (``rolling.go``, ``recreate.go``,
``progress.go``, ``deployment_util.go``): how many pods each ReplicaSet should have next, and
which ``Available``/``Progressing`` conditions a Deployment carries.  Nothing here touches the
store, so every rule is unit-tested with plain values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devstack.kubesim.clock import rfc3339

AVAILABLE = "Available"
PROGRESSING = "Progressing"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"


def resolve_int_or_percent(value: int | str | None, total: int, *, round_up: bool) -> int:
    """``intstr.GetScaledValueFromIntOrPercent``: ``"25%"`` of ``total``, rounded as told."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"(\d+)%", value)
    if match is None:
        raise ValueError(f"invalid int-or-percent value {value!r}")
    scaled = int(match.group(1)) * total / 100
    return math.ceil(scaled) if round_up else math.floor(scaled)


def fenceposts(strategy: Mapping[str, Any], replicas: int) -> tuple[int, int]:
    """``(maxSurge, maxUnavailable)`` for a strategy; Recreate has neither."""
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0, 0
    rolling = strategy.get("rollingUpdate") or {}
    surge = resolve_int_or_percent(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = resolve_int_or_percent(
        rolling.get("maxUnavailable", "25%"), replicas, round_up=False
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1  # the controller's guard against a rollout that can never move
    return surge, min(unavailable, replicas)


@dataclass(frozen=True)
class ReplicaSetView:
    """What the rollout arithmetic needs to know about one ReplicaSet."""

    name: str
    replicas: int  # spec.replicas
    available: int  # status.availableReplicas
    pods: int = 0  # status.replicas (pods that still exist)


def plan_rolling_update(
    desired: int,
    max_surge: int,
    max_unavailable: int,
    new: ReplicaSetView | None,
    olds: Sequence[ReplicaSetView],
) -> dict[str, int]:
    """Next ``spec.replicas`` per ReplicaSet for one RollingUpdate step.

    ``olds`` must be ordered oldest first.  As in the real controller, a step that scales the
    new ReplicaSet up does not also scale old ones down; the next step does.
    """
    targets = {rs.name: rs.replicas for rs in olds}
    if new is not None:
        targets[new.name] = new.replicas
        if new.replicas > desired:
            targets[new.name] = desired
            return targets
        if new.replicas < desired:
            room = desired + max_surge - sum(targets.values())
            if room > 0:
                targets[new.name] = new.replicas + min(room, desired - new.replicas)
                return targets
    if sum(targets[rs.name] for rs in olds) == 0:
        return targets
    min_available = desired - max_unavailable
    new_unavailable = (targets[new.name] - new.available) if new is not None else 0
    max_scaled_down = sum(targets.values()) - min_available - new_unavailable
    if max_scaled_down <= 0:
        return targets
    # First drop old pods that are not available anyway ...
    cleaned = 0
    for rs in olds:
        if cleaned >= max_scaled_down:
            break
        unhealthy = targets[rs.name] - rs.available
        if targets[rs.name] == 0 or unhealthy <= 0:
            continue
        step = min(max_scaled_down - cleaned, unhealthy)
        targets[rs.name] -= step
        cleaned += step
    # ... then available ones, as long as enough stay available.
    available = sum(rs.available for rs in olds) + (new.available if new is not None else 0)
    budget = available - min_available
    for rs in olds:
        if budget <= 0:
            break
        step = min(targets[rs.name], budget)
        targets[rs.name] -= step
        budget -= step
    return targets


def plan_recreate(
    desired: int, new: ReplicaSetView | None, olds: Sequence[ReplicaSetView]
) -> dict[str, int]:
    """Next ``spec.replicas`` per ReplicaSet for the Recreate strategy."""
    targets = {rs.name: 0 for rs in olds}
    if new is not None:
        old_pods_left = any(rs.replicas or rs.pods for rs in olds)
        targets[new.name] = new.replicas if old_pods_left else desired
    return targets


def deployment_complete(desired: int, generation: int, status: Mapping[str, Any]) -> bool:
    """``DeploymentComplete``: every replica updated and available, no old pods left."""
    return bool(
        status.get("updatedReplicas", 0) == desired
        and status.get("replicas", 0) == desired
        and status.get("availableReplicas", 0) == desired
        and status.get("observedGeneration", 0) >= generation
    )


def progress_made(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """``DeploymentProgressing``: more updated/ready/available pods, or fewer old ones."""

    def old(status: Mapping[str, Any]) -> int:
        return int(status.get("replicas", 0)) - int(status.get("updatedReplicas", 0))

    return (
        after.get("updatedReplicas", 0) > before.get("updatedReplicas", 0)
        or old(after) < old(before)
        or after.get("readyReplicas", 0) > before.get("readyReplicas", 0)
        or after.get("availableReplicas", 0) > before.get("availableReplicas", 0)
    )


def find_condition(conditions: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    """The condition of type ``kind``, if present."""
    return next((c for c in conditions if c.get("type") == kind), None)


def set_condition(
    conditions: list[dict[str, Any]],
    kind: str,
    status: str,
    reason: str,
    message: str,
    now: float,
    *,
    force: bool = False,
) -> list[dict[str, Any]]:
    """``SetDeploymentCondition``: unchanged if status and reason match (unless ``force``)."""
    current = find_condition(conditions, kind)
    if (
        current is not None
        and not force
        and current.get("status") == status
        and current.get("reason") == reason
    ):
        return conditions
    stamp = rfc3339(now)
    transition = stamp
    if current is not None and current.get("status") == status:
        transition = str(current.get("lastTransitionTime") or stamp)
    condition = {
        "type": kind,
        "status": status,
        "lastUpdateTime": stamp,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    }
    return [c for c in conditions if c.get("type") != kind] + [condition]


@dataclass(frozen=True)
class RolloutFacts:
    """Everything ``next_conditions`` judges a Deployment on."""

    name: str
    new_rs: str | None
    desired: int
    generation: int
    max_unavailable: int
    paused: bool
    deadline_seconds: int
    progress_at: float


def timed_out(conditions: Sequence[Mapping[str, Any]], facts: RolloutFacts, now: float) -> bool:
    """``DeploymentTimedOut``: no progress for ``progressDeadlineSeconds``."""
    current = find_condition(conditions, PROGRESSING)
    if current is None or current.get("reason") == NEW_RS_AVAILABLE:
        return False
    if current.get("reason") == TIMED_OUT:
        return True
    return now >= facts.progress_at + facts.deadline_seconds


def next_conditions(
    conditions: list[dict[str, Any]],
    facts: RolloutFacts,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    now: float,
) -> tuple[list[dict[str, Any]], float]:
    """The Deployment's conditions after one sync, and its (possibly moved) progress time."""
    subject = f'ReplicaSet "{facts.new_rs}"' if facts.new_rs else f'Deployment "{facts.name}"'
    if after.get("availableReplicas", 0) >= facts.desired - facts.max_unavailable:
        conditions = set_condition(
            conditions,
            AVAILABLE,
            "True",
            MIN_AVAILABLE,
            "Deployment has minimum availability.",
            now,
        )
    else:
        conditions = set_condition(
            conditions,
            AVAILABLE,
            "False",
            MIN_UNAVAILABLE,
            "Deployment does not have minimum availability.",
            now,
        )
    progress_at = facts.progress_at
    current = find_condition(conditions, PROGRESSING)
    if facts.paused:
        conditions = set_condition(
            conditions, PROGRESSING, "Unknown", PAUSED, "Deployment is paused", now
        )
        return conditions, progress_at
    if current is not None and current.get("reason") == PAUSED:
        conditions = set_condition(
            conditions, PROGRESSING, "Unknown", RESUMED, "Deployment is resumed", now
        )
        return conditions, now
    already_complete = (
        after.get("replicas", 0) == after.get("updatedReplicas", 0)
        and current is not None
        and current.get("reason") == NEW_RS_AVAILABLE
    )
    if already_complete:
        return conditions, progress_at
    if deployment_complete(facts.desired, facts.generation, after):
        conditions = set_condition(
            conditions,
            PROGRESSING,
            "True",
            NEW_RS_AVAILABLE,
            f"{subject} has successfully progressed.",
            now,
        )
    elif progress_made(before, after):
        conditions = set_condition(
            conditions,
            PROGRESSING,
            "True",
            RS_UPDATED,
            f"{subject} is progressing.",
            now,
            force=True,
        )
        progress_at = now
    elif timed_out(conditions, facts, now):
        conditions = set_condition(
            conditions,
            PROGRESSING,
            "False",
            TIMED_OUT,
            f"{subject} has timed out progressing.",
            now,
        )
    return conditions, progress_at
