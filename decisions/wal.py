"""Point-in-time recovery, decided: WAL names, the restorable range, the base backup for a
moment, and which archived files retention may delete.

Layout in the backup store (``BackupStore.key``)::

    pitr/<cluster>/wal/<WAL file name>.zst          every archived WAL file (wal-push)
    pitr/<cluster>/base/<id>/base.tar.zst            pg_basebackup -Ft, zstd
    pitr/<cluster>/base/<id>/manifest.json           written last: the base backup is complete

A WAL segment name is ``TTTTTTTTXXXXXXXXYYYYYYYY``: timeline, then the LSN divided by the
segment size split in two (high 32 bits, then the segment within that 4 GiB); ``.history``
and ``.backup`` files are archived beside them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from decisions.records import Record
from opsflows.errors import ConfigurationError, OpsError, PermanentError

PITR_FOLDER = "pitr"
SEGMENT_BYTES = 16 * 2**20
_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def wal_folder(cluster: str) -> str:
    return f"{PITR_FOLDER}/{cluster}/wal"


def base_folder(cluster: str) -> str:
    return f"{PITR_FOLDER}/{cluster}/base"


def parse_lsn(text: str) -> int:
    """``"0/3000028"`` → 50331688."""
    found = _LSN.match(text.strip())
    if not found:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(found[1], 16) << 32) | int(found[2], 16)


def segment_name(timeline: int, lsn: int, segment_bytes: int = SEGMENT_BYTES) -> str:
    """The WAL segment holding ``lsn`` on ``timeline`` (``pg_walfile_name``)."""
    per_id = 2**32 // segment_bytes
    number = lsn // segment_bytes
    return f"{timeline:08X}{number // per_id:08X}{number % per_id:08X}"


def is_segment(name: str) -> bool:
    return bool(_SEGMENT.match(name))


def segment_number(name: str, segment_bytes: int = SEGMENT_BYTES) -> int:
    """The segment's position on its timeline (log id × segments per id + segment)."""
    per_id = 2**32 // segment_bytes
    return int(name[8:16], 16) * per_id + int(name[16:24], 16)


def segment_at(timeline: int, number: int, segment_bytes: int = SEGMENT_BYTES) -> str:
    per_id = 2**32 // segment_bytes
    return f"{timeline:08X}{number // per_id:08X}{number % per_id:08X}"


@dataclass(frozen=True)
class BackupHistory(Record):
    """What a ``.backup`` history file says (the server writes one per base backup)."""

    label: str
    start_lsn: str
    stop_lsn: str
    timeline: int
    start_wal: str
    stop_wal: str


_HISTORY = re.compile(r"^([A-Z ]+): (.*)$", re.MULTILINE)
_LOCATION = re.compile(r"^(\S+) \(file ([0-9A-F]{24})\)$")


def parse_backup_history(text: str) -> BackupHistory:
    """Parse a backup history file (``START WAL LOCATION: 0/4000028 (file 0000…04)`` …)."""
    fields = {k.strip(): v.strip() for k, v in _HISTORY.findall(text)}
    try:
        start = _LOCATION.match(fields["START WAL LOCATION"])
        stop = _LOCATION.match(fields["STOP WAL LOCATION"])
        if start is None or stop is None:
            raise KeyError("WAL LOCATION")
        timeline = int(fields.get("STOP TIMELINE") or fields["START TIMELINE"])
        return BackupHistory(
            label=fields.get("LABEL", ""),
            start_lsn=start[1],
            stop_lsn=stop[1],
            timeline=timeline,
            start_wal=start[2],
            stop_wal=stop[2],
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"not a backup history file (no {exc})") from None


@dataclass(frozen=True)
class ArchivedFile(Record):
    """One object under ``wal/``: its WAL file name and when it was archived."""

    name: str
    archived_at: datetime
    size_bytes: int = 0


