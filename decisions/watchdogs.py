"""Watchdogs: a failed or crashed run of a scheduled or changing runbook opens an incident.

Which runbooks are watched, the environment a run changed, the severity by what it left at
risk, and the incident opening (or why there is none) for the incident flow's watchdog
trigger (``deployments/catalog.py``).
"""

from __future__ import annotations

from decisions.alertmanager import FIRING
from decisions.crashed_runs import RunFacts
from decisions.incidents import WATCHDOG, Opening

#: Runbooks whose failed or crashed deployment runs open an incident: the scheduled ones and
#: every change. Flow name → the parameter naming the environment it changes (None: none).
WATCHED_RUNBOOKS: dict[str, str | None] = {
    "backup-database": None,
    "restore-drill": None,
    "rotate-credentials": None,
    "access-audit": None,
    "access-log-review": None,
    "staged-deploy": "production",
    "hotfix": "environment",
    "rollback": "environment",
    "scale": "environment",
    "restart": "environment",
    "migrate-database": "environment",
    "certificate-check": None,
    "renew-certificate": None,  # its environment is the endpoint's, in the inventory block
}
#: Severity of a failed (or crashed) run by what it left at risk.
_SCHEDULED_SEVERITY = {
    "backup-database": "P2",
    "rotate-credentials": "P2",
    "restore-drill": "P3",
    "access-audit": "P3",
    "access-log-review": "P3",
    "certificate-check": "P3",  # certificates go unwatched for a day; the alert still fires
}
#: Operation-log statuses that are outcomes, not failures: a gate or a person said no.
NOT_INCIDENTS = ("rejected",)


def run_environment(facts: RunFacts) -> str | None:
    parameter = WATCHED_RUNBOOKS.get(facts.flow_name)
    if parameter is None:
        return None
    value = facts.parameters.get(parameter)
    if value is None and facts.flow_name == "staged-deploy":
        return "production"
    return str(value) if value is not None else None


def watchdog_severity(facts: RunFacts) -> str:
    """Production changes: P2 failed, P1 crashed (it may have stopped half-way); scheduled
    runbooks by what they leave at risk; changes elsewhere: P3."""
    if facts.flow_name in _SCHEDULED_SEVERITY:
        return _SCHEDULED_SEVERITY[facts.flow_name]
    if run_environment(facts) == "production":
        return "P1" if facts.state_type == "CRASHED" else "P2"
    return "P3"


def watchdog_opening(facts: RunFacts, oplog_status: str | None) -> Opening | str:
    """The incident a failed or crashed run opens, or why it opens none."""
    if facts.flow_name not in WATCHED_RUNBOOKS:
        return f"{facts.flow_name} is not a watched runbook"
    if facts.state_type not in ("FAILED", "CRASHED"):
        return f"run {facts.name} is {facts.state_type}, not failed or crashed"
    if oplog_status in NOT_INCIDENTS:
        return f"run {facts.name} ended {oplog_status} (a gate or a person said no)"
    environment = run_environment(facts)
    deployment = f"{facts.flow_name}/{facts.deployment_name or '-'}"
    state = facts.state_type.lower()
    where = f" in {environment}" if environment else ""
    alert = {
        "fingerprint": facts.flow_run_id,
        "status": FIRING,
        "labels": {
            "alertname": f"{facts.flow_name} {state}",
            "deployment": deployment,
            "flow_run": facts.name,
            **({"environment": environment} if environment else {}),
        },
        "annotations": {"summary": facts.state_message or f"run {facts.name} {state}"},
        "startsAt": (facts.ended_at or facts.created_at).isoformat(),
        "endsAt": None,
        "generatorURL": f"/runs/flow-run/{facts.flow_run_id}",
    }
    return Opening(
        group_key=f"watchdog:{deployment}:{environment or '-'}",
        source=WATCHDOG,
        title=f"{deployment} run {facts.name} {state}{where}",
        severity=watchdog_severity(facts),
        alerts=(alert,),
        runbook=facts.flow_name,
        environment=environment,
    )
