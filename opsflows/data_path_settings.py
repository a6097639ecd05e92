"""The bounds of the backup and restore paths: stalls, lock waits, timeouts, keepalives.

Part of :class:`opsflows.settings.Settings` (which inherits them, same ``OPSFLOWS_`` prefix);
kept apart because every one of them bounds a wait of the data path.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class DataPathSettings(BaseSettings):
    """Every blocking wait of the backup, restore and point-in-time paths is bounded here."""

    model_config = SettingsConfigDict(env_prefix="OPSFLOWS_", extra="ignore")

    # --- bounds on every blocking wait of the backup and restore paths --------------------
    dump_stall_s: float = Field(
        default=300,
        gt=0,
        le=86400,
        description=(
            "Seconds a backup may go without progress (a byte of the dump stream, a byte "
            "pg_dump wrote into zstd, CPU time pg_dump used) before it is judged stalled: "
            "the tools are killed, the multipart upload aborted and the run fails with "
            "Stalled. Progress-based: a large dump that keeps moving is never cut."
        ),
    )
    restore_stall_s: float = Field(
        default=300,
        gt=0,
        le=86400,
        description=(
            "Seconds a restore may go without a byte downloaded from S3 or accepted by "
            "pg_restore before it is judged stalled (tools killed, scratch database dropped). "
            "The download counts in chunks of 1 MiB: slower than that per period is a stall."
        ),
    )
    restore_finish_s: float = Field(
        default=7200,
        gt=0,
        le=172800,
        description=(
            "Seconds pg_restore may take after the last byte was handed to it (indexes, "
            "constraints: no bytes flow then, so this phase has a total bound)."
        ),
    )
    process_exit_s: float = Field(
        default=60,
        gt=0,
        le=3600,
        description=(
            "Seconds a child tool (pg_dump, zstd, pg_restore) may take to exit once its stream "
            "ended or it was killed, and a helper thread to finish once told to stop."
        ),
    )
    pg_lock_wait_timeout_s: float = Field(
        default=120,
        gt=0,
        le=86400,
        description=(
            "pg_dump --lock-wait-timeout: how long the dump waits for a table lock (an "
            "ALTER TABLE or a migration holding one) before it fails, to be retried."
        ),
    )
    pg_statement_timeout_s: float = Field(
        default=60,
        gt=0,
        le=3600,
        description="statement_timeout of quick catalog queries (server check, version).",
    )
    upload_concurrency: int = Field(
        default=4,
        ge=1,
        le=32,
        description=(
            "Parts of a streamed backup uploaded at once (memory is about this many parts "
            "plus three: the queue and the one being read)."
        ),
    )
    fingerprint_timeout_s: float = Field(
        default=1800,
        gt=0,
        le=86400,
        description=(
            "statement_timeout of each backup fingerprint query (count(*) and max(pk) of "
            "every table), and how long the backup waits for the fingerprint after the dump."
        ),
    )
    fingerprint_beside_bytes: int = Field(
        default=8 * 2**30,
        ge=0,
        description=(
            "A backup of a database larger than this counts its rows beside the dump; a "
            "smaller one counts them after the stream, while S3 assembles the upload (the "
            "counts then take no CPU from the dump, and finish within the assembly). Both "
            "count in the dump's snapshot."
        ),
    )
    pg_keepalives_idle_s: int = Field(
        default=30,
        ge=1,
        le=7200,
        description=(
            "libpq keepalives_idle on every connection (psycopg, pg_dump, pg_restore, GX): "
            "with the interval and count, a dead peer is noticed after about "
            "idle + interval x count seconds instead of the kernel's two hours."
        ),
    )
    pg_keepalives_interval_s: int = Field(
        default=10, ge=1, le=600, description="libpq keepalives_interval (s)."
    )
    pg_keepalives_count: int = Field(
        default=3, ge=1, le=100, description="libpq keepalives_count (unanswered probes)."
    )
    backup_timeout_s: int = Field(
        default=6 * 3600,
        ge=60,
        le=23 * 3600,
        description=(
            "timeout_seconds of the backup flow: a run still going after this fails (TimedOut) "
            "and pages, so it never holds the daily schedule's queue (at most one a day)."
        ),
    )
    pitr_scratch_dir: Path | None = Field(
        default=None,
        description=(
            "Folder for the scratch instances of point-in-time restores (a base backup is "
            "unpacked there: it needs the cluster's size free); default: the system's temp dir."
        ),
    )
    pitr_recovery_timeout_s: float = Field(
        default=3600,
        gt=0,
        description="How long a point-in-time restore's recovery may take before it is stopped.",
    )
    wal_archive_timeout_s: int = Field(
        default=30,
        ge=5,
        le=3600,
        description=(
            "archive_timeout of the devstack's PostgreSQL: a segment with writes is archived "
            "at the latest this many seconds after its first one (the RPO of point-in-time "
            "recovery; 30 keeps it under the runbook's 60 s with room for the upload)."
        ),
    )
    restore_timeout_s: int = Field(
        default=12 * 3600,
        ge=60,
        le=7 * 86400,
        description=(
            "timeout_seconds of the restore flow, including the wait for the replace-live "
            "approval (approval_timeout_s must be shorter)."
        ),
    )
    drill_timeout_s: int = Field(
        default=6 * 3600,
        ge=60,
        le=7 * 86400,
        description="timeout_seconds of the weekly restore drill.",
    )

    @model_validator(mode="after")
    def _lock_wait_before_stall(self) -> DataPathSettings:
        if self.pg_lock_wait_timeout_s >= self.dump_stall_s:
            raise ValueError(
                f"pg_lock_wait_timeout_s ({self.pg_lock_wait_timeout_s:g}) must be shorter than "
                f"dump_stall_s ({self.dump_stall_s:g}): pg_dump writes nothing while it waits "
                "for a lock, and a lock wait must fail as one, not as a stall"
            )
        return self
