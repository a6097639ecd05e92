"""The pre-shift check (RUNBOOK.md "Before Your On-Call Shift"), judged from what was read.

Five checks, each OK, FAILED or SKIPPED with one detail line: monitoring answers, the test
page reached the incoming engineer (they said so in the form), a rollback target exists in
each environment, the recent incidents (informational), and every runbook of the catalog is
on the server, ready to run, with no failed last run that nobody recorded. Pure: the flow
(``flows/pre_shift_check.py``) reads, these functions judge and write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from decisions.incidents import Incident
from decisions.oncall import Schedule, on_call_at, shift_at
from decisions.releases import Release, RevisionRecord
from decisions.watchdogs import WATCHED_RUNBOOKS
from opsflows.oplog import REJECTED

MONITORING = "Monitoring reachable"
TEST_PAGE = "Test page acknowledged"
ROLLBACK = "Rollback reachable (dry run)"
INCIDENTS = "Recent incidents"
RUNBOOKS = "Runbooks current"
CHECKS = (MONITORING, TEST_PAGE, ROLLBACK, INCIDENTS, RUNBOOKS)
OK, FAILED, SKIPPED = "OK", "FAILED", "SKIPPED"
#: Started this long after a shift change, the check is for the shift that just began.
JUST_STARTED_S = 3600
#: A watched run that failed this recently may still be getting its incident (the watchdog
#: trigger starts the incident flow): not yet a finding.
WATCHDOG_GRACE_S = 300
#: Prefect run states that end a run badly.
BAD_ENDS = ("FAILED", "CRASHED")
RECENT_DAYS = 7


@dataclass(frozen=True)
class Finding:
    """One line of a check: what was found and whether it is fine."""

    ok: bool
    text: str


@dataclass(frozen=True)
class CheckResult:
    """One check of the list; informational checks never fail."""

    name: str
    findings: tuple[Finding, ...] = ()
    skipped: bool = False
    informational: bool = False

    @property
    def ok(self) -> bool:
        return self.skipped or self.informational or all(f.ok for f in self.findings)

    @property
    def result(self) -> str:
        return SKIPPED if self.skipped else OK if self.ok else FAILED

    @property
    def detail(self) -> str:
        return "; ".join(f.text for f in self.findings) or "-"


# -- 1. monitoring -----------------------------------------------------------------------


def readiness(service: str, url: str, status: int | None, error: str | None, block: str) -> Finding:
    """``service`` at ``url`` answered ``status`` to ``/-/ready`` (None: ``error``)."""
    if status == 200:
        return Finding(True, f"{service} {url} is ready")
    seen = f"answered {status}" if status is not None else f"cannot be reached ({error})"
    field = "prometheus_url" if service == "Prometheus" else "alertmanager_url"
    return Finding(
        False,
        f"{service} {url} {seen}: start it (locally `opsflows devstack up`) or fix {field} "
        f"of the KubeEnvironment block {block}",
    )


# -- 2. the test page --------------------------------------------------------------------


@dataclass(frozen=True)
class PageRoute:
    """Who the test page is for and where it goes."""

    person: str
    refs: tuple[str, ...]
    why: str


def incoming_engineer(schedule: Schedule, now: datetime) -> tuple[str, datetime]:
    """The primary of the shift about to start (or that started less than an hour ago), and
    that shift's start. Overrides at the start count."""
    current = shift_at(schedule, now)
    if (now - current.start).total_seconds() < JUST_STARTED_S:
        start = current.start
    else:
        start = current.end
    return on_call_at(schedule, start).primary, start


def page_route(schedule: Schedule | None, person: str, routed: Sequence[str]) -> PageRoute:
    """The person's channels in the schedule, else ``routed`` (the routing's page route)."""
    refs = schedule.channel_of(person) if schedule is not None else ()
    if refs:
        return PageRoute(person, tuple(refs), f"{person}'s channels in the on-call schedule")
    return PageRoute(person, tuple(routed), f"{person} has no channel: the routing's page route")


@dataclass(frozen=True)
class Ack:
    """What the form said: the page arrived (or not), and who says so."""

    received: bool
    engineer: str