@dataclass(frozen=True)
class BaseBackup(Record):
    """A complete base backup (its manifest was written) and the WAL it needs."""

    backup_id: str
    started_at: datetime
    finished_at: datetime  # consistent from here: the earliest moment it can restore to
    timeline: int
    start_lsn: str
    stop_lsn: str
    start_wal: str
    stop_wal: str
    key: str
    size_bytes: int
    sha256: str
    server_version: str = ""


@dataclass(frozen=True)
class RestorePlan(Record):
    """The base backup to start from and the WAL files recovery replays to reach a moment."""

    base: BaseBackup
    target: datetime | None  # None: the end of the archive (everything archived is replayed)
    needed: tuple[str, ...]  # from the base's first segment to the newest archived one
    newest_archived_at: datetime

    def describe_target(self) -> str:
        if self.target is None:
            return "the end of the WAL archive"
        return f"{self.target:%Y-%m-%d %H:%M:%S} UTC"


def restorable_range(
    bases: Sequence[BaseBackup], archived: Sequence[ArchivedFile]
) -> tuple[datetime, datetime] | None:
    """The moments a restore can reach: from the oldest base backup's end to the newest
    archived WAL file; None when there is no base backup or no WAL after one."""
    segments = [f for f in archived if is_segment(f.name)]
    if not bases or not segments:
        return None
    earliest = min(b.finished_at for b in bases)
    latest = max(f.archived_at for f in segments)
    return (earliest, latest) if latest >= earliest else None


def _describe_range(span: tuple[datetime, datetime] | None) -> str:
    if span is None:
        return "nothing can be restored to a point in time yet (no base backup with WAL after it)"
    return f"possible: {span[0]:%Y-%m-%d %H:%M:%S} to {span[1]:%Y-%m-%d %H:%M:%S} UTC"


def missing_segments(first: str, names: Iterable[str]) -> tuple[list[str], list[str]]:
    """The segments of ``first``'s timeline from ``first`` to the newest present, and the
    ones missing among them (a gap recovery cannot cross)."""
    timeline = first[:8]
    start = segment_number(first)
    present = sorted(
        {segment_number(n) for n in names if is_segment(n) and n[:8] == timeline}
        - set(range(start))
    )
    if not present:
        return [], [first]
    wanted = [segment_at(int(timeline, 16), n) for n in range(start, present[-1] + 1)]
    have = set(present)
    missing = [w for w in wanted if segment_number(w) not in have]
    return wanted, missing


def plan_restore(
    target: datetime, bases: Sequence[BaseBackup], archived: Sequence[ArchivedFile]
) -> RestorePlan:
    """The newest base backup finished at or before ``target`` and the WAL from its start;
    a moment outside the restorable range, or a gap in the WAL, is refused with what is
    possible (before anything is downloaded)."""
    if target.tzinfo is None:
        target = target.replace(tzinfo=UTC)
    span = restorable_range(bases, archived)
    if span is None or not span[0] <= target <= span[1]:
        raise ConfigurationError(
            f"cannot restore to {target:%Y-%m-%d %H:%M:%S} UTC: {_describe_range(span)}",
            hint="choose a moment in that range; a base backup (base-backup runbook) starts "
            "a range, archived WAL extends it",
        )
    base = max((b for b in bases if b.finished_at <= target), key=lambda b: b.finished_at)
    names = [f.name for f in archived]
    wanted, missing = missing_segments(base.start_wal, names)
    if missing:
        raise ConfigurationError(
            f"the WAL archive has a gap after base backup {base.backup_id}: missing "
            f"{', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""),
            hint="recovery cannot cross a missing WAL file; restore to a moment before the "
            "gap from an older base backup, or take a new base backup",
        )
    return RestorePlan(base=base, target=target, needed=tuple(wanted), newest_archived_at=span[1])


