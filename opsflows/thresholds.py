"""The runbook's thresholds, in one place: the alert rules, the bake and the drill read them here.

``RUNBOOK.md`` ("Key Metrics We Monitor", "Backup Strategy", "Incident Severity Levels") gives
the numbers; this module is the only copy of them in the code. ``monitoring/alert_rules.yml``
is generated from :data:`THRESHOLDS` (``python -m decisions.alert_rules``, checked by a test),
the staged deploy's bake judges production against the same error rate and p95 latency
(``blocks.kube.Thresholds`` defaults), and the restore drill calls a backup stale after
:attr:`Thresholds.backup_max_age_h`.

It lives in the core package because both ``blocks`` (the bake's defaults) and ``decisions``
(the rules) read it, and those layers may import only the core.

Error rate by severity (our table: the runbook gives > 0.5% and "P2: 50%+ of users affected")::

    5xx share of requests     severity   why
    > 0.5%  and < 5%          P3         a few requests fail; a retry works around it
    >= 5%                     P2         a user session makes ~14 requests: at 5% per request
                                         1 - 0.95**14 = 51% of users see a failure (the
                                         runbook's "50%+ of users affected"); >= 50% is P2 too
    service down              P1         health probe failing or app not scraped
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Alert and gate thresholds (ratios are 0..1, durations in seconds unless named).

    Attributes:
        error_rate: 5xx share of requests above which a P3 fires and the bake fails (0.5%).
        error_rate_page: 5xx share from which the error-rate alert is P2 (see the table).
        p95_latency_s: p95 latency of requests above which the alert fires and the bake fails.
        cpu: CPU use (share of the machine, or of a pod's CPU limit) above which we alert.
        memory: share of the machine's memory in use above which we alert.
        disk: share of a filesystem or volume used above which we alert.
        db_connections: PostgreSQL backends above which we alert ("150 of 200").
        db_max_connections: the server's ``max_connections`` the number above is out of.
        db_long_transaction_s: oldest open transaction above which "database slow" alerts
            (not a runbook number: long transactions hold locks and bloat, so we watch them).
        request_queue: requests waiting in an app above which we alert (runbook: 1000).
        backup_max_age_h: hours since the last successful backup after which we alert; a
            daily backup plus 2 h of slack.
        wal_archive_wait_s: seconds a WAL file may wait to be archived before we alert
            (a healthy archive takes seconds per file, and ``archive_timeout`` closes a file
            within 30 s: five minutes of waiting is an archive that does not work, and
            point-in-time recovery losing far more than its RPO of a minute).
        cert_notify_days: days before a certificate expires from which a P3 fires.
        cert_page_days: days before a certificate expires from which it is P2.
    """

    error_rate: float = 0.005
    error_rate_page: float = 0.05
    p95_latency_s: float = 2.0
    cpu: float = 0.80
    memory: float = 0.85
    disk: float = 0.80
    db_connections: int = 150
    db_max_connections: int = 200
    db_long_transaction_s: float = 300.0
    request_queue: int = 1000
    backup_max_age_h: float = 26.0
    wal_archive_wait_s: float = 300.0
    cert_notify_days: float = 30.0
    cert_page_days: float = 7.0

    def __post_init__(self) -> None:
        if not 0 < self.error_rate < self.error_rate_page <= 1:
            raise ValueError("need 0 < error_rate < error_rate_page <= 1")
        if not 0 < self.cert_page_days < self.cert_notify_days:
            raise ValueError("need 0 < cert_page_days < cert_notify_days")
        if not 0 < self.db_connections < self.db_max_connections:
            raise ValueError("need 0 < db_connections < db_max_connections")
        for name in ("cpu", "memory", "disk"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} is a share: 0 < {name} <= 1")

    def error_rate_severity(self, rate: float) -> str | None:
        """The severity of a 5xx share of requests: None (fine), "P3" or "P2"."""
        if rate >= self.error_rate_page:
            return "P2"
        if rate > self.error_rate:
            return "P3"
        return None


#: The runbook's numbers (what every default in the code is).
THRESHOLDS = Thresholds()