def ack_finding(route: PageRoute, delivered: int, ack: Ack | None, timeout_s: int) -> Finding:
    """The test page's line: delivered, and confirmed by the paged engineer in time."""
    channels = ", ".join(route.refs) or "no channel"
    to = f"the test page to {route.person} ({channels})"
    again = "then run pre-shift-check again"
    if delivered == 0:
        return Finding(
            False,
            f"{to} could not be sent (no channel accepted it): check the notification blocks "
            f"and the on-call schedule's channels, {again}",
        )
    if ack is None:
        return Finding(
            False,
            f"{to} was not acknowledged within {timeout_s} s: check the PagerDuty app's "
            f"notification settings on your phone, {again}",
        )
    who = ack.engineer.strip()
    if who.lower() != route.person.strip().lower():
        return Finding(
            False,
            f"{to} was acknowledged by {who}, not by {route.person}: the paged engineer must "
            f"confirm it reached their phone, {again}",
        )
    if not ack.received:
        return Finding(
            False,
            f"{who} says {to} did not arrive: check the PagerDuty app's notification settings "
            f"on your phone, {again}",
        )
    return Finding(True, f"{who} confirmed {to} arrived")


def ack_description(route: PageRoute, timeout_s: int) -> str:
    """The markdown shown above the acknowledgement form."""
    channels = ", ".join(route.refs) or "no channel"
    return (
        f"**Pre-shift check: did the test page reach you?**\n\n"
        f"A test page was sent to **{route.person}** through {channels}. Tick *received* "
        f"when it arrived on your phone and give your name. Without an answer in "
        f"{timeout_s} s the check fails.\n"
    )


# -- 3. rollback -------------------------------------------------------------------------


def rollback_finding(
    environment: str,
    current: Release | None,
    target: RevisionRecord | None,
    error: str | None = None,
) -> Finding:
    """Whether ``environment`` could be rolled back now, and to what (nothing changed)."""
    if error is not None or current is None:
        return Finding(
            False,
            f"{environment}: the Kubernetes API could not be read ({error or 'no deployment'}): "
            f"check api_url and token of the KubeEnvironment block {environment}",
        )
    if target is None:  # reachable; a fresh environment has nothing to go back to yet
        return Finding(
            True,
            f"{environment}: revision {current.revision} ({current.image}) is reachable, with "
            f"no previous release to roll back to (no earlier revision runs another good "
            f"image): a bad deploy now would need a hotfix",
        )
    return Finding(
        True,
        f"{environment}: revision {current.revision} ({current.image}) would roll back to "
        f"revision {target.revision} ({target.image})",
    )


# -- 4. recent incidents -----------------------------------------------------------------


def recent_incidents(
    incidents: Iterable[Incident], now: datetime, days: int = RECENT_DAYS
) -> tuple[Incident, ...]:
    """The incidents triggered in the last ``days`` days, and any still open; newest first."""
    since = now - timedelta(days=days)
    found = {i.id: i for i in incidents if i.triggered_at >= since or i.is_open}
    return tuple(sorted(found.values(), key=lambda i: i.triggered_at, reverse=True))


def incident_line(incident: Incident) -> str:
    parts = [f"{incident.severity} #{incident.id} {incident.title} ({incident.status}"]
    if incident.runbook:
        parts.append(f", runbook {incident.runbook}")
    if incident.resolved_by:
        parts.append(f", resolved by {incident.resolved_by}")
    elif incident.mitigated_by:
        parts.append(f", mitigated by {incident.mitigated_by}")
    return "".join(parts) + ")"


def incidents_check(incidents: Sequence[Incident] | None, days: int = RECENT_DAYS) -> CheckResult:
    """The recent incidents, one line each (None: they could not be read); never fails."""
    if incidents is None:
        unknown = Finding(True, "incidents unknown: the ops-db could not be read")
        return CheckResult(INCIDENTS, (unknown,), informational=True)
    if not incidents:
        none = Finding(True, f"no incident in {days} days")
        return CheckResult(INCIDENTS, (none,), informational=True)
    head = Finding(True, f"{len(incidents)} incident(s) in {days} days")
    lines = tuple(Finding(True, incident_line(i)) for i in incidents)
    return CheckResult(INCIDENTS, (head, *lines), informational=True)


# -- 5. runbooks current -----------------------------------------------------------------


@dataclass(frozen=True)
class ServerDeployment:
    """A deployment as the Prefect server has it."""

    name: str  # flow/deployment
    status: str | None  # READY / NOT_READY
    work_pool: str | None = None
    pool_ready: bool | None = None  # its pool has a live worker


@dataclass(frozen=True)
class LastRun:
    """A deployment's most recent finished run."""

    deployment: str
    run_id: str
    run_name: str
    state: str  # COMPLETED, FAILED, CRASHED, CANCELLED
    ended_at: datetime | None
    oplog_status: str | None = None


def records_run(incident: Incident, run_id: str) -> bool:
    """The incident was opened for (or started, or responds with) the run ``run_id``."""
    if incident.flow_run_id == run_id:
        return True
    if any(str(a.get("fingerprint")) == run_id for a in incident.alerts):
        return True
    return any(str(r.get("flow_run_id")) == run_id for r in incident.runbook_runs)


