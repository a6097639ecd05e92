"""What was deployed where and when (pure): deploys read from the operation log and the
rollout history, the recent ones the service-down runbook weighs, and the revision a
rollback returns to (skipping abandoned revisions and images known to be bad)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from decisions.records import Record
from decisions.releases import RevisionRecord
from opsflows.oplog import CRASHED, FAILED

#: Operations whose op-log rows are deploys (``flows/deploy.py``, ``flows/operate.py``).
DEPLOY_OPERATIONS = ("staged deploy", "hotfix")


@dataclass(frozen=True)
class DeployRecord(Record):
    """A deploy of an image to an environment, from the op log or the rollout history."""

    source: str  # "op log" or "rollout history"
    environment: str
    image: str
    at: datetime
    what: str
    #: The deploy failed in this environment: the image is no rollback target here.
    failed: bool = False


def oplog_deploy(row: Mapping[str, Any], environment: str) -> DeployRecord | None:
    """The deploy an ``ops_log`` row records for ``environment``, or None.

    A staged deploy always changes staging and changes production once its release started
    (``production_started_at``); a hotfix changes the environment it recorded as its rollback
    target (production by default).
    """
    operation = str(row.get("operation") or "")
    details = row.get("details") or {}
    image = details.get("image")
    if operation not in DEPLOY_OPERATIONS or not image:
        return None
    if operation == "hotfix":
        touched = {str((details.get("rollback_target") or {}).get("environment") or "production")}
    else:
        touched = {"staging"} | ({"production"} if details.get("production_started_at") else set())
    if environment not in touched:
        return None
    at = row.get("finished_at") or row.get("started_at")
    if not isinstance(at, datetime):
        return None
    status = str(row.get("status") or "?")
    # A staged deploy fails where it stopped: in production once its release started.
    failed_in = max(touched, key=lambda e: e == "production")
    failed = status in (FAILED, CRASHED) and environment == failed_in
    return DeployRecord("op log", environment, str(image), at, f"{operation} ({status})", failed)


def oplog_deploys(rows: Sequence[Mapping[str, Any]], environment: str) -> list[DeployRecord]:
    """The deploys ``ops_log`` rows record for ``environment`` (:func:`oplog_deploy`)."""
    return [d for d in (oplog_deploy(r, environment) for r in rows) if d is not None]


def failed_images(deploys: Sequence[DeployRecord]) -> set[str]:
    """Images whose deploy failed: no rollback target."""
    return {d.image for d in deploys if d.failed}


def abandoned_revisions(history: Sequence[RevisionRecord]) -> set[int]:
    """Revisions a rollback moved away from: those between a reused ReplicaSet's earlier
    revision and the one the rollback gave it (rev 1 good, rev 2 bad, undo: rev 3 is the
    good ReplicaSet again, and rev 2 was abandoned)."""
    known = {r.revision for r in history}
    out: set[int] = set()
    for r in history:
        marks = sorted({*r.earlier_revisions, r.revision})
        for low, high in zip(marks, marks[1:], strict=False):
            out |= {n for n in known if low < n < high}
    return out


def rollback_target(
    history: Sequence[RevisionRecord], current: int, bad_images: Iterable[str] = ()
) -> RevisionRecord | None:
    """The newest revision before ``current`` that runs another image, that no rollback
    abandoned and whose image is not in ``bad_images`` (its deploy failed here, per the op
    log). A restart keeps the image, so ``rollout undo`` to the revision just before could
    land on the same release; an abandoned or failed one is a release already found bad."""
    by_revision = {r.revision: r for r in history}
    now = by_revision.get(current)
    if now is None:
        return None
    skip, bad = abandoned_revisions(history), set(bad_images)
    earlier = [
        r
        for r in history
        if r.revision < current
        and r.image != now.image
        and r.revision not in skip
        and r.image not in bad
    ]
    return max(earlier, key=lambda r: r.revision) if earlier else None


def recent_deploys(
    environment: str,
    current: int,
    history: Sequence[RevisionRecord],
    oplog: Sequence[DeployRecord],
    now: datetime,
    window_h: float,
) -> tuple[DeployRecord, ...]:
    """The deploys in the last ``window_h`` hours that put the running image there.

    From the op log: a deploy to ``environment`` whose image is the one running now (a deploy
    that was rolled back since is not to blame). From the rollout history: the current
    revision's ReplicaSet was created in the window with an image other than the revision
    before it (a deploy made outside the runbooks); a ReplicaSet a rollback reused is not a
    deploy.
    """
    since = now - timedelta(hours=window_h)
    running = next((r for r in history if r.revision == current), None)
    found = [
        d
        for d in oplog
        if d.environment == environment
        and d.at >= since
        and running is not None
        and d.image == running.image
    ]
    if running is not None and running.created_at is not None and not running.reused:
        before = [r for r in history if r.revision < current]
        previous = max(before, key=lambda r: r.revision) if before else None
        if running.created_at >= since and previous is not None:
            if previous.image != running.image:
                found.append(
                    DeployRecord(
                        "rollout history",
                        environment,
                        running.image,
                        running.created_at,
                        f"revision {running.revision} ({running.replicaset}) replaced "
                        f"{previous.image} (revision {previous.revision})",
                    )
                )
    return tuple(sorted(found, key=lambda d: d.at))
