"""The shape of an alert rule and the label values every rule carries (pure)."""

from __future__ import annotations

from dataclasses import dataclass

ENVIRONMENT = "{{ $labels.env }}"

#: The runbook label values: which triage flow handles the alert.
SERVICE_DOWN = "service-down"
DATABASE_SLOW = "database-slow"
DISK_FULL = "disk-full"
ONE_POD_DOWN = "one-pod-down"
TRAFFIC_SPIKE = "traffic-spike"
MEMORY_LEAK = "memory-leak"
CONNECTION_POOL_EXHAUSTED = "connection-pool-exhausted"
BACKUP_FAILED = "backup-failed"
CERT_EXPIRY = "cert-expiry"
RUNBOOKS = (
    SERVICE_DOWN,
    DATABASE_SLOW,
    DISK_FULL,
    ONE_POD_DOWN,
    TRAFFIC_SPIKE,
    MEMORY_LEAK,
    CONNECTION_POOL_EXHAUSTED,
    BACKUP_FAILED,
    CERT_EXPIRY,
)
SEVERITIES = ("P1", "P2", "P3", "P4")


@dataclass(frozen=True, slots=True)
class Rule:
    """One alerting rule.

    Attributes:
        group: Rule group it belongs to.
        alert: Alert name (two rules may share one with different severities).
        expr: PromQL; every series it returns carries an ``env`` label.
        for_s: Seconds the condition must hold before the alert fires.
        why_for: Why that long (written as a comment above ``for:``).
        severity: P1..P4.
        runbook: Triage flow handling it (one of :data:`RUNBOOKS`).
        summary: One line, may use ``$labels`` and ``$value`` templates.
        host: A machine-wide rule: a test override of ``for`` leaves it alone.
        keep_s: Seconds the alert keeps firing after the condition clears (Prometheus'
            ``keep_firing_for``): a value that hovers at the threshold, or a series that
            vanishes for a scrape, is one alert, not an alert that resolves and fires again
            (each firing after a resolution is a new notification). 0: none.
        why_keep: Why that long, or why none (written as a comment above it).
    """

    group: str
    alert: str
    expr: str
    for_s: int
    why_for: str
    severity: str
    runbook: str
    summary: str
    host: bool = False
    keep_s: int = 0
    why_keep: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"{self.alert}: severity {self.severity!r} is not P1..P4")
        if self.runbook not in RUNBOOKS:
            raise ValueError(f"{self.alert}: unknown runbook {self.runbook!r}")
        if self.keep_s < 0 or not self.why_keep:
            raise ValueError(f"{self.alert}: keep_s must be >= 0 and why_keep say why")
