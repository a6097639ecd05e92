"""Pure decisions of the disk-full runbook: what fills the volume, what the log policy may
clear, what backup retention would allow, and what a person is left to do.

RUNBOOK.md's "Out of disk space" checklist, as decided here::

    ☐ Check which volume is full        the app's volume (its metrics, VolumeFull) and the
                                        host's filesystems (node_exporter, HostDiskFull),
                                        against the one disk threshold (80%)
    ☐ Clear old logs                    files of the volume's logs/ older than max_age_h, or
                                        beyond the newest keep_mb, never the newest file (the
                                        one being written): :func:`logs_to_clear`
    ☐ Delete old backups if safe        a recommendation only (:func:`backup_advice`): what
                                        the backup retention rule would delete, never done here
    ☐ Increase volume size if needed    a recommendation when the policy cannot bring it under

:func:`decide_disk_full` clears logs when the app volume is above the threshold and the policy
finds some; otherwise it escalates with the recommendations (nothing it may delete), or does
nothing when no volume is above the threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from decisions.records import Record
from decisions.retention import RetentionPlan
from decisions.triage import Check
from opsflows.errors import ConfigurationError

MIB = 1024 * 1024
MAX_LOG_AGE_H = 24 * 365


def mib(nbytes: float) -> str:
    """Bytes as MiB for the evidence (``12.5 MiB``)."""
    return f"{nbytes / MIB:.1f} MiB"


@dataclass(frozen=True)
class LogPolicy(Record):
    """Which log files of the volume may be cleared: older than ``max_age_h`` hours, or
    beyond the newest ``keep_mb`` MiB of logs (None: no size rule). The newest file is always
    kept: the app is writing it."""

    max_age_h: float = 24.0
    keep_mb: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.max_age_h <= MAX_LOG_AGE_H:
            raise ConfigurationError(
                f"log_max_age_h must be in (0, {MAX_LOG_AGE_H}], got {self.max_age_h:g}",
                hint="log files older than this many hours may be cleared (24 by default)",
            )
        if self.keep_mb is not None and self.keep_mb < 0:
            raise ConfigurationError(
                f"log_keep_mb must be >= 0 or empty, got {self.keep_mb}",
                hint="the newest logs up to this many MiB are kept; leave empty for no size rule",
            )

    def describe(self) -> str:
        text = f"older than {self.max_age_h:g} h"
        if self.keep_mb is not None:
            text += f" or beyond the newest {self.keep_mb:g} MiB"
        return text + ", never the newest file"


@dataclass(frozen=True)
class LogFile(Record):
    """A file directly in the volume's ``logs/``."""

    name: str
    bytes: int
    age_s: float


@dataclass(frozen=True)
class VolumeFacts(Record):
    """The app's volume as its listing shows it (``GET /_sim/volume``)."""

    path: str
    size_bytes: int
    used_bytes: int
    #: Top-level directory -> (bytes, files); ``.`` is the files at the root.
    dirs: tuple[tuple[str, int, int], ...]
    logs: tuple[LogFile, ...]

    @property
    def ratio(self) -> float:
        return self.used_bytes / self.size_bytes if self.size_bytes else 1.0

    @classmethod
    def from_listing(cls, listing: Mapping[str, Any]) -> VolumeFacts:
        """From the app's JSON listing (a malformed one raises ``KeyError``/``TypeError``)."""
        dirs = tuple(
            (str(name), int(entry["bytes"]), int(entry["files"]))
            for name, entry in sorted(dict(listing["dirs"]).items())
        )
        logs = tuple(
            LogFile(str(f["name"]), int(f["bytes"]), float(f["age_s"])) for f in listing["logs"]
        )
        return cls(
            str(listing["path"]), int(listing["size_bytes"]), int(listing["used_bytes"]), dirs, logs
        )


@dataclass(frozen=True)
class Filesystem(Record):
    """A filesystem of the host (node_exporter): mountpoint, size and available bytes."""

    mountpoint: str
    size_bytes: int
    avail_bytes: int

    @property
    def ratio(self) -> float:
        return 1 - self.avail_bytes / self.size_bytes if self.size_bytes else 0.0


@dataclass(frozen=True)
class DatabaseUsage(Record):
    """What PostgreSQL keeps on disk: databases, the largest tables and indexes, the WAL."""

    databases: tuple[tuple[str, int], ...]
    #: (name, "table" or "index", bytes), largest first.
    relations: tuple[tuple[str, str, int], ...]
    #: None: the role may not list the WAL (``pg_ls_waldir`` needs pg_monitor).
    wal_bytes: int | None
    wal_files: int | None


