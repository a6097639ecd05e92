"""Paging and mitigation latency from a real fault: seconds from an app going down to the
on-call's P1 page, and to the service-down runbook's verified mitigation.

uv run python -m bench.bench_incident [--runs N] [--env production]

Against the test stack (``make test-stack``), as ``make up`` runs it: blocks saved (``opsflows
bootstrap``), the runbooks served by ``python -m deployments.serve`` and the Alertmanager
receiver by ``opsflows webhook serve`` (both restarted from this checkout). Each run:

1. injects a fault into the ``--env`` app (``POST <app>/_sim/faults {"fault": "down"}``: its
   ``/health`` answers 503) and notes the wall-clock time;
2. the real pipeline carries it: the blackbox probe of ``/health`` fails, Prometheus' rule
   ``ServiceDown`` goes pending, then firing after its ``for:``; Alertmanager waits
   ``group_wait`` and posts the group to the receiver's ``/alertmanager``, which opens the
   incident (its ``triggered_at`` row time) and starts the served ``incident`` run, which
   pages the on-call (P1: at once) through the notification sink, and starts the
   ``service-down`` runbook the alert names;
3. the fault stays on: the runbook diagnoses, restarts (or rolls back a recent deploy) under
   the environment's change slot, verifies health and error rate under probe traffic and
   marks the incident mitigated (its ``mitigated_at``);
4. clears whatever is left of the fault, waits until Alertmanager's resolution closes the
   incident and its runs complete, and starts the next run.

Figures, each the p50 over the runs (clocks: one machine)::

    page_s     fault injected -> the sink received the P1 page       (target <= 60 s)
    detect_s   fault -> ServiceDown active in Prometheus (its activeAt: a failed probe
               scraped, then a rule evaluation)
    for_s      activeAt -> the first ``ALERTS{alertstate="firing"}`` sample (the ``for:``)
    notify_s   firing -> the receiver recorded the incident (Prometheus -> Alertmanager,
               ``group_wait``, the webhook POST)
    runbook_s  incident recorded -> page delivered (the served runner picks the run up and
               the flow pages: the receiver -> page figure this benchmark used to time alone)
    pipeline_s fault -> incident recorded (detect + for + notify), the alert pipeline's part;
               pipeline_share is pipeline_s / page_s (p50 of each run's ratio)
    mitigated_s fault -> the incident marked mitigated by service-down after its restart or
               rollback verified (target <= 180 s); triage_s is its part after the page
               (start, diagnosis, the change, the rollout, verify_seconds of probe traffic)

The settings the figures depend on are read from the running services, not assumed, and
printed with them: the blackbox job's scrape interval and the rule evaluation interval
(Prometheus' ``/api/v1/status/config``), ``ServiceDown``'s ``for:`` as ``/api/v1/rules``
reports it, and Alertmanager's ``group_wait``/``group_interval`` (``/api/v2/status``).
``pipeline_bound_s`` is the worst case they allow: a probe that just passed (one scrape
interval), the next rule evaluation, ``for:`` rounded up to an evaluation, then
``group_wait`` (probe, POST and database times come on top, and are small).

Documented settings. The test stack (the Makefile's ``TEST_ENV``) shortens the alert path:
``OPSFLOWS_ALERT_FOR_S=5`` caps every service rule's ``for:`` (committed: ``1m`` for
``ServiceDown``), ``OPSFLOWS_ALERT_GROUP_WAIT_S=1`` (default 10 s) and
``OPSFLOWS_ALERT_GROUP_INTERVAL_S=5`` (default 60 s); the devstack's Prometheus scrapes the
blackbox probes every 5 s and evaluates every 1 s, and ``deployments.serve`` polls for runs
every second. page_s <= 60 holds only with these: with the committed ``for: 1m`` and
``group_wait: 10s`` the pipeline alone takes 70 s or more (still inside the runbook's goal of
detecting and responding within 5 minutes). A fault that recurs while Alertmanager still
holds the group of the previous one (it keeps a resolved group briefly, and Prometheus
re-sends resolved alerts every minute for 15 minutes) is sent at the group's next
``group_interval`` tick instead of after ``group_wait``: notify_s shows it. The served runs
get the shrunk escalation delays of the served test tier (``INCIDENT_DELAYS``: a run stops
watching after 4 minutes); they do not change when a P1 pages.

The last stdout line is ``{"bench": "incident", "page_s": <p50>, ...}`` (bench.common.emit).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.alert_pipeline import (
    RULE,
    active_alert,
    alert_samples,
    epoch,
    read_settings,
)
from bench.common import emit, log, stack_info
from devstack import procs
from devstack import stack as devstack

INFO = stack_info()
devstack.export_env(INFO)  # before Prefect is imported: it reads PREFECT_API_URL then

from decisions.incidents import Incident  # noqa: E402
from tests.incident_support import (  # noqa: E402
    INCIDENT_DELAYS,
    close_leftovers,
    group_key,
    incident,
    incidents_of,
    sink_messages,
    wait_for,
)

TARGET_PAGE_S = 60.0
TARGET_MITIGATED_S = 180.0
RUNBOOK = "service-down"


@dataclass(frozen=True)
class Run:
    """One fault's timeline (epoch seconds) and its incident."""

    injected: float
    active: float  # Prometheus' activeAt: the alert went pending
    firing: float  # the first evaluation that found it firing
    recorded: float  # the receiver's incident row (triggered_at)
    paged: float  # the sink received the P1 page
    mitigated: float  # the runbook marked the incident mitigated (verified)
    action: str  # what the runbook did (restart, rollback)
    incident_id: int

    def figures(self) -> dict[str, float]:
        return {
            "page_s": self.paged - self.injected,
            "detect_s": self.active - self.injected,
            "for_s": self.firing - self.active,
            "notify_s": self.recorded - self.firing,
            "runbook_s": self.paged - self.recorded,
            "pipeline_s": self.recorded - self.injected,
            "pipeline_share": (self.recorded - self.injected) / (self.paged - self.injected),
            "mitigated_s": self.mitigated - self.injected,
            "triage_s": self.mitigated - self.paged,
        }


