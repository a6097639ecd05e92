"""Backup decisions as pure functions: which backup to restore, how a manifest reads.

Nothing here touches S3 or PostgreSQL: the catalog is read by ``tasks/catalog.py`` into
:class:`BackupRecord` values, and the functions below decide on them. A backup is
*complete* only when its manifest exists (the manifest is written last, after the upload
succeeded), is readable, is of this database and backup, and names a dump that is there; so
a dump left by a killed or failed run is never chosen for a restore. What retention does
with the others is in :mod:`decisions.retention`.

Keys in a manifest are relative to the manifest (``"dump": "dump.pgc"``), so a backup
copied with its folder to another prefix or bucket is still a backup there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from opsflows.errors import BackupMissing, ConfigurationError

#: 2: the dump is named relative to the manifest (``dump``); 1: by its absolute key only.
MANIFEST_VERSION = 2

#: The objects of one backup folder, ``<prefix><database>/<backup_id>/``: nothing else is
#: ever written there by opsflows.
DUMP = "dump.pgc"
MANIFEST = "manifest.json"
VERIFIED = "verified.json"
LAYOUT = frozenset({DUMP, MANIFEST, VERIFIED})


@dataclass(frozen=True)
class TableFingerprint:
    """One table as the dump's snapshot saw it."""

    name: str
    rows: int
    max_pk: int | None = None


@dataclass(frozen=True)
class Fingerprint:
    """The data a restore must reproduce: tables, their row counts, the schema hash."""

    tables: tuple[TableFingerprint, ...]
    schema_hash: str

    def table(self, name: str) -> TableFingerprint | None:
        return next((t for t in self.tables if t.name == name), None)


@dataclass(frozen=True)
class Manifest:
    """Written beside the dump, last: what the dump holds and how to check it."""

    backup_id: str
    database: str
    server_version: str
    started_at: datetime
    finished_at: datetime
    snapshot_at: datetime
    #: The dump's key in the store the manifest was read from (written relative to the
    #: manifest, resolved against the manifest's folder when read).
    dump_key: str
    size_bytes: int
    sha256: str
    parts: int
    compression: str
    fingerprint: Fingerprint
    reason: str = ""
    database_bytes: int = 0
    version: int = MANIFEST_VERSION


@dataclass(frozen=True)
class BackupRecord:
    """One backup folder as listed in the store: the dump object, its manifest if any.

    ``manifest_error`` says why a manifest that is there could not be read (``manifest`` is
    then None); ``stray_keys`` are objects in the folder that opsflows never writes;
    ``modified`` is the newest last-modified time (S3's clock) of any object in the folder.
    """

    backup_id: str
    database: str
    dump_key: str | None
    dump_size: int | None
    dump_modified: datetime | None
    manifest: Manifest | None = None
    verified_at: datetime | None = None
    keys: tuple[str, ...] = ()
    manifest_error: str = ""
    stray_keys: tuple[str, ...] = ()
    modified: datetime | None = None

    @property
    def foreign_manifest(self) -> str:
        """Why the readable manifest is not this backup's ("" when it is, or there is none)."""
        manifest = self.manifest
        if manifest is None:
            return ""
        if manifest.database != self.database:
            return f"its manifest is of database {manifest.database!r}, not {self.database!r}"
        if manifest.backup_id != self.backup_id:
            return f"its manifest is of backup {manifest.backup_id!r}, not of its folder"
        return ""

    @property
    def complete(self) -> bool:
        """This backup's manifest (written last, so the upload had succeeded) and its dump."""
        return (
            self.manifest is not None
            and not self.foreign_manifest
            and self.dump_key == self.manifest.dump_key
        )

    @property
    def size_matches(self) -> bool:
        """The object is as large as the manifest says (else it was truncated or replaced).

        A mismatch does not hide the backup from selection: restoring it fails its checksum
        with a clear error instead of silently restoring older data.
        """
        return self.manifest is not None and self.dump_size == self.manifest.size_bytes

    @property
    def point_in_time(self) -> datetime | None:
        """The moment the data in the backup reflects (its snapshot), or None if incomplete."""
        return self.manifest.snapshot_at if self.manifest else None

    @property
    def seen_at(self) -> datetime | None:
        """Best known time of the backup, complete or not (for listings and retention)."""
        if self.manifest:
            return self.manifest.snapshot_at
        return parse_backup_id(self.backup_id) or self.dump_modified


# --- timestamps ---------------------------------------------------------------------------


