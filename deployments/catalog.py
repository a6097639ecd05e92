"""Every runbook deployment, in one list: served by ``serve.py``, mirrored by prefect.yaml."""

from __future__ import annotations

from typing import Any

from prefect.schedules import Cron

from decisions.watchdogs import WATCHED_RUNBOOKS
from deployments.watchdogs import crash_recorder, incident_response
from flows.access_audit import access_audit
from flows.access_log_review import access_log_review
from flows.backup import backup_database
from flows.base_backup import base_backup
from flows.capacity_report import capacity_report
from flows.certificate_check import certificate_check
from flows.connection_pool_exhausted import connection_pool_exhausted
from flows.database_slow import database_slow
from flows.deploy import staged_deploy
from flows.disk_full import disk_full
from flows.game_day import game_day
from flows.handoff_note import handoff_note
from flows.memory_leak import memory_leak
from flows.migrate import migrate_database
from flows.one_pod_down import one_pod_down
from flows.operate import hotfix, restart, rollback, scale
from flows.pre_shift_check import pre_shift_check
from flows.renew_certificate import renew_certificate
from flows.restore import restore_database
from flows.restore_drill import restore_drill
from flows.restore_to_time import restore_to_time
from flows.rotate_credentials import rotate_credentials
from flows.service_down import service_down
from flows.smoke import stack_smoke
from flows.traffic_spike import traffic_spike


def at_runbook(deployment: Any, entrypoint: str) -> Any:
    """Point a deployment at its runbook module when the flow is defined in ``procedures/``.

    The backup flow lives in :mod:`procedures.backup` (the migrate runbook takes the same
    backup as a subflow); Prefect derives the entrypoint from the defining file, so the
    runbook's own module is named here, as prefect.yaml names it.
    """
    deployment.entrypoint = entrypoint
    return deployment


#: The handoff note runs at the rotation's shift change (policy/oncall.yaml: Mondays 09:00 in
#: Berlin); tests/unit/test_handoff_note.py keeps the two in step.
HANDOFF_CRON, HANDOFF_TZ = "0 9 * * 1", "Europe/Berlin"
#: The pre-shift check runs half an hour before that shift change (the same test keeps it
#: in step).
PRESHIFT_CRON, PRESHIFT_TZ = "30 8 * * 1", "Europe/Berlin"
PRESHIFT_LEAD_MIN = 30


def runner_deployments() -> list[Any]:
    """The ``RunnerDeployment`` of every runbook, with schedules and descriptions."""
    runbooks = [*_runbooks(), incident_response(sorted(WATCHED_RUNBOOKS))]
    flows = sorted({d.flow_name for d in runbooks} | {pre_shift_check.name})
    recorder = crash_recorder(flows)
    names = [f"{d.flow_name}/{d.name}" for d in (*runbooks, recorder)]
    names.append(f"{pre_shift_check.name}/pre-shift-check")
    return [*runbooks, pre_shift(sorted(names)), recorder]


def pre_shift(catalog: list[str]) -> Any:
    """The ``pre-shift-check`` deployment; ``catalog`` is what its "runbooks current" check
    expects on the server (every deployment of this catalog, itself included)."""
    return pre_shift_check.to_deployment(
        name="pre-shift-check",
        description="The pre-shift check before each shift change (Mondays 08:30 "
        "Europe/Berlin, half an hour before policy/oncall.yaml's change), or started by the "
        "incoming engineer from the UI: Prometheus and Alertmanager answer, a test page to "
        "the incoming engineer is confirmed in a form, a rollback target exists in staging "
        "and production (dry run), the last 7 days' incidents, and every runbook is on the "
        "server, ready, with no unrecorded failed run. The pre-shift-check table artifact "
        "and the operation log; the run fails naming the failed checks. Changes nothing.",
        schedules=[Cron(PRESHIFT_CRON, timezone=PRESHIFT_TZ)],
        tags=["on-call", "read-only"],
        parameters={"runbooks": catalog},
    )