def _opened_since(env: str, known: set[int]) -> Callable[[], list[Incident]]:
    return lambda: [i for i in incidents_of(INFO, group_key(RULE, env)) if i.id not in known]


def one_run(env: str, app: str, timeout: float) -> Run:
    """Inject the fault, follow it to the page; the fault is cleared on the way out."""
    known = {i.id for i in incidents_of(INFO, group_key(RULE, env))}
    injected = time.time()
    httpx.post(app + "/_sim/faults", json={"fault": "down"}, timeout=10).raise_for_status()
    try:
        opened = wait_for(_opened_since(env, known), timeout, f"no {RULE} incident for {env}")[0]
        if opened.severity != "P1":
            raise SystemExit(f"incident {opened.id} is {opened.severity}, not P1")
        marker = f"incident {opened.id}: "
        pages = wait_for(lambda: sink_messages(INFO, "page", marker), 120, f"no page: {marker}")
        paged = min(datetime.fromisoformat(str(p["received_at"])).timestamp() for p in pages)
        alert = active_alert(env)  # still firing: the fault is on
        pending = alert_samples(env, "pending", injected)
        if alert is not None and epoch(str(alert["activeAt"])) >= injected:
            active = epoch(str(alert["activeAt"]))
        elif pending:
            active = pending[0]
        else:
            raise SystemExit(f"Prometheus shows no {RULE} for {env} since the fault")
        firing = wait_for(
            lambda: alert_samples(env, "firing", active), 30, f"no firing {RULE} sample"
        )[0]
        mitigated, action = wait_for(
            lambda: runbook_mitigation(opened.id),
            timeout,
            f"the service-down run of incident {opened.id} did not verify a mitigation",
        )
    finally:
        httpx.delete(app + "/_sim/faults", timeout=10).raise_for_status()
    return Run(
        injected=injected,
        active=active,
        firing=firing,
        recorded=opened.triggered_at.timestamp(),
        paged=paged,
        mitigated=mitigated,
        action=action,
        incident_id=opened.id,
    )


def runbook_mitigation(incident_id: int) -> tuple[float, str] | None:
    """When the incident's service-down run verified its restart or rollback (its op-log row
    ends then) and what it did; None until that run succeeded with a change.

    The row, not the incident's ``mitigated_at``: on the test stack Alertmanager may see the
    service back and resolve the incident while the runbook still watches its probe traffic,
    and a resolved incident is never marked mitigated afterwards.
    """
    import psycopg

    from tests.incident_support import ops_target

    runs = [r for r in incident(INFO, incident_id).runbook_runs if r.get("runbook") == RUNBOOK]
    if not runs:
        return None
    with psycopg.connect(ops_target(INFO).conninfo()) as conn:
        row = conn.execute(
            "SELECT finished_at, status, details->'decision'->>'action' FROM ops_log"
            " WHERE flow_run_id = %s",
            (str(runs[-1]["flow_run_id"]),),
        ).fetchone()
    if row is None:
        return None
    finished, status, action = row
    if status != "succeeded" or action not in ("restart", "rollback"):
        raise SystemExit(f"incident {incident_id}: service-down {status}, decided {action}")
    return finished.timestamp(), str(action)