def parse_timestamp(text: str, default_tz: timezone = UTC) -> datetime:
    """Parse a restore point such as ``"2025-11-19 10:00:00"`` or ``"2025-11-19T10:00Z"``.

    A time without a zone is taken in ``default_tz`` (UTC); the result is always aware.
    """
    value = text.strip()
    if not value:
        raise ConfigurationError("empty timestamp", hint='use e.g. "2025-11-19 10:00:00" (UTC)')
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ConfigurationError(
            f"cannot read {text!r} as a timestamp",
            hint='use ISO 8601, e.g. "2025-11-19 10:00:00" (UTC) or "2025-11-19T10:00:00+01:00"',
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=default_tz)
    return moment


def restore_point(text: str | None, now: datetime) -> datetime | None:
    """The restore point ``text`` asks for (None or blank: the newest backup).

    A point after ``now`` is refused: no backup can hold data from the future, and taking
    the newest one instead would restore something else than what was asked for.
    """
    if text is None or not text.strip():
        return None
    moment = parse_timestamp(text)
    if moment > now:
        raise ConfigurationError(
            f"the restore point {moment.isoformat()} is in the future (now is "
            f"{_as_utc(now).isoformat(timespec='seconds')})",
            hint="give a time at or before now (UTC unless a zone is given), "
            "or leave `at` empty for the newest backup",
        )
    return moment


def backup_id_for(moment: datetime) -> str:
    """A sortable, key-safe backup id for ``moment`` (UTC, microseconds)."""
    return _as_utc(moment).strftime("%Y%m%dT%H%M%S%fZ")


