"""Runbook "Out of disk space": find what fills it, clear old logs by policy, verify.

RUNBOOK.md's checklist, in order::

    ☐ Check which volume is full            the app's volume (its listing; VolumeFull) and the
                                            host's filesystems (node_exporter; HostDiskFull)
                                            against the disk threshold (80%); what fills them:
                                            the volume's largest directories, PostgreSQL's
                                            databases, tables, indexes and WAL
    ☐ Clear old logs                        files of the volume's logs/ older than
                                            ``log_max_age_h`` (or beyond the newest
                                            ``log_keep_mb``), never the newest, through the
                                            app's API: never a file outside the volume's logs
    ☐ Delete old backups if safe            a recommendation only: what the backup retention
                                            rule would delete (never the newest verified, never
                                            below the minimum count, quarantined never). The
                                            backups are in the S3 store, not on the volume:
                                            deleting them frees nothing here, and the backup
                                            run's retention pass already deletes what the rule
                                            allows. So this runbook never deletes a backup.
    ☐ Increase volume size if needed        a recommendation when the policy cannot free enough

The deletion holds the environment's change slot and is decided again under it. It counts
only when verified: the volume's use back under the threshold, read from the app and seen by
Prometheus (so VolumeFull resolves). Otherwise, or when nothing may be deleted, engineering
is paged with the recommendations. The checklist is the ``triage-disk-full-<environment>``
table artifact.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value.

import time
from datetime import UTC, datetime
from typing import Any, NoReturn

from prefect import flow

from blocks.kube import KubeEnvironment
from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from decisions.retention import plan_retention
from decisions.triage import Check, alert_check, summary
from decisions.triage_disk import (
    DatabaseUsage,
    DiskDecision,
    Filesystem,
    LogPolicy,
    VolumeFacts,
    backup_advice,
    database_check,
    decide_disk_full,
    filesystems_check,
    largest_dirs_check,
    logs_check,
    mib,
    recommendations,
    recommendations_check,
    volume_check,
)
from opsflows.errors import ConfigurationError, OpsError, VerificationFailed
from opsflows.thresholds import THRESHOLDS
from procedures.change_slot import change_slot, check_slots, require_slots
from procedures.operation import (
    APP_DB_ADMIN,
    BACKUPS,
    OPS_DB,
    ROUTING,
    current_run,
    load_block,
    operation_log,
    try_load_ops_db,
    try_load_routing,
)
from procedures.triage import TriageRun, read_run_incident, triage_run
from tasks.catalog import list_backups
from tasks.metrics import firing_alerts, query
from tasks.pg_usage import database_usage
from tasks.prom_series import vector_by
from tasks.volume import delete_logs, read_volume

RUNBOOK = "disk-full"
PROBLEM = "disk still full"


@flow(name="disk-full")
def disk_full(
    environment: str,
    incident_id: int | None = None,
    log_max_age_h: float = 24.0,
    log_keep_mb: float | None = None,
    verify_seconds: float = 30.0,
    lock_timeout_s: float = 600,
    database: str = APP_DB_ADMIN,
    store: str = BACKUPS,
    ops_db: str = OPS_DB,
    routing: str = ROUTING,
) -> dict[str, Any]:
    """Triage a full disk: find what fills it, clear old logs by policy, verify under 80%.

    Args:
        environment: KubeEnvironment block of the environment whose disk is full.
        incident_id: The incident this run works on (the incident flow gives it): its
            timeline gets every step, and it is marked mitigated once the use is verified.
        log_max_age_h: Log files of the volume older than this many hours may be cleared
            (never the newest file, the one being written).
        log_keep_mb: When set, log files beyond the newest this many MiB may be cleared too.
        verify_seconds: How long to wait for Prometheus to see the use under the threshold.
        lock_timeout_s: How long to wait for another change of the environment to finish.
        database: PostgresTarget block with pg_monitor (or superuser) rights: database,
            table and index sizes and the WAL.
        store: BackupStore block of the backups (what retention would allow deleting).
        ops_db: PostgresTarget block of the operations database (op log, incidents).
        routing: NotificationRouting block the escalation pages through.
    """
    what = f"{environment} disk full" + (f" (incident {incident_id})" if incident_id else "")
    ops_target = try_load_ops_db(ops_db)
    with operation_log(RUNBOOK, what, ops_target, try_load_routing(routing)) as rec:
        policy = LogPolicy(log_max_age_h, log_keep_mb)
        if not 1 <= verify_seconds <= 300:
            raise ConfigurationError(f"verify_seconds must be in [1, 300], got {verify_seconds}")
        env = load_block(KubeEnvironment, environment)
        pg = load_block(PostgresTarget, database)
        backups = load_block(BackupStore, store)
        incident = read_run_incident(incident_id, env.environment, ops_target)
        require_slots(env.environment)
        rec.details.update(environment=env.environment, incident_id=incident_id)
        threshold = THRESHOLDS.disk
        with triage_run(RUNBOOK, env.environment, incident, ops_target) as triage:
            volume, filesystems = read_disks(env)
            usage = read_database(pg)
            backup_item, backup_rec = read_backups(backups, pg.database)
            decision = decide_disk_full(
                volume, filesystems, policy, threshold, [backup_rec] if backup_rec else []
            )
            triage.record(
                alert_check(alerts(env), env.environment),
                volume_check(volume, threshold),
                filesystems_check(filesystems, threshold),
                largest_dirs_check(volume),
                *database_check(usage),
                logs_check(volume, decision.clear, policy),
                backup_item,
            )
            triage.note(f"checked: {summary(triage.checks)}")
            triage.note(f"decided {decision.action}: {decision.reason}")
            rec.details["decision"] = decision.as_dict()
            if decision.action == "none":
                triage.record(recommendations_check(decision.recommendations))
                rec.impact = f"no change: {decision.reason}"
                return {"action": "none", "reason": decision.reason}
            if decision.action == "escalate":
                triage.record(recommendations_check(decision.recommendations))
                return escalate(triage, decision)
            with change_slot(env.environment, lock_timeout_s):
                # Decided again under the slot: another change may have freed space meanwhile.
                volume, filesystems = read_disks(env)
                again = decide_disk_full(
                    volume, filesystems, policy, threshold, [backup_rec] if backup_rec else []
                )
                if again.action != decision.action:
                    triage.note(f"decided again under the change slot: {again.action}")
                rec.details["decision"] = again.as_dict()
                if again.action == "none":
                    triage.record(Check("recovered before the change", True, again.reason))
                    triage.record(recommendations_check(again.recommendations))
                    rec.impact = f"no change: {again.reason}"
                    return {"action": "none", "reason": again.reason}
                if again.action == "escalate":
                    triage.record(recommendations_check(again.recommendations))
                    return escalate(triage, again)
                extra = [backup_rec] if backup_rec else []
                return clear_and_verify(triage, env, again, threshold, verify_seconds, extra)


def alerts(env: KubeEnvironment) -> list[dict[str, Any]] | None:
    try:
        return firing_alerts(env.prometheus_url)
    except OpsError:
        return None


def read_disks(env: KubeEnvironment) -> tuple[VolumeFacts | None, list[Filesystem] | None]:
    """The app's volume (its own listing) and the host's filesystems (node_exporter)."""
    try:
        volume: VolumeFacts | None = VolumeFacts.from_listing(read_volume(env.service_url))
    except (OpsError, KeyError, TypeError, ValueError):
        volume = None
    sel = f'job="node", env="{env.environment}", fstype!~"tmpfs|ramfs|squashfs"'
    try:
        size = vector_by(env.prometheus_url, f"node_filesystem_size_bytes{{{sel}}}", "mountpoint")
        avail = vector_by(env.prometheus_url, f"node_filesystem_avail_bytes{{{sel}}}", "mountpoint")
        filesystems: list[Filesystem] | None = [
            Filesystem(mount, int(size[mount]), int(avail[mount]))
            for mount in sorted(size)
            if mount in avail and size[mount] > 0
        ]
    except OpsError:
        filesystems = None
    return volume, filesystems


def read_database(pg: PostgresTarget) -> DatabaseUsage | None:
    try:
        return database_usage(pg)
    except OpsError:
        return None


def read_backups(backups: BackupStore, database: str) -> tuple[Check, str]:
    """What the backup retention rule would delete (never deleted here)."""
    where = f"s3://{backups.bucket}/{backups.key(database)}"
    try:
        records = list_backups(backups, database)
        plan = plan_retention(
            records,
            datetime.now(UTC),
            keep_days=backups.retention_days,
            min_count=backups.min_backups,
        )
    except OpsError as exc:
        return backup_advice(None, where, exc.message)
    return backup_advice(plan, where)


def clear_and_verify(
    triage: TriageRun,
    env: KubeEnvironment,
    decision: DiskDecision,
    threshold: float,
    verify_s: float,
    extra: list[str],
) -> dict[str, Any]:
    """Clear the chosen log files (holding the slot), verify the use, mitigate or escalate;
    ``extra`` are the recommendations that do not depend on the volume (the backups')."""
    rec = current_run().record
    check_slots()  # safe point: nothing changed yet
    names = [f.name for f in decision.clear]
    try:
        after = delete_logs(env.service_url, names)
    except OpsError as exc:
        rec.impact = f"no change: clearing the logs of {env.environment} failed"
        triage.record(Check("clear old logs", False, exc.message))
        return escalate(triage, decision, f"clearing the old logs failed: {exc.message}")
    done = f"cleared {len(names)} old log files ({mib(decision.freed_bytes)}) of the volume"
    rec.impact = f"{env.environment}: {done}"
    rec.details["cleared"] = names
    triage.record(Check("clear old logs", True, f"{done}: {', '.join(names)}"))
    triage.note(done)
    volume, filesystems = read_disks(env)
    checks = [
        Check(f"volume under {threshold:.0%} (verified)", *_verified(volume, threshold)),
        prometheus_sees(env, threshold, verify_s),
    ]
    host_full = [f for f in filesystems or () if f.ratio >= threshold]
    if host_full:
        checks.append(filesystems_check(filesystems, threshold))
    triage.record(*checks)
    recs = [*recommendations(volume, filesystems, threshold), *extra]
    triage.record(recommendations_check(recs))
    if not all(c.passed for c in checks):
        failed = "; ".join(f"{c.item}: {c.evidence}" for c in checks if not c.passed)
        still = DiskDecision("escalate", decision.reason, (), tuple(recs))
        return escalate(triage, still, f"{done}, but the disk is still full ({failed})")
    moved = triage.mitigated(f"{done}; use verified under {threshold:.0%}")
    triage.note(f"verified: {summary(checks)}")
    if triage.incident is not None and not moved:
        triage.note("the incident was already resolved or mitigated; not marked again")
    rec.details.update(mitigated=moved)
    return {
        "action": "clear-logs",
        "cleared": names,
        "used_bytes": after.get("used_bytes"),
        "verified": True,
        "mitigated": moved,
    }


def _verified(volume: VolumeFacts | None, threshold: float) -> tuple[bool | None, str]:
    if volume is None:
        return None, "the app's volume could not be read"
    return (
        volume.ratio < threshold,
        f"{volume.ratio:.1%} used ({mib(volume.used_bytes)} of {mib(volume.size_bytes)})",
    )


def prometheus_sees(env: KubeEnvironment, threshold: float, wait_s: float) -> Check:
    """Item "Prometheus sees it under N%": the scraped ratio VolumeFull alerts on, polled
    until it is under the threshold or ``wait_s`` passed."""
    item = f"Prometheus sees the volume under {threshold:.0%}"
    sel = f'job="web-app", env="{env.environment}"'
    promql = f"max(sampleapp_volume_used_bytes{{{sel}}} / sampleapp_volume_size_bytes{{{sel}}})"
    deadline = time.monotonic() + wait_s
    seen: float | None = None
    while True:
        try:
            seen = query(env.prometheus_url, promql)
        except OpsError as exc:
            why = f"query failed: {exc.message}"
        else:
            if seen is not None and seen < threshold:
                return Check(item, True, f"{seen:.1%} scraped")
            why = "no series" if seen is None else f"{seen:.1%} scraped"
        if time.monotonic() >= deadline:
            return Check(item, None if seen is None else False, f"{why} after {wait_s:g} s")
        time.sleep(1.0)


def escalate(triage: TriageRun, decision: DiskDecision, why: str = "") -> NoReturn:
    """Page engineering with the recommendations and end the run failed."""
    why = why or decision.reason
    recs = "; ".join(decision.recommendations)
    triage.escalate(why + (f". Recommended: {recs}" if recs else ""), PROBLEM)
    raise VerificationFailed(
        f"{triage.environment} {PROBLEM}: {why}",
        hint="engineering was paged; the recommendations are in the triage checklist artifact",
    )
