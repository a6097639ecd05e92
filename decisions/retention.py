"""Retention as pure decisions: what a retention pass keeps and deletes, and which pending
multipart uploads it aborts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from decisions.backups import BackupRecord, backup_sort_key
from opsflows.errors import ConfigurationError


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ConfigurationError(f"timestamp {moment.isoformat()} has no time zone")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class RetentionItem:
    """One backup and why the plan keeps or deletes it."""

    record: BackupRecord
    reason: str


@dataclass(frozen=True)
class RetentionPlan:
    """What retention keeps and deletes, with the rule that decided each."""

    now: datetime
    keep: tuple[RetentionItem, ...]
    delete: tuple[RetentionItem, ...]
    keep_days: int
    min_count: int

    def delete_keys(self) -> list[str]:
        return [key for item in self.delete for key in item.record.keys]


def plan_retention(
    records: Sequence[BackupRecord],
    now: datetime,
    *,
    keep_days: int = 30,
    min_count: int = 7,
    incomplete_grace: timedelta = timedelta(hours=6),
) -> RetentionPlan:
    """Keep ``keep_days`` of backups, never fewer than ``min_count`` complete ones, and never
    the newest verified backup; drop incomplete leftovers once past ``incomplete_grace``.

    An incomplete dump younger than the grace period may belong to a run still writing its
    manifest, so it is kept.
    """
    if keep_days < 1:
        raise ConfigurationError(f"retention of {keep_days} days would delete every backup")
    if min_count < 1:
        raise ConfigurationError(f"a minimum count of {min_count} would allow deleting all")
    now = _as_utc(now)
    horizon = now - timedelta(days=keep_days)
    complete = sorted((r for r in records if r.complete), key=backup_sort_key, reverse=True)
    newest_n = {r.backup_id for r in complete[:min_count]}
    verified = [r for r in complete if r.verified_at is not None]
    newest_verified = verified[0].backup_id if verified else None
    keep: list[RetentionItem] = []
    delete: list[RetentionItem] = []
    for record in complete:
        when = _as_utc(record.manifest.snapshot_at)  # type: ignore[union-attr]
        if when >= horizon:
            keep.append(RetentionItem(record, f"younger than {keep_days} days"))
        elif record.backup_id in newest_n:
            keep.append(RetentionItem(record, f"one of the newest {min_count} complete backups"))
        elif record.backup_id == newest_verified:
            keep.append(RetentionItem(record, "the newest verified backup"))
        else:
            delete.append(RetentionItem(record, f"older than {keep_days} days"))
    for record in records:
        if record.complete:
            continue
        seen = record.seen_at
        if seen is not None and _as_utc(seen) > now - incomplete_grace:
            keep.append(RetentionItem(record, "incomplete but recent: a run may still finish it"))
        else:
            delete.append(RetentionItem(record, "incomplete (no manifest): not a backup"))
    return RetentionPlan(
        now=now, keep=tuple(keep), delete=tuple(delete), keep_days=keep_days, min_count=min_count
    )


@dataclass(frozen=True)
class PendingUpload:
    """A multipart upload that was started and neither completed nor aborted."""

    key: str
    upload_id: str
    initiated: datetime


def stale_uploads(
    uploads: Iterable[PendingUpload], now: datetime, grace: timedelta = timedelta(hours=6)
) -> list[PendingUpload]:
    """Uploads older than ``grace``: left by killed runs, to be aborted (their parts cost)."""
    limit = _as_utc(now) - grace
    return [u for u in uploads if _as_utc(u.initiated) <= limit]