def parse_backup_id(backup_id: str) -> datetime | None:
    """The time encoded in a backup id, or None when it is not one of ours."""
    try:
        return datetime.strptime(backup_id, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ConfigurationError(f"timestamp {moment.isoformat()} has no time zone")
    return moment.astimezone(UTC)


# --- choosing a backup --------------------------------------------------------------------


def backup_sort_key(record: BackupRecord) -> tuple[datetime, bool, datetime, str]:
    """Oldest first: snapshot time, then verified, then finished later (complete only)."""
    manifest = record.manifest
    assert manifest is not None
    return (
        manifest.snapshot_at,
        record.verified_at is not None,
        manifest.finished_at,
        record.backup_id,
    )


def choose_backup(
    records: Iterable[BackupRecord], at: datetime | None, *, nearest: int = 3
) -> BackupRecord:
    """The newest complete backup whose snapshot is at or before ``at`` (None = newest).

    Ties on the snapshot time prefer a verified backup, then the later finished one.
    When none is old enough, :class:`BackupMissing` lists the ``nearest`` complete
    backups after ``at`` so the caller can pick a later point knowingly.
    """
    complete = sorted((r for r in records if r.complete), key=backup_sort_key)
    if not complete:
        raise BackupMissing(
            "no complete backup exists (a dump without a manifest is not a backup)",
            hint="run the backup flow first",
        )
    if at is None:
        return complete[-1]
    limit = _as_utc(at)
    eligible = [r for r in complete if _as_utc(r.manifest.snapshot_at) <= limit]  # type: ignore[union-attr]
    if eligible:
        return eligible[-1]
    after = complete[:nearest]
    listed = ", ".join(
        f"{r.backup_id} (snapshot {r.manifest.snapshot_at.isoformat()})"  # type: ignore[union-attr]
        for r in after
    )
    raise BackupMissing(
        f"no complete backup at or before {limit.isoformat()}; the oldest are: {listed}",
        hint="choose a later timestamp, or restore the oldest backup knowingly",
    )


# --- manifest (de)serialisation -------------------------------------------------------------


def manifest_to_dict(manifest: Manifest) -> dict[str, Any]:
    """The manifest as JSON-ready data; the dump is named relative to the manifest.

    ``dump_key`` (the absolute key where it was written) is kept for readers older than
    manifest version 2, which know only that field: without it they would take every new
    backup for an incomplete one. Readers of version 2 use ``dump``.
    """
    return {
        "version": manifest.version,
        "backup_id": manifest.backup_id,
        "database": manifest.database,
        "server_version": manifest.server_version,
        "started_at": manifest.started_at.isoformat(),
        "finished_at": manifest.finished_at.isoformat(),
        "snapshot_at": manifest.snapshot_at.isoformat(),
        "dump": manifest.dump_key.rpartition("/")[2],
        "dump_key": manifest.dump_key,
        "size_bytes": manifest.size_bytes,
        "sha256": manifest.sha256,
        "parts": manifest.parts,
        "compression": manifest.compression,
        "reason": manifest.reason,
        "database_bytes": manifest.database_bytes,
        "fingerprint": {
            "schema_hash": manifest.fingerprint.schema_hash,
            "tables": [
                {"name": t.name, "rows": t.rows, "max_pk": t.max_pk}
                for t in manifest.fingerprint.tables
            ],
        },
    }


def folder_of(key: str) -> str:
    """The folder of an object key (``a/b/c`` -> ``a/b``)."""
    return key.rpartition("/")[0]


def _beside(manifest_key: str, name: str) -> str:
    folder = folder_of(manifest_key)
    return f"{folder}/{name}" if folder else name


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and name not in {".", ".."}


def resolve_dump_key(manifest_key: str, data: Mapping[str, Any]) -> str:
    """The dump's key, resolved against the folder of the manifest stored at ``manifest_key``.

    Version 2 names the dump relative to the manifest (``"dump": "dump.pgc"``): a plain name
    beside it. An older manifest has only the absolute key it was written with
    (``dump_key``); it is accepted when it names an object of the manifest's own backup
    folder (``…/<backup_id>/<name>``), and read as that name beside the manifest, so a copy
    under another prefix or bucket resolves to the copied dump, not the original.
    """
    if "dump" in data:
        name = str(data["dump"])
        if not _plain_name(name):
            raise ConfigurationError(f"the manifest names its dump {name!r}, not a name beside it")
        return _beside(manifest_key, name)
    legacy = str(data["dump_key"])
    folder, _, name = legacy.rpartition("/")
    if not _plain_name(name) or folder.rpartition("/")[2] != str(data["backup_id"]):
        raise ConfigurationError(
            f"the manifest's dump key {legacy!r} is not in the folder of backup "
            f"{data['backup_id']!r}"
        )
    return _beside(manifest_key, name)


def manifest_from_dict(data: Mapping[str, Any], manifest_key: str) -> Manifest:
    """Read the manifest stored at ``manifest_key`` (its dump key resolved beside it).

    A malformed manifest, or one of a version newer than this code reads, is a
    :class:`ConfigurationError` naming the problem.
    """
    try:
        version = int(data.get("version", 1))
        if version > MANIFEST_VERSION:
            raise ConfigurationError(
                f"manifest version {version} is newer than this opsflows reads "
                f"({MANIFEST_VERSION})",
                hint="read it with a newer opsflows",
            )
        fp = data["fingerprint"]
        return Manifest(
            version=version,
            backup_id=str(data["backup_id"]),
            database=str(data["database"]),
            server_version=str(data["server_version"]),
            started_at=parse_timestamp(str(data["started_at"])),
            finished_at=parse_timestamp(str(data["finished_at"])),
            snapshot_at=parse_timestamp(str(data["snapshot_at"])),
            dump_key=resolve_dump_key(manifest_key, data),
            size_bytes=int(data["size_bytes"]),
            sha256=str(data["sha256"]),
            parts=int(data["parts"]),
            compression=str(data["compression"]),
            reason=str(data.get("reason", "")),
            database_bytes=int(data.get("database_bytes", 0)),
            fingerprint=Fingerprint(
                schema_hash=str(fp["schema_hash"]),
                tables=tuple(
                    TableFingerprint(
                        name=str(t["name"]),
                        rows=int(t["rows"]),
                        max_pk=None if t.get("max_pk") is None else int(t["max_pk"]),
                    )
                    for t in fp["tables"]
                ),
            ),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigurationError(f"malformed backup manifest: {exc!r}") from exc


@dataclass(frozen=True)
class DrillVerdict:
    """What a restore drill concludes about recovery objectives."""

    rto_s: float
    rpo_s: float
    max_age_s: float
    backup_too_old: bool
    messages: tuple[str, ...] = field(default_factory=tuple)


def judge_drill(
    rto_s: float, backup_at: datetime, now: datetime, max_age: timedelta
) -> DrillVerdict:
    """RPO is the age of the newest backup; it is too old past ``max_age``."""
    rpo = (_as_utc(now) - _as_utc(backup_at)).total_seconds()
    too_old = rpo > max_age.total_seconds()
    hours, limit_h = rpo / 3600, max_age.total_seconds() / 3600
    messages = (
        (f"newest backup is {hours:.1f} h old (threshold {limit_h:.1f} h)",) if too_old else ()
    )
    return DrillVerdict(
        rto_s=round(rto_s, 3),
        rpo_s=round(rpo, 3),
        max_age_s=max_age.total_seconds(),
        backup_too_old=too_old,
        messages=messages,
    )
