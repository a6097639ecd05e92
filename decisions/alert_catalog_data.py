"""The alert rules of the data side: PostgreSQL, backups and WAL archiving, certificates."""

from __future__ import annotations

from decisions.alert_labels import (
    BACKUP_FAILED,
    CERT_EXPIRY,
    DATABASE_SLOW,
    SERVICE_DOWN,
    Rule,
)
from opsflows.thresholds import Thresholds


def _g(value: float) -> str:
    """A number as PromQL writes it (no trailing zeros)."""
    return f"{value:g}"


def data_rules(t: Thresholds) -> tuple[Rule, ...]:
    """The database, backup, WAL-archive and certificate rules for thresholds ``t``."""
    day = 86400
    return (
        # -- the database (postgres_exporter) ----------------------------------------------
        Rule(
            "database",
            "PostgresDown",
            'min by (env) (pg_up{job="postgres"}) == 0\nor min by (env) (up{job="postgres"}) == 0',
            60,
            "a restart takes seconds; a minute without the database is an outage",
            "P1",
            SERVICE_DOWN,
            "PostgreSQL in {{ $labels.env }} is down",
            keep_s=120,
            why_keep=(
                "a database in a restart loop accepts connections for seconds between crashes: it "
                "is back when it has stayed up for two minutes"
            ),
        ),
        Rule(
            "database",
            "DatabaseConnectionsHigh",
            f'sum by (env) (pg_stat_database_numbackends{{job="postgres"}}) > {t.db_connections}',
            120,
            "a pool warming up opens many connections at once; two minutes above "
            f"{t.db_connections} of {t.db_max_connections} is a leak or a pile-up",
            "P2",
            DATABASE_SLOW,
            "{{ $value }} connections to PostgreSQL in {{ $labels.env }} "
            f"(max {t.db_max_connections})",
            keep_s=300,
            why_keep=(
                f"a connection count hovering at {t.db_connections} crosses it with every pool "
                "checkout; five minutes below is a recovery"
            ),
        ),
        Rule(
            "database",
            "LongRunningTransaction",
            'max by (env) (pg_stat_activity_max_tx_duration{job="postgres"})\n'
            f"  > {_g(t.db_long_transaction_s)}",
            60,
            "the duration already counts the wait; a minute more rules out a report that "
            "is about to finish",
            "P3",
            DATABASE_SLOW,
            "a transaction in {{ $labels.env }} is open for {{ $value | humanizeDuration }}",
            keep_s=0,
            why_keep=(
                "none: when the transaction ends the question is answered, and a new long one is "
                "worth its own e-mail"
            ),
        ),
        # -- backups (the ops_log table, through postgres_exporter) ------------------------
        Rule(
            "backup",
            "BackupFailed",
            'max by (env, database) (opsflows_backup_last_run_failed{job="postgres"}) == 1',
            60,
            "the last run's status only changes when a backup ends: one minute is enough to "
            "skip a scrape of a restarting exporter",
            "P2",
            BACKUP_FAILED,
            "the last backup of {{ $labels.database }} in {{ $labels.env }} failed",
            keep_s=300,
            why_keep=(
                "the status only changes when a backup ends, but a restarting exporter drops the "
                "series for a scrape: that is no recovery"
            ),
        ),
        Rule(
            "backup",
            "BackupTooOld",
            "time() - max by (env, database) (\n"
            '  opsflows_backup_last_success_timestamp_seconds{job="postgres"})'
            f"\n  > {_g(t.backup_max_age_h * 3600)}",
            300,
            "the age only grows; five minutes skips exporter restarts (the limit of "
            f"{_g(t.backup_max_age_h)} h is a daily backup plus 2 h of slack)",
            "P3",
            BACKUP_FAILED,
            "the newest good backup of {{ $labels.database }} in {{ $labels.env }} is "
            "{{ $value | humanizeDuration }} old",
            keep_s=300,
            why_keep=(
                "the age only shrinks when a backup succeeds, but a restarting exporter drops the "
                "series for a scrape: that is no recovery"
            ),
        ),
        Rule(
            "backup",
            "WalArchiveFailing",
            'max by (env) (opsflows_wal_archiver_failing{job="postgres"}) == 1\n'
            'or max by (env) (opsflows_wal_archiver_oldest_pending_seconds{job="postgres"})\n'
            f"  > {_g(t.wal_archive_wait_s)}",
            120,
            "PostgreSQL retries a failed WAL file within seconds (an upload killed midway is "
            "archived by the next attempt): two minutes of failing is an outage of the archive, "
            "not one lost request",
            "P2",
            BACKUP_FAILED,
            "WAL archiving of PostgreSQL in {{ $labels.env }} fails or is stuck: "
            "point-in-time recovery ends at the last archived WAL file",
            keep_s=120,
            why_keep=(
                "an archive that comes back archives its backlog in seconds; two minutes without "
                "a failed attempt or a waiting file is a recovery, not a pause between retries"
            ),
        ),
        # -- certificates (blackbox TLS probe) ---------------------------------------------
        _cert_rule("P2", f"< {_g(t.cert_page_days * day)}"),
        _cert_rule("P3", f"< {_g(t.cert_notify_days * day)} >= {_g(t.cert_page_days * day)}"),
    )


def _cert_rule(severity: str, bound: str) -> Rule:
    """CertificateExpiry at ``severity`` when the earliest expiry is within ``bound``."""
    return Rule(
        "certificates",
        "CertificateExpiry",
        'min by (env, instance) (probe_ssl_earliest_cert_expiry{job="blackbox-tls"})'
        f" - time()\n  {bound}",
        600,
        "expiry moves in days; ten minutes skips a probe that met a server mid-rotation",
        severity,
        CERT_EXPIRY,
        "the certificate of {{ $labels.instance }} expires in {{ $value | humanizeDuration }}",
        keep_s=600,
        why_keep=(
            "a probe that fails reports no expiry, and a missing series is no renewal; ten "
            "minutes of a later expiry is"
        ),
    )