def logs_to_clear(logs: Sequence[LogFile], policy: LogPolicy) -> tuple[LogFile, ...]:
    """The log files the policy may clear, oldest first (see :class:`LogPolicy`)."""
    newest_first = sorted(logs, key=lambda f: (f.age_s, f.name))
    if not newest_first:
        return ()
    chosen: list[LogFile] = []
    kept_bytes = newest_first[0].bytes
    for log in newest_first[1:]:
        too_old = log.age_s > policy.max_age_h * 3600
        beyond = policy.keep_mb is not None and kept_bytes + log.bytes > policy.keep_mb * MIB
        if too_old or beyond:
            chosen.append(log)
        else:
            kept_bytes += log.bytes
    return tuple(sorted(chosen, key=lambda f: (-f.age_s, f.name)))


def volume_check(volume: VolumeFacts | None, threshold: float) -> Check:
    """Item "app volume under N%": the volume's use against the threshold."""
    item = f"app volume under {threshold:.0%}"
    if volume is None:
        return Check(item, None, "the app's volume could not be read")
    return Check(
        item,
        volume.ratio < threshold,
        f"{volume.path}: {volume.ratio:.1%} used ({mib(volume.used_bytes)} of "
        f"{mib(volume.size_bytes)})",
    )


def filesystems_check(filesystems: Sequence[Filesystem] | None, threshold: float) -> Check:
    """Item "host filesystems under N%" (node_exporter)."""
    item = f"host filesystems under {threshold:.0%}"
    if filesystems is None:
        return Check(item, None, "node_exporter's filesystems could not be read")
    if not filesystems:
        return Check(item, None, "no filesystem reported by node_exporter")
    full = [f for f in filesystems if f.ratio >= threshold]
    shown = full or sorted(filesystems, key=lambda f: -f.ratio)[:3]
    return Check(
        item,
        not full,
        ", ".join(f"{f.mountpoint} {f.ratio:.1%} of {mib(f.size_bytes)}" for f in shown),
    )


def largest_dirs_check(volume: VolumeFacts | None) -> Check:
    """Item "largest directories of the volume" (``du`` of its top-level directories)."""
    item = "largest directories of the volume"
    if volume is None:
        return Check(item, None, "the app's volume could not be read")
    ranked = sorted(volume.dirs, key=lambda d: -d[1])
    return Check(
        item,
        True,
        ", ".join(f"{name}/ {mib(size)} in {files} files" for name, size, files in ranked)
        or "empty",
    )


def database_check(usage: DatabaseUsage | None, top: int = 3) -> list[Check]:
    """Items "PostgreSQL databases, tables and indexes" and "WAL size"."""
    if usage is None:
        why = "PostgreSQL could not be read"
        return [Check("PostgreSQL sizes", None, why), Check("WAL size", None, why)]
    dbs = ", ".join(f"{name} {mib(size)}" for name, size in usage.databases[:top])
    rels = ", ".join(f"{name} {mib(size)} ({kind})" for name, kind, size in usage.relations[:top])
    return [
        Check("PostgreSQL sizes", True, f"databases: {dbs or 'none'}; largest: {rels or 'none'}"),
        Check("WAL size", None, "pg_ls_waldir() refused: the role needs pg_monitor")
        if usage.wal_bytes is None
        else Check("WAL size", True, f"{mib(usage.wal_bytes)} in {usage.wal_files} segment files"),
    ]


def logs_check(volume: VolumeFacts | None, clear: Sequence[LogFile], policy: LogPolicy) -> Check:
    """Item "old logs the policy may clear"."""
    item = "old logs the policy may clear"
    if volume is None:
        return Check(item, None, "the app's volume could not be read")
    total = sum(f.bytes for f in volume.logs)
    freed = sum(f.bytes for f in clear)
    head = f"{len(volume.logs)} log files, {mib(total)}; policy: {policy.describe()}"
    if not clear:
        return Check(item, False, f"{head}: none may be cleared")
    return Check(item, True, f"{head}: {len(clear)} files, {mib(freed)}")


