"""Retention as pure decisions: what a retention pass keeps, deletes and quarantines, and
which pending multipart uploads it may abort.

Every backup folder is in one of four states (:func:`assess`):

* **complete**: its manifest is readable, of this database and backup, and the dump it
  names is there. Kept for ``keep_days``, never fewer than ``min_count`` of them, never the
  newest verified one.
* **incomplete**: provably ours and abandoned. A folder named like our backup ids holding
  only the objects opsflows writes (``dump.pgc``, ``manifest.json``, ``verified.json``) and
  either no manifest (the run died before writing it, its last step) or a readable manifest
  of this backup whose dump is gone. Deleted once nothing in it changed for the grace period.
* **unreadable**: a manifest that is there but cannot be read (not JSON, fields missing, a
  version newer than this code, refused by S3).
* **foreign**: a manifest of another database or backup, or any object opsflows never writes
  in the folder.

Unreadable and foreign backups are *quarantined*: listed with the reason in the retention
plan (artifact ``backup-retention``) and in the operation log, never deleted, and counted as
neither kept nor deletable (they do not make up the minimum count). Retention writes nothing
to them either, no tag and no copy: a person looks at them and decides. A quarantined backup
that is complete (a readable manifest and its dump, next to a stray object) can still be
restored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from decisions.backups import BackupRecord, backup_sort_key, parse_backup_id
from opsflows.errors import ConfigurationError

#: Past this, nothing in an incomplete folder changed for so long that no run is finishing it,
#: and no backup run whose upload is this old and unleased is still writing.
GRACE = timedelta(hours=6)


class BackupState(StrEnum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    UNREADABLE = "unreadable"
    FOREIGN = "foreign"


@dataclass(frozen=True)
class Assessment:
    """The state of one backup folder and why."""

    state: BackupState
    reason: str

    @property
    def quarantined(self) -> bool:
        return self.state in {BackupState.UNREADABLE, BackupState.FOREIGN}


def _names(record: BackupRecord, keys: Iterable[str]) -> str:
    marker = f"/{record.backup_id}/"
    return ", ".join(sorted(k.partition(marker)[2] or k for k in keys))


def assess(record: BackupRecord) -> Assessment:
    """Which of the four states ``record`` is in (see the module docstring)."""
    if record.manifest is None and record.manifest_error:
        return Assessment(BackupState.UNREADABLE, f"manifest unreadable: {record.manifest_error}")
    if record.foreign_manifest:
        return Assessment(BackupState.FOREIGN, record.foreign_manifest)
    if record.stray_keys:
        return Assessment(
            BackupState.FOREIGN,
            f"holds objects opsflows does not write: {_names(record, record.stray_keys)}",
        )
    if record.complete:
        return Assessment(BackupState.COMPLETE, "complete")
    if record.manifest is not None:
        missing = _names(record, [record.manifest.dump_key])
        return Assessment(
            BackupState.INCOMPLETE, f"the dump its manifest names ({missing}) is gone"
        )
    return Assessment(BackupState.INCOMPLETE, "no manifest")


def last_activity(record: BackupRecord) -> datetime | None:
    """The latest sign of life of a folder: its backup id's time or its newest object."""
    moments = [parse_backup_id(record.backup_id), record.modified, record.dump_modified]
    known = [m.astimezone(UTC) for m in moments if m is not None]
    return max(known) if known else None


@dataclass(frozen=True)
class RetentionItem:
    """One backup and why the plan keeps, deletes or quarantines it."""

    record: BackupRecord
    reason: str


@dataclass(frozen=True)
class RetentionPlan:
    """What retention keeps, deletes and quarantines, with the rule that decided each."""

    now: datetime
    keep: tuple[RetentionItem, ...]
    delete: tuple[RetentionItem, ...]
    keep_days: int
    min_count: int
    quarantine: tuple[RetentionItem, ...] = ()

    def delete_keys(self) -> list[str]:
        return [key for item in self.delete for key in item.record.keys]


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ConfigurationError(f"timestamp {moment.isoformat()} has no time zone")
    return moment.astimezone(UTC)