def plan_latest(bases: Sequence[BaseBackup], archived: Sequence[ArchivedFile]) -> RestorePlan:
    """Everything the archive holds, from the newest base backup (the drill's restore: what
    is achieved is then the RPO); refused like :func:`plan_restore` when there is nothing."""
    span = restorable_range(bases, archived)
    if span is None:
        raise ConfigurationError(
            f"no point-in-time restore is possible: {_describe_range(span)}",
            hint="run the base-backup runbook (WAL archiving must be on)",
        )
    base = max(bases, key=lambda b: b.finished_at)
    wanted, missing = missing_segments(base.start_wal, [f.name for f in archived])
    if missing:
        raise ConfigurationError(
            f"the WAL archive has a gap after base backup {base.backup_id}: missing "
            f"{', '.join(missing[:5])}",
            hint="recovery cannot cross a missing WAL file; take a new base backup",
        )
    return RestorePlan(base=base, target=None, needed=tuple(wanted), newest_archived_at=span[1])


@dataclass(frozen=True)
class WalRetention(Record):
    """Base backups and WAL files to delete, and what is kept."""

    delete_bases: tuple[str, ...]
    keep_bases: tuple[str, ...]
    delete_wal: tuple[str, ...]
    oldest_needed: str | None


def plan_wal_retention(
    bases: Sequence[BaseBackup],
    archived: Sequence[ArchivedFile],
    now: datetime,
    keep_days: int,
    min_count: int,
) -> WalRetention:
    """Keep base backups of the last ``keep_days`` (never fewer than ``min_count``, never
    none) and every WAL file from the oldest kept base's first segment on; WAL before it is
    deleted (nothing can replay it any more). With no base backup nothing is deleted."""
    if not bases:
        return WalRetention((), (), (), None)
    ordered = sorted(bases, key=lambda b: b.finished_at, reverse=True)
    cutoff = now - timedelta(days=keep_days)
    keep = [b for i, b in enumerate(ordered) if i < max(min_count, 1) or b.finished_at >= cutoff]
    drop = [b for b in ordered if b not in keep]
    oldest = min(keep, key=lambda b: (b.timeline, segment_number(b.start_wal)))
    floor = (oldest.timeline, segment_number(oldest.start_wal))
    delete_wal = []
    for f in archived:
        stem = f.name[:24]
        if not is_segment(stem) or f.name.endswith(".history"):
            continue  # timeline history files are tiny and every later timeline needs them
        if (int(stem[:8], 16), segment_number(stem)) < floor:
            delete_wal.append(f.name)
    return WalRetention(
        delete_bases=tuple(b.backup_id for b in drop),
        keep_bases=tuple(b.backup_id for b in keep),
        delete_wal=tuple(sorted(delete_wal)),
        oldest_needed=oldest.start_wal,
    )


def archiving_refusal(
    archive_mode: str,
    has_command: bool,
    last_archived: datetime | None,
    last_failed: datetime | None,
    last_failed_wal: str | None,
) -> OpsError | None:
    """Why a base backup must not be taken now (``pg_stat_archiver``), or None.

    A base backup is only as good as the WAL archive after it: with archiving off it cannot
    restore to a point in time, and while archiving fails the server would hold the backup's
    end waiting for an archive that does not come."""
    if archive_mode not in ("on", "always") or not has_command:
        return ConfigurationError(
            "WAL archiving is off on this server (archive_mode / archive_command): a base "
            "backup alone cannot restore to a point in time",
            hint="turn on archive_mode with the wal-push archive_command (README "
            '"Point-in-time recovery"), restart the server, then run again',
        )
    if last_failed is not None and (last_archived is None or last_failed > last_archived):
        return PermanentError(
            f"WAL archiving is failing: the newest attempt, for {last_failed_wal}, failed at "
            f"{last_failed:%Y-%m-%d %H:%M:%S} UTC",
            hint="see the PostgreSQL log for wal-push's message (S3 reachable? credentials?); "
            "a base backup would wait for that archive",
        )
    return None