def backup_advice(plan: RetentionPlan | None, where: str, error: str = "") -> tuple[Check, str]:
    """Item "old backups (retention)" and its recommendation ("" when there is none).

    Backups are never deleted by this runbook: they are in the backup store (``where``), not
    on a volume it clears, and the backup run's retention pass deletes exactly what the rule
    allows. This says what that rule allows, or that it forbids deleting any.
    """
    item = "old backups (retention)"
    if plan is None:
        return Check(item, None, f"the backups in {where} could not be read: {error}"), ""
    kept = len(plan.keep)
    rule = (
        f"keep {plan.keep_days} days, never fewer than {plan.min_count}, never the newest verified"
    )
    quarantined = f"; {len(plan.quarantine)} quarantined (never deleted)" if plan.quarantine else ""
    if not plan.delete:
        return (
            Check(
                item,
                True,
                f"retention forbids deleting any of the {kept} backups in {where} ({rule})"
                f"{quarantined}: none deleted",
            ),
            "",
        )
    size = sum(item.record.dump_size or 0 for item in plan.delete)
    ids = ", ".join(i.record.backup_id for i in plan.delete)
    text = (
        f"retention allows deleting {len(plan.delete)} of {kept + len(plan.delete)} backups in "
        f"{where} ({mib(size)}: {ids}; {rule}){quarantined}"
    )
    return (
        Check(item, True, f"{text}: not deleted here (recommended)"),
        f"run the backup's retention pass to delete {len(plan.delete)} expired backups "
        f"({mib(size)} in {where}; it frees no space on the volume)",
    )


Action = Literal["none", "clear-logs", "escalate"]


@dataclass(frozen=True)
class DiskDecision(Record):
    """What the disk-full runbook does, why, and what it leaves to a person."""

    action: Action
    reason: str
    clear: tuple[LogFile, ...] = ()
    recommendations: tuple[str, ...] = ()

    @property
    def freed_bytes(self) -> int:
        return sum(f.bytes for f in self.clear)


def recommendations(
    volume: VolumeFacts | None,
    filesystems: Sequence[Filesystem] | None,
    threshold: float,
    freed: int = 0,
) -> list[str]:
    """What a person should consider: increase a volume the policy cannot bring under the
    threshold, and look at a full host filesystem (never cleared by this runbook)."""
    out: list[str] = []
    if volume is not None and (volume.used_bytes - freed) / volume.size_bytes >= threshold:
        biggest = max(volume.dirs, key=lambda d: d[1], default=None)
        need = int((volume.used_bytes - freed) / threshold * 1.25)
        what = f"; the most is in {biggest[0]}/ ({mib(biggest[1])})" if biggest else ""
        out.append(
            f"increase the volume {volume.path} from {mib(volume.size_bytes)} to at least "
            f"{mib(need)}, or remove what fills it by hand{what}"
        )
    for fs in filesystems or ():
        if fs.ratio >= threshold:
            out.append(
                f"free space on {fs.mountpoint} ({fs.ratio:.1%} used) or grow it: this runbook "
                "clears no host filesystem"
            )
    return out


def decide_disk_full(
    volume: VolumeFacts | None,
    filesystems: Sequence[Filesystem] | None,
    policy: LogPolicy,
    threshold: float,
    extra: Sequence[str] = (),
) -> DiskDecision:
    """Clear old logs, escalate, or nothing (see the module docstring); ``extra`` are further
    recommendations (the backups')."""
    volume_full = volume is not None and volume.ratio >= threshold
    host_full = [f for f in filesystems or () if f.ratio >= threshold]
    clear = logs_to_clear(volume.logs, policy) if volume is not None and volume_full else ()
    freed = sum(f.bytes for f in clear)
    recs = tuple([*recommendations(volume, filesystems, threshold, freed), *extra])
    if volume is None and not host_full:
        return DiskDecision("escalate", "the app's volume could not be read", (), recs)
    if not volume_full and not host_full:
        return DiskDecision(
            "none", f"no volume is {threshold:.0%} full or more: nothing to clear", (), recs
        )
    if clear:
        assert volume is not None
        after = (volume.used_bytes - freed) / volume.size_bytes
        return DiskDecision(
            "clear-logs",
            f"{volume.path} is {volume.ratio:.1%} full: clear {len(clear)} old log files "
            f"({mib(freed)}, to about {after:.1%})",
            clear,
            recs,
        )
    if volume_full:
        assert volume is not None
        why = f"{volume.path} is {volume.ratio:.1%} full and the log policy may clear nothing"
    else:
        why = ", ".join(f"{f.mountpoint} is {f.ratio:.1%} full" for f in host_full)
        why += ": a host filesystem, which this runbook does not clear"
    return DiskDecision("escalate", why, (), recs)


def recommendations_check(recs: Sequence[str]) -> Check:
    """Item "recommendations for a person": fails when a person has something to do."""
    return Check("recommendations for a person", not recs, "; ".join(recs) or "none")