def wait_final(run_id: str, timeout: float = 120.0) -> str:
    """The final state type of a flow run, or ``TIMEOUT``."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(uuid.UUID(run_id)).state
            if state is not None and state.is_final():
                return state.type.value
            time.sleep(0.5)
    return "TIMEOUT"


def settle(env: str, incident_id: int, timeout: float) -> str:
    """Wait for Alertmanager's resolution to close the incident and for its run to end;
    "" when both happened as they should, else what went wrong."""

    def closed() -> Incident | None:
        now = incident(INFO, incident_id)
        return None if now.is_open else now

    try:
        done = wait_for(closed, timeout, f"incident {incident_id} was not resolved")
    except AssertionError as exc:
        return str(exc)
    if done.resolved_by != "alertmanager":
        return f"incident {incident_id} resolved by {done.resolved_by}, not alertmanager"
    final = wait_final(done.flow_run_id) if done.flow_run_id else "NO RUN"
    if final != "COMPLETED":
        return f"incident {incident_id}: run {done.flow_run_id} {final}"
    wait_for(lambda: active_alert(env) is None, 60, f"{RULE} of {env} still active")
    return ""


def p50(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_incident", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="faults injected, one at a time (3)")
    parser.add_argument("--env", default="production", help="the app environment to fault")
    parser.add_argument("--timeout", type=float, default=180.0, help="per step (180 s)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    from devstack.bootstrap import bootstrap

    state = Path(INFO.state_dir)
    os.environ.update(INCIDENT_DELAYS)  # the served runbooks inherit them
    # Each run is its own outage: the receiver it starts opens a new incident instead of
    # reopening the last one as a flap (they are seconds apart, well inside the window).
    os.environ["OPSFLOWS_INCIDENT_REOPEN_WINDOW_S"] = "0"
    bootstrap(INFO, devstack.stack_secrets(state))
    settings = read_settings()
    log(
        f"settings: blackbox scrape {settings.scrape_interval_s:g} s, evaluation "
        f"{settings.evaluation_interval_s:g} s, {RULE} for {settings.rule_for_s:g} s, "
        f"group_wait {settings.group_wait_s:g} s (group_interval {settings.group_interval_s:g}"
        f" s); pipeline bound {settings.bound_s:g} s"
    )
    app = INFO.app_url(args.env)
    httpx.delete(app + "/_sim/faults", timeout=10).raise_for_status()
    wait_for(lambda: active_alert(args.env) is None, 120, f"{RULE} of {args.env} still active")
    if closed := close_leftovers(INFO, group_key(RULE, args.env)):
        log(f"closed {closed} incident(s) an earlier session left open")
    for name in ("runbooks", "webhook"):
        procs.stop(state, name, timeout=30)
    devstack.serve_runbooks(INFO)
    devstack.serve_webhook(INFO)
    runs: list[dict[str, float]] = []
    unfinished: list[str] = []
    try:
        time.sleep(2)  # the runner's first poll cycle
        for i in range(args.runs):
            run = one_run(args.env, app, args.timeout)
            figures = run.figures()
            runs.append(figures)
            problem = settle(args.env, run.incident_id, args.timeout)
            if problem:
                unfinished.append(problem)
            ended = problem or "resolved by alertmanager, run completed"
            log(
                f"run {i + 1}/{args.runs}: incident {run.incident_id} paged "
                f"{figures['page_s']:.2f} s after the fault = detect {figures['detect_s']:.2f}"
                f" + for {figures['for_s']:.2f} + notify {figures['notify_s']:.2f} + runbook "
                f"{figures['runbook_s']:.2f}; mitigated ({run.action}) "
                f"{figures['mitigated_s']:.2f} s after the fault; {ended}"
            )
    finally:
        for name in ("runbooks", "webhook"):
            procs.stop(state, name, timeout=30)
    pages = [r["page_s"] for r in runs]
    result: dict[str, Any] = {
        "bench": "incident",
        "page_s": p50(pages),
        "page_max_s": round(max(pages), 3),
        "page_min_s": round(min(pages), 3),
        "pipeline_s": p50([r["pipeline_s"] for r in runs]),
        "pipeline_share": p50([r["pipeline_share"] for r in runs]),
        "detect_s": p50([r["detect_s"] for r in runs]),
        "for_s": p50([r["for_s"] for r in runs]),
        "notify_s": p50([r["notify_s"] for r in runs]),
        "runbook_s": p50([r["runbook_s"] for r in runs]),
        "mitigated_s": p50([r["mitigated_s"] for r in runs]),
        "mitigated_max_s": round(max(r["mitigated_s"] for r in runs), 3),
        "triage_s": p50([r["triage_s"] for r in runs]),
        "runs": len(runs),
        "unfinished": len(unfinished),
        "target_page_s": TARGET_PAGE_S,
        "target_mitigated_s": TARGET_MITIGATED_S,
        "env": args.env,
        **settings.figures(),
    }
    result["ok"] = (
        result["page_s"] <= TARGET_PAGE_S
        and result["mitigated_s"] <= TARGET_MITIGATED_S
        and not unfinished
    )
    log(
        f"page_s p50 {result['page_s']} s (max {result['page_max_s']}), of which the alert "
        f"pipeline {result['pipeline_s']} s ({result['pipeline_share']:.0%}; bound "
        f"{settings.bound_s:g} s) and the runbook {result['runbook_s']} s; mitigated_s p50 "
        f"{result['mitigated_s']} s (max {result['mitigated_max_s']}, target "
        f"{TARGET_MITIGATED_S:g})"
    )
    if unfinished:
        log("runs that did not end as they should: " + "; ".join(unfinished))
    emit(result)
    return 0 if not unfinished else 1


if __name__ == "__main__":
    raise SystemExit(main())
