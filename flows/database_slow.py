"""Runbook "Database is slow": look, end the sessions that cause it, verify, escalate.

RUNBOOK.md's checklist, in order::

    ☐ CPU and memory of the database host          node_exporter through Prometheus
    ☐ The slowest statements                       pg_stat_statements (mean time)
    ☐ Long-running queries and transactions        pg_stat_activity (ages)
    ☐ Lock chains                                  pg_blocking_pids: who blocks whom
    ☐ Terminate what causes it                     idle in transaction past the auto-kill
                                                   policy: at once; any other culprit: only
                                                   after a person approves (typed form, timeout)
                                                   never a superuser, replication or our own
                                                   session: refused, recorded, escalated
    ☐ Restart the database                         always a person's call: recommended in the
                                                   checklist, never done by the runbook
    ☐ Verify                                       the ended sessions gone, no lock chain left,
                                                   the probe query under its limit, p95
                                                   (Prometheus) when it has data
    ☐ Check with engineering if still slow         verification failed -> page engineering

Every termination holds the environment's change slot and is decided again under it (the
session may have ended, or its pid now be another session's: a backend is identified by pid
and start time). The incident (``incident_id``) gets every step on its timeline and is marked
mitigated only after the recovery is verified; the checklist is the
``triage-database-slow-<environment>`` table artifact.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value,
# and string annotations would lose the names their parameter types need
# (tests/integration/test_served_flows.py).

import time
from dataclasses import replace
from typing import Any, NoReturn

from prefect import flow

from blocks.kube import KubeEnvironment
from blocks.postgres import PostgresTarget
from decisions.triage import Check, summary
from decisions.triage_database import (
    DatabaseDecision,
    DatabaseFacts,
    Policy,
    Target,
    decide_database_slow,
    policy,
)
from decisions.triage_database_checks import (
    database_slow_checks,
    recovered,
    recovery_checks,
    restart_recommendation,
)
from opsflows.errors import (
    ConfigurationError,
    OpsError,
    VerificationFailed,
)
from procedures.change_slot import change_slot, check_slots, require_slots
from procedures.operation import (
    APP_DB,
    APP_DB_ADMIN,
    OPS_DB,
    ROUTING,
    current_run,
    load_block,
    operation_log,
    try_load_ops_db,
    try_load_routing,
)
from procedures.terminate_approval import await_approval
from procedures.triage import TriageRun, read_run_incident, triage_run
from tasks.bake import window_for
from tasks.db_activity import (
    host_usage,
    probe_query,
    read_sessions,
    slowest_statements,
    terminate_backend,
)
from tasks.metrics import p95_latency_query, query

RUNBOOK = "database-slow"
STILL_SLOW = "database still slow"


@flow(name="database-slow")
def database_slow(
    environment: str,
    incident_id: int | None = None,
    idle_in_transaction_kill_min: float = 5.0,
    long_query_s: float = 60.0,
    probe_limit_ms: float = 500.0,
    approval_timeout_s: int = 900,
    approval_poll_s: int = 5,
    verify_seconds: float = 10.0,
    lock_timeout_s: float = 600,
    database: str = APP_DB,
    admin_database: str = APP_DB_ADMIN,
    ops_db: str = OPS_DB,
    routing: str = ROUTING,
) -> dict[str, Any]:
    """Triage a slow database: find what slows it, end it within policy, verify.

    Args:
        environment: KubeEnvironment block of the environment whose database is slow
            (its Prometheus, its change slot, its p95 threshold).
        incident_id: The incident this run works on (the incident flow gives it): its
            timeline gets every step, and it is marked mitigated once recovery is verified.
        idle_in_transaction_kill_min: Sessions idle in a transaction longer than this many
            minutes are terminated without asking (never a superuser's, a replication
            session or our own).
        long_query_s: A statement or transaction older than this many seconds counts as
            long-running; one that runs (not waits) that long is offered for termination.
        probe_limit_ms: The probe query's time that counts as the database answering normally.
        approval_timeout_s: How long a termination waits for a person's approval.
        approval_poll_s: How often the paused run checks for the approval.
        verify_seconds: How long to wait after the terminations before verifying.
        lock_timeout_s: How long to wait for another change of the environment to finish.
        database: PostgresTarget block of the application's database (the probe query runs
            as its role).
        admin_database: PostgresTarget block of a role that sees and may end every session
            of the same database (pg_monitor and pg_signal_backend, or a superuser).
        ops_db: PostgresTarget block of the operations database (op log, incidents).
        routing: NotificationRouting block the escalation pages through.
    """
    what = f"{environment} database slow" + (f" (incident {incident_id})" if incident_id else "")
    ops_target = try_load_ops_db(ops_db)
    with operation_log(RUNBOOK, what, ops_target, try_load_routing(routing)) as rec:
        rules = policy(idle_in_transaction_kill_min, long_query_s, probe_limit_ms)
        if not 0 <= verify_seconds <= 300:
            raise ConfigurationError(f"verify_seconds must be in [0, 300], got {verify_seconds}")
        if approval_timeout_s < 1 or approval_poll_s < 1:
            raise ConfigurationError(
                f"approval_timeout_s and approval_poll_s must be at least 1 s, got "
                f"{approval_timeout_s} and {approval_poll_s}"
            )
        env = load_block(KubeEnvironment, environment)
        app_db = load_block(PostgresTarget, database)
        admin = load_block(PostgresTarget, admin_database)
        same = (admin.host, admin.port, admin.database) == (
            app_db.host,
            app_db.port,
            app_db.database,
        )
        if not same:
            raise ConfigurationError(
                f"admin_database {admin_database!r} points at {admin.describe()}, database "
                f"{database!r} at {app_db.describe()}: both must name the same database",
                hint="the admin block reads and ends the sessions of the database that is slow",
            )
        incident = read_run_incident(incident_id, env.environment, ops_target)
        require_slots(env.environment)
        rec.details.update(
            environment=env.environment,
            incident_id=incident_id,
            database=app_db.database,
            policy=rules.as_dict(),
        )
        with triage_run(RUNBOOK, env.environment, incident, ops_target) as triage:
            facts = diagnose(env, app_db, admin)
            decision = decide_database_slow(facts, rules)
            triage.record(*database_slow_checks(facts, rules, decision))
            triage.note(f"checked: {summary(triage.checks)}")
            triage.note(f"decided {decision.action}: {decision.reason}")
            rec.details["decision"] = _decision_details(decision)
            refuse(triage, decision.refused)
            if decision.action == "none":
                rec.impact = f"no change: {decision.reason}"
                return {"action": "none", "reason": decision.reason}
            if decision.action == "escalate":
                rec.impact = "no change: " + decision.reason
                return escalate(triage, app_db.database, decision.reason)
            since = time.time()
            ended: list[tuple[int, str]] = []
            ask = decision.ask
            if decision.auto_kill:
                with change_slot(env.environment, lock_timeout_s):
                    again = decide_again(triage, facts, admin, rules, decision)
                    if again.action == "none":
                        return unchanged(triage, again)
                    ended += terminate(triage, admin, again.auto_kill, "the auto-kill policy")
                    ask = again.ask
            if ask:
                who = await_approval(
                    triage,
                    env.environment,
                    app_db.database,
                    ask,
                    approval_timeout_s,
                    approval_poll_s,
                )
                with change_slot(env.environment, lock_timeout_s):
                    again = decide_again(triage, facts, admin, rules, decision)
                    if again.action == "none" and not ended:
                        return unchanged(triage, again)
                    now = {t.session.key: t for t in (*again.auto_kill, *again.ask)}
                    for t in ask:
                        if t.session.key not in now:
                            triage.record(
                                Check(f"end pid {t.session.pid}", None, "ended before the approval")
                            )
                    approved = [now[t.session.key] for t in ask if t.session.key in now]
                    ended += terminate(triage, admin, approved, f"approved by {who}")
            rec.impact = (
                f"{app_db.database}: terminated {len(ended)} backend(s)"
                if ended
                else "no change: no backend was terminated"
            )
            return verify(triage, env, app_db, admin, rules, ended, since, verify_seconds)


def diagnose(env: KubeEnvironment, app_db: PostgresTarget, admin: PostgresTarget) -> DatabaseFacts:
    """Walk the checklist (read-only); what cannot be read is recorded as unknown."""
    errors: list[tuple[str, str]] = []
    cpu = memory = None
    try:
        cpu, memory = host_usage(env.prometheus_url)
    except OpsError as exc:
        errors += [("cpu", f"Prometheus: {exc.message}"), ("memory", f"Prometheus: {exc.message}")]
    else:
        no_data = "no node_exporter data in Prometheus"
        errors += [(k, no_data) for k, v in (("cpu", cpu), ("memory", memory)) if v is None]
    sessions = statements = probe = None
    try:
        sessions = read_sessions(admin)
    except OpsError as exc:
        errors.append(("sessions", exc.message))
    try:
        statements = slowest_statements(admin)
    except OpsError as exc:
        errors.append(("statements", f"pg_stat_statements: {exc.message}"))
    try:
        probe = probe_query(app_db)
    except OpsError as exc:
        errors.append(("probe", exc.message))
    return DatabaseFacts(
        environment=env.environment,
        database=app_db.database,
        sessions=sessions,
        statements=statements,
        probe_ms=probe,
        cpu=cpu,
        memory=memory,
        errors=tuple(errors),
    )


def decide_again(
    triage: TriageRun,
    facts: DatabaseFacts,
    admin: PostgresTarget,
    rules: Policy,
    before: DatabaseDecision,
) -> DatabaseDecision:
    """The sessions read again under the change slot, and the decision on them."""
    try:
        sessions = read_sessions(admin)
    except OpsError as exc:
        return escalate(
            triage, facts.database, f"the sessions could not be read again: {exc.message}"
        )
    again = decide_database_slow(replace(facts, sessions=sessions), rules)
    if again.keys != before.keys:
        triage.note(f"decided again under the change slot: {again.action}: {again.reason}")
        current_run().record.details["decided_again"] = _decision_details(again)
    return again


def unchanged(triage: TriageRun, decision: DatabaseDecision) -> dict[str, Any]:
    """Nothing left to end under the change slot (the culprits ended meanwhile): no change,
    and the incident is not marked (the runbook did not mitigate it)."""
    rec = current_run().record
    triage.record(Check("recovered before the change", True, decision.reason))
    triage.note(f"no change: {decision.reason}")
    rec.impact = f"no change: {decision.reason}"
    return {"action": "none", "reason": decision.reason}


def refuse(triage: TriageRun, refused: tuple[Target, ...]) -> None:
    """Record every culprit the runbook may not end, and the restart it may not do."""
    for t in refused:
        triage.record(Check(f"end pid {t.session.pid}", False, f"refused: {t.rule} ({t.why})"))
    if refused:
        triage.note("refused to end " + "; ".join(t.describe() for t in refused))
        rec = current_run().record
        rec.details["refused"] = [t.session.pid for t in refused]


def terminate(
    triage: TriageRun, admin: PostgresTarget, targets: tuple[Target, ...] | list[Target], rule: str
) -> list[tuple[int, str]]:
    """Terminate each target (holding the slot); the backends that were ended."""
    check_slots()  # safe point: nothing changed yet in this step
    rec = current_run().record
    ended: list[tuple[int, str]] = []
    for t in targets:
        s = t.session
        rec.changing = f"the backends of {admin.database}"
        try:
            done = terminate_backend(admin, s.pid, s.backend_start)
        except OpsError as exc:
            triage.record(Check(f"end pid {s.pid}", False, f"pg_terminate_backend: {exc.message}"))
            continue
        if done:
            ended.append(s.key)
            triage.record(Check(f"end pid {s.pid}", True, f"terminated ({rule}): {t.describe()}"))
            triage.note(f"terminated pid {s.pid} ({rule}): {s.describe()}")
        else:
            triage.record(Check(f"end pid {s.pid}", None, "gone before pg_terminate_backend"))
    rec.details.setdefault("terminated", []).extend(
        {"pid": pid, "backend_start": start} for pid, start in ended
    )
    return ended


def verify(
    triage: TriageRun,
    env: KubeEnvironment,
    app_db: PostgresTarget,
    admin: PostgresTarget,
    rules: Policy,
    ended: list[tuple[int, str]],
    since: float,
    verify_s: float,
) -> dict[str, Any]:
    """Verify the recovery, then mark the incident mitigated or escalate."""
    rec = current_run().record
    time.sleep(verify_s)
    try:
        sessions = read_sessions(admin)
    except OpsError:
        sessions = None
    try:
        probe = probe_query(app_db)
    except OpsError:
        probe = None
    window = window_for(since, time.time(), 60.0)
    try:
        p95 = query(env.prometheus_url, p95_latency_query(env.environment, window))
        why = "no traffic in Prometheus yet" if p95 is None else ""
    except OpsError as exc:
        p95, why = None, f"query failed: {exc.message}"
    limit = env.thresholds.p95_latency_s
    checks = recovery_checks(sessions, ended, probe, rules, p95, limit, why)
    triage.record(*checks)
    if not recovered(checks):
        failed = "; ".join(f"{c.item}: {c.evidence}" for c in checks if c.passed is False)
        if rec.details.get("refused"):
            triage.record(restart_recommendation(app_db.database))
        return escalate(
            triage,
            app_db.database,
            f"terminated {len(ended)} backend(s), but {app_db.database} is still slow "
            f"({failed or 'not verified'})",
        )
    moved = triage.mitigated(f"terminated {len(ended)} backend(s); lock chains gone, probe in time")
    triage.note(f"verified: {summary(checks)}")
    if triage.incident is not None and not moved:
        triage.note("the incident was already resolved or mitigated; not marked again")
    rec.details.update(mitigated=moved, verified=True)
    return {
        "action": "terminate",
        "terminated": [pid for pid, _ in ended],
        "verified": True,
        "mitigated": moved,
    }


def escalate(triage: TriageRun, database: str, why: str) -> NoReturn:
    """Page engineering and end the run failed: the database is still slow."""
    if not any(c.item.startswith("restart the database") for c in triage.checks):
        triage.record(restart_recommendation(database))
    current_run().record.follow_up.append(
        f"restart {database} only with a person's approval if ending sessions does not help"
    )
    triage.escalate(why, STILL_SLOW)
    raise VerificationFailed(
        f"{triage.environment}: {database} is still slow: {why}",
        hint="engineering was paged; look at the triage checklist artifact",
    )


def _decision_details(decision: DatabaseDecision) -> dict[str, Any]:
    """The decision for the op log (pids and verdicts, no query texts)."""
    return {
        "action": decision.action,
        "reason": decision.reason,
        "auto_kill": [t.session.pid for t in decision.auto_kill],
        "ask": [t.session.pid for t in decision.ask],
        "refused": [t.session.pid for t in decision.refused],
    }