def runbooks_check(
    expected: Sequence[str],
    deployments: Mapping[str, ServerDeployment],
    last_runs: Mapping[str, LastRun],
    incidents: Sequence[Incident] | None,
    now: datetime,
    watched: Iterable[str] = WATCHED_RUNBOOKS,
) -> CheckResult:
    """Every catalog deployment is on the server and ready; a watched runbook whose last run
    failed or crashed has its incident (the watchdog opened it, or an incident ran it).
    ``incidents`` None: they could not be read, and such a run is a finding that says so."""
    watched = set(watched)
    known = list(incidents or ())
    bad: list[Finding] = []
    notes: list[Finding] = []
    for name in expected:
        found = deployments.get(name)
        if found is None:
            bad.append(
                Finding(
                    False,
                    f"{name} is not on the Prefect server: serve the catalog (`make up`) or "
                    f"`prefect deploy --all` from prefect.yaml",
                )
            )
            continue
        if not _ready(found):
            where = (
                f"work pool {found.work_pool} has no live worker"
                if found.work_pool
                else ("no process serves it")
            )
            bad.append(
                Finding(
                    False,
                    f"{name} is not ready to run ({found.status or 'no status'}; {where}): "
                    + ("start a worker: `prefect worker start --pool " + found.work_pool + "`"
                       if found.work_pool else "start the runbooks: `make up`"),
                )
            )  # fmt: skip
        run = last_runs.get(name)
        if run is None or run.state not in BAD_ENDS:
            continue
        what = f"{name}: last run {run.run_name} {run.state.lower()}"
        if run.oplog_status == REJECTED:
            notes.append(Finding(True, f"{what} (refused by a gate or a person)"))
            continue
        if any(records_run(i, run.run_id) for i in known):
            notes.append(Finding(True, f"{what} (its incident records it)"))
            continue
        if name.split("/")[0] not in watched:
            notes.append(Finding(True, f"{what} (not watched: no incident is opened for it)"))
            continue
        if run.ended_at is not None and (now - run.ended_at).total_seconds() < WATCHDOG_GRACE_S:
            notes.append(Finding(True, f"{what} (just now: its incident may still be opening)"))
            continue
        why = "the incidents could not be read" if incidents is None else "no incident records it"
        bad.append(
            Finding(
                False,
                f"{what} and {why}: look at the run, fix the cause or open an incident, and "
                f"check the incident flow's watchdog trigger",
            )
        )
    ready = len(expected) - len([f for f in bad if "not on the Prefect server" in f.text])
    head = Finding(not bad, f"{ready}/{len(expected)} catalog deployments on the server")
    return CheckResult(RUNBOOKS, (head, *bad, *notes))


def _ready(d: ServerDeployment) -> bool:
    if d.status == "READY":
        return True
    return bool(d.work_pool) and bool(d.pool_ready)


# -- the verdict -------------------------------------------------------------------------


def failed_checks(results: Sequence[CheckResult]) -> list[str]:
    return [r.name for r in results if not r.ok]


def verdict_message(results: Sequence[CheckResult]) -> str | None:
    """The run's failure message naming the failed checks and why, or None when all passed."""
    failed = [r for r in results if not r.ok]
    if not failed:
        return None
    return "pre-shift check failed: " + "; ".join(
        f"{r.name}: " + "; ".join(f.text for f in r.findings if not f.ok) for r in failed
    )


def table_rows(results: Sequence[CheckResult]) -> list[dict[str, Any]]:
    return [{"Check": r.name, "Result": r.result, "Detail": r.detail} for r in results]


def summary_markdown(
    results: Sequence[CheckResult], engineer: str | None, open_incidents: Sequence[Incident]
) -> str:
    """The short summary: the verdict, each check's result, what is still open."""
    failed = failed_checks(results)
    who = f" for {engineer}" if engineer else ""
    title = f"# Pre-shift check{who}: " + ("all checks passed" if not failed else "FAILED")
    lines = [title, ""]
    for r in results:
        lines.append(f"- **{r.name}**: {r.result}")
        for f in r.findings:
            if not f.ok:
                lines.append(f"  - {f.text}")
    if open_incidents:
        lines += ["", "Still open:"]
        lines += [f"- {incident_line(i)}" for i in open_incidents]
    if failed:
        lines += ["", f"Fix what the failed checks say ({', '.join(failed)}), then run "
                  "`pre-shift-check` again."]  # fmt: skip
    return "\n".join(lines) + "\n"