def plan_retention(
    records: Sequence[BackupRecord],
    now: datetime,
    *,
    keep_days: int = 30,
    min_count: int = 7,
    incomplete_grace: timedelta = GRACE,
) -> RetentionPlan:
    """Keep ``keep_days`` of backups, never fewer than ``min_count`` complete ones, and never
    the newest verified backup; drop incomplete leftovers once past ``incomplete_grace``;
    quarantine unreadable and foreign ones.

    An incomplete folder in which something changed within the grace period (by its backup id
    or S3's last-modified time, whichever is later) may belong to a run still writing its
    manifest, so it is kept.
    """
    if keep_days < 1:
        raise ConfigurationError(f"retention of {keep_days} days would delete every backup")
    if min_count < 1:
        raise ConfigurationError(f"a minimum count of {min_count} would allow deleting all")
    now = _as_utc(now)
    horizon = now - timedelta(days=keep_days)
    assessed = [(record, assess(record)) for record in records]
    complete = sorted(
        (r for r, a in assessed if a.state is BackupState.COMPLETE),
        key=backup_sort_key,
        reverse=True,
    )
    newest_n = {r.backup_id for r in complete[:min_count]}
    verified = [r for r in complete if r.verified_at is not None]
    newest_verified = verified[0].backup_id if verified else None
    keep: list[RetentionItem] = []
    delete: list[RetentionItem] = []
    quarantine: list[RetentionItem] = []
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
    for record, verdict in assessed:
        if verdict.state is BackupState.COMPLETE:
            continue
        if verdict.quarantined:
            quarantine.append(RetentionItem(record, f"{verdict.state}: {verdict.reason}"))
            continue
        seen = last_activity(record)
        if seen is not None and seen > now - incomplete_grace:
            keep.append(
                RetentionItem(
                    record, f"incomplete ({verdict.reason}) but recent: a run may still finish it"
                )
            )
        else:
            delete.append(RetentionItem(record, f"incomplete ({verdict.reason}): not a backup"))
    return RetentionPlan(
        now=now,
        keep=tuple(keep),
        delete=tuple(delete),
        keep_days=keep_days,
        min_count=min_count,
        quarantine=tuple(quarantine),
    )


# --- pending multipart uploads --------------------------------------------------------------


@dataclass(frozen=True)
class PendingUpload:
    """A multipart upload that was started and neither completed nor aborted.

    ``initiated`` is the later of S3's initiation time and the time in its backup id;
    ``ours`` says whether its key is one a backup writes (``<database>/<backup_id>/dump.pgc``).
    """

    key: str
    upload_id: str
    initiated: datetime
    ours: bool = True


@dataclass(frozen=True)
class UploadSweep:
    """The pending uploads a retention pass aborts, and the others with why they stay."""

    abort: tuple[PendingUpload, ...]
    keep: tuple[tuple[PendingUpload, str], ...]


def sweep_uploads(
    uploads: Iterable[PendingUpload],
    now: datetime,
    *,
    writers: int | None,
    grace: timedelta = GRACE,
) -> UploadSweep:
    """Which pending uploads to abort: only abandoned ones (their parts are billed, useless).

    An upload is aborted only when all of these hold:

    * its key is one a backup writes (anything else under the prefix is not ours to abort);
    * no backup of the database is writing: ``writers`` is the number of upload leases held
      (``procedures/upload_lease.py``), leases the Prefect server takes back when their holder
      dies, so this does not rest on comparing clocks; ``None`` (unknown, e.g. the Prefect API
      did not answer) aborts nothing;
    * it was initiated more than ``grace`` ago, by S3's clock and by its backup id both.
    """
    limit = _as_utc(now) - grace
    abort: list[PendingUpload] = []
    keep: list[tuple[PendingUpload, str]] = []
    for upload in uploads:
        if not upload.ours:
            keep.append((upload, "not an upload of a backup (key outside the backup layout)"))
        elif writers is None:
            keep.append((upload, "cannot tell whether a backup is writing it (no lease count)"))
        elif writers > 0:
            keep.append((upload, f"{writers} backup(s) of this database are writing"))
        elif _as_utc(upload.initiated) > limit:
            hours = grace.total_seconds() / 3600
            keep.append((upload, f"started less than {hours:g} h ago"))
        else:
            abort.append(upload)
    return UploadSweep(abort=tuple(abort), keep=tuple(keep))