def _runbooks() -> list[Any]:
    return [
        stack_smoke.to_deployment(
            name="stack-smoke",
            description="Check that every service the runbooks need answers.",
            tags=["devstack", "read-only"],
        ),
        at_runbook(
            backup_database.to_deployment(
                name="backup-daily",
                description="Daily backup of the application database to S3 (02:00 UTC), with "
                "manifest and 30-day retention. Run it by hand before risky changes.",
                schedules=[Cron("0 2 * * *", timezone="UTC")],
                tags=["backup", "database"],
                concurrency_limit=1,  # a late backup waits for the running one, never overlaps
            ),
            "flows/backup.py:backup_database",
        ),
        base_backup.to_deployment(
            name="base-backup-daily",
            description="Daily physical base backup of the PostgreSQL cluster for "
            "point-in-time recovery (02:30 UTC): pg_basebackup streamed to S3, complete once "
            "its WAL is archived; retention keeps the base backups of the store's days and "
            "the WAL they need.",
            schedules=[Cron("30 2 * * *", timezone="UTC")],
            tags=["backup", "database", "pitr"],
            concurrency_limit=1,
        ),
        restore_to_time.to_deployment(
            name="restore-to-time",
            description="Restore the database as it was at any second the WAL archive covers: "
            "a scratch instance recovers from the newest base backup before it, the copy is "
            "verified; replacing the live database needs two DBAs' approval.",
            tags=["restore", "database", "pitr"],
        ),
        restore_drill.to_deployment(
            name="restore-drill-weekly",
            description="Weekly restore drill (Sunday 03:00 UTC): restore the newest backup "
            "into scratch, verify it, drop it; records RTO and RPO, notifies on failure.",
            schedules=[Cron("0 3 * * 0", timezone="UTC")],
            tags=["backup", "drill", "database"],
        ),
        restore_database.to_deployment(
            name="restore",
            description="Restore the database from a timestamp into a scratch database and "
            "verify it; replacing the live database pauses for an approval.",
            tags=["restore", "database"],
        ),
        migrate_database.to_deployment(
            name="migrate-database",
            description="Apply pending SQL migrations from a directory: squawk lint gate and lock "
            "plan (dry_run stops there), pre-migration backup, consecutive transactional files in "
            "one transaction (all or nothing) with lock/statement timeouts under the "
            "change-<environment> and change-db-<database> limits, then verify; a failure "
            "reports exactly what is applied and what is not.",
            tags=["database", "change"],
        ),
        staged_deploy.to_deployment(
            name="staged-deploy",
            description="Ship an image through staging (smoke tests), a promotion gate (auto, or "
            "a person in the UI), production and a bake period judged on health, error rate "
            "and p95 latency; rolls back automatically when any check fails.",
            tags=["deploy", "production", "change"],
            parameters={"policy": "auto"},
        ),
        hotfix.to_deployment(
            name="hotfix",
            description="Deploy a fix straight to production (no staging), with the same bake "
            "and automatic rollback as the staged deploy.",
            tags=["deploy", "production", "change"],
            parameters={"environment": "production"},
        ),
        rollback.to_deployment(
            name="rollback",
            description="Roll an environment back to the previous (or a given) revision, like "
            "`kubectl rollout undo`, and verify it serves healthily.",
            tags=["deploy", "change"],
            parameters={"environment": "production"},
        ),
        scale.to_deployment(
            name="scale",
            description="Scale an environment's Deployment (bounded by its max_replicas) and "
            "wait until every replica is available.",
            tags=["operate", "change"],
        ),
        restart.to_deployment(
            name="restart",
            description="Restart every pod of an environment's Deployment (rollout restart) "
            "and verify it is healthy.",
            tags=["operate", "change"],
        ),
        service_down.to_deployment(
            name="service-down",
            description="Triage runbook 'Service is down', started by an incident (the alert's "
            "runbook label) or by hand: checks alerts, pods, the database, crash reasons and "
            "recent deploys; rolls back a recent deploy or restarts, under the change slot; "
            "verifies health and error rate; marks the incident mitigated, or pages "
            "engineering when it is still down. The checklist is the "
            "triage-service-down-<environment> artifact.",
            tags=["triage", "incident", "change"],
        ),
        disk_full.to_deployment(
            name="disk-full",
            description="Triage runbook 'Out of disk space', started by an incident (VolumeFull, "
            "HostDiskFull) or by hand: finds which volume is full and what fills it (largest "
            "directories, PostgreSQL databases, tables, indexes and WAL, logs); clears old logs "
            "of the app volume by policy under the change slot; reports what backup retention "
            "would allow and 'increase volume' as recommendations (never deletes a backup); "
            "verifies the use back under 80%, or pages engineering. The checklist is the "
            "triage-disk-full-<environment> artifact.",
            tags=["triage", "incident", "change"],
        ),
        connection_pool_exhausted.to_deployment(
            name="connection-pool-exhausted",
            description="Triage runbook 'Database Connection Pool Exhausted' (DbPoolExhausted): "
            "records the connections by state and application (pg_stat_activity) and each "
            "pod's pool use before anything changes, restarts the web servers under the change "
            "slot, verifies health, error rate and the new pods' pools, or pages engineering. "
            "The checklist is the triage-connection-pool-exhausted-<environment> artifact.",
            tags=["triage", "incident", "change"],
        ),
        memory_leak.to_deployment(
            name="memory-leak",
            description="Triage runbook 'Memory Leak' (PodMemoryHigh, HostMemoryHigh): records "
            "the pods' memory trend over the last minutes before anything changes, restarts "
            "the service under the change slot, verifies health, error rate and the new pods' "
            "memory, or pages engineering. The checklist is the "
            "triage-memory-leak-<environment> artifact.",
            tags=["triage", "incident", "change"],
        ),
        game_day.to_deployment(
            name="game-day",
            description="Game day (weekly on staging, Wednesday 10:00 UTC, or by hand): "
            "injects faults one after another (a pod killed, a traffic spike, a full disk, an "
            "exhausted pool, a memory leak, slow queries holding locks, a crash loop), lets "
            "monitoring, the incident flow and the triage runbooks handle each, and records "
            "time to alert, page, mitigated and resolved per fault (game-day-<environment> "
            "artifact, game_day_results table). Production only with confirm=production.",
            schedules=[Cron("0 10 * * 3", timezone="UTC")],
            tags=["game-day", "incident", "drill"],
        ),
        database_slow.to_deployment(
            name="database-slow",
            description="Triage runbook 'Database is slow', started by an incident (the alert's "
            "runbook label) or by hand: checks the database host's CPU and memory, the slowest "
            "statements, long-running queries and transactions and the lock chains; terminates "
            "sessions idle in a transaction past the auto-kill policy, asks a person (typed "
            "form, timeout) before ending any other, never ends a superuser, replication or "
            "its own session, and only recommends a restart; verifies the lock chains gone and "
            "the probe query in time; marks the incident mitigated, or pages engineering. The "
            "checklist is the triage-database-slow-<environment> artifact.",
            tags=["triage", "incident", "change", "database"],
        ),
        one_pod_down.to_deployment(
            name="one-pod-down",
            description="Triage runbook 'One pod down', started by an incident (OnePodDown) or "
            "by hand (optionally naming the pod): the service still serves; records which pod "
            "is not Ready and its last termination reason; deletes it so its ReplicaSet starts "
            "a clean one, scaling out first (within max_replicas) when the Ready pods are over "
            "the CPU threshold or it keeps crashing; verifies every pod Ready, health and the "
            "pods' CPU. The checklist is the triage-one-pod-down-<environment> artifact.",
            tags=["triage", "incident", "change"],
        ),
        traffic_spike.to_deployment(
            name="traffic-spike",
            description="Triage runbook 'Traffic spike', started by an incident "
            "(RequestQueueHigh, PodCpuHigh, HostCpuHigh) or by hand: scales up within "
            "max_replicas for the measured CPU, waits until available, verifies CPU, queue and "
            "that the per-pod request rates are balanced; at max_replicas it changes nothing "
            "and escalates with a recommendation. Records the baseline replica count for the "
            "scale-back check. Its checklist: the artifact triage-traffic-spike-<environment>.",
            tags=["triage", "incident", "change"],
            parameters={"mode": "scale-up"},
        ),
        traffic_spike.to_deployment(
            name="scale-back",
            description="Scheduled check of the traffic-spike runbook (every 15 minutes, "
            "production; run it by hand for another environment): scales back to the replica "
            "count recorded before the last scale-up once no pod's CPU and no queue went over "
            "their thresholds for calm_seconds; never below that baseline.",
            schedules=[Cron("*/15 * * * *", timezone="UTC")],
            tags=["triage", "operate", "change"],
            parameters={"mode": "scale-back", "environment": "production"},
        ),
        certificate_check.to_deployment(
            name="certificate-check",
            description="Daily certificate check (05:00 UTC): connects to every endpoint of the "
            "certificate inventory, verifies the served chain against the CA bundle and the "
            "hostname, and judges the first expiry of the chain (leaf, intermediates, issuing "
            "CA) on the CertificateExpiry alert's thresholds (P3 under 30 days, P2 under 7, "
            "expired, untrusted or unreachable); the certificate-check table artifact; "
            "findings notified with the endpoint to renew. Starts renew-certificate itself for "
            "a leaf under 7 days or expired (renew=true); under 30 days is reported to plan.",
            schedules=[Cron("0 5 * * *", timezone="UTC")],
            tags=["security", "certificates"],
            # Renews what pages (under cert_page_days); a P3 is a renewal a person plans.
            parameters={"renew": True},
        ),
        renew_certificate.to_deployment(
            name="renew-certificate",
            description="Renew an endpoint's certificate (quarterly, when the certificate "
            "check warns, or started by a CertificateExpiry incident): checks the CA, issues "
            "a new certificate from it, installs it as the endpoint's kubernetes.io/tls Secret "
            "under the change slot, restarts the Deployments mounting it and verifies over "
            "TLS that the endpoint serves it (new serial and not_after, chain verified); marks "
            "the incident mitigated. The certificate-renewal artifact shows before and after; "
            "the key never leaves the Secret.",
            tags=["security", "certificates", "change"],
        ),
        rotate_credentials.to_deployment(
            name="rotate-credentials-monthly",
            description="Monthly rotation of the application database password (1st, 04:00 UTC) "
            "through Secrets Manager's four steps, alternating users (<user>/<user>_clone, the "
            "clone created on the first run) so the credential in use keeps logging in; switches "
            "and verifies the Kubernetes consumers before finishing. Resumable: rerun the same "
            "month to resume, a done month is a no-op.",
            schedules=[Cron("0 4 1 * *", timezone="UTC")],
            # Alternating users: the credential in use keeps logging in while the consumers
            # switch (single_user refuses new logins from set_password to finish; README).
            parameters={"strategy": "alternating_users"},
            tags=["security", "database", "change"],
            concurrency_limit=1,  # two rotations of one secret must never interleave their steps
        ),
        handoff_note.to_deployment(
            name="handoff-note",
            description="The shift handoff note at each shift change (Mondays 09:00 "
            "Europe/Berlin, policy/oncall.yaml's rotation), or started by the outgoing engineer "
            "from the UI: changes made, failed or refused runs, incidents and their state (a "
            "P1's post-mortem), open follow-ups, runs paused for a person, firing alerts and "
            "what is scheduled in the next shift, from the operation log, the incidents, the "
            "Prefect server and Prometheus. The handoff-note artifact, sent to the incoming "
            "engineer, kept in the operation log. Changes nothing.",
            schedules=[Cron(HANDOFF_CRON, timezone=HANDOFF_TZ)],
            tags=["on-call", "report", "read-only"],
        ),
        access_audit.to_deployment(
            name="access-audit-quarterly",
            description="Quarterly access audit (1 Jan/Apr/Jul/Oct, 09:00 UTC): PostgreSQL roles "
            "(attributes, memberships, grants, password age), Kubernetes RBAC, Secrets Manager "
            "rotation dates (overdue after 35 days) and credential-holding Prefect blocks, "
            "compared with policy/roles.yaml. Drift goes to the access-audit table, the op log "
            "and a P3 notification; nothing is revoked (a separate approved change).",
            schedules=[Cron("0 9 1 1,4,7,10 *", timezone="UTC")],
            tags=["security", "audit", "read-only"],
        ),
        access_log_review.to_deployment(
            name="access-log-review-monthly",
            description="Monthly access-log review (2nd, 08:00 UTC, the last 31 days): "
            "PostgreSQL logins and failed logins per role and source from the server's "
            "connection log; repeated failures, logins by roles that should not log in and "
            "logins outside the policy go to the access-log-review artifact, the op log and a "
            "P3 notification. Runs where the server logs (the served process).",
            schedules=[Cron("0 8 2 * *", timezone="UTC")],
            tags=["security", "audit", "read-only"],
        ),
        capacity_report.to_deployment(
            name="capacity-report-weekly",
            description="Weekly capacity report (Monday, 07:00 UTC): CPU, memory, disk, "
            "database connections, request rate, database size (Prometheus, 30 days) and the "
            "backup store (S3 listing): current use, capacity, utilization, Theil-Sen trends "
            "over 7 and 30 days, days to the scaling threshold and the runbook's scaling plan "
            "as advice. The capacity-report table links each query's Prometheus graph; a PNG "
            "chart per resource in the backup bucket (reports/capacity/) and in the run.",
            schedules=[Cron("0 7 * * 1", timezone="UTC")],
            tags=["capacity", "report", "read-only"],
        ),
    ]
