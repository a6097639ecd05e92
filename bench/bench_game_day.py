"""The game day on staging, every fault, through the served deployment: how each was handled.

uv run python -m bench.bench_game_day [--faults all] [--fault-timeout 600]

Against the test stack (``make test-stack``), as ``make up`` runs it: blocks saved, the
runbooks served by ``python -m deployments.serve`` and the Alertmanager receiver by
``opsflows webhook serve`` (both restarted from this checkout). It starts
``game-day/game-day`` through the Prefect API (as a person or the weekly schedule does) and
waits for it. The game day injects each fault into staging, lets Prometheus, Alertmanager,
the incident flow and the triage runbook handle it, and measures per fault (seconds from the
injection)::

    alert_s      the alert fired (Alertmanager's startsAt)
    page_s       the incident's first page (P3 faults are e-mailed, not paged: "-")
    mitigated_s  the runbook's change verified
    resolved_s   Alertmanager resolved the incident

The test stack caps every rule's ``for:`` at ``OPSFLOWS_ALERT_FOR_S`` (5 s) and Alertmanager's
group wait at 1 s (the Makefile's ``TEST_ENV``); thresholds are the runbook's, so the
slow-queries fault takes the 5 minutes LongRunningTransaction needs. The served runs get the
served tier's shrunk escalation delays (``INCIDENT_DELAYS``).

The last stdout line is ``{"bench": "game-day", "handled": N, "faults": M, ...}`` with the
per-fault figures; exit status 1 when a fault was not handled.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import emit, log, stack_info
from devstack import procs
from devstack import stack as devstack

INFO = stack_info()
devstack.export_env(INFO)  # before Prefect is imported: it reads PREFECT_API_URL then

from tests.incident_support import INCIDENT_DELAYS  # noqa: E402

DEPLOYMENT = "game-day/game-day"
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def start_run(api: httpx.Client, parameters: dict[str, Any]) -> str:
    deployment = api.get(f"/deployments/name/{DEPLOYMENT}")
    deployment.raise_for_status()
    resp = api.post(
        f"/deployments/{deployment.json()['id']}/create_flow_run", json={"parameters": parameters}
    )
    resp.raise_for_status()
    return str(resp.json()["id"])


def wait_run(api: httpx.Client, run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/flow_runs/{run_id}").json()
        if (run.get("state") or {}).get("type") in FINAL:
            return dict(run)
        time.sleep(2)
    raise SystemExit(f"game day run {run_id} did not end within {timeout:g} s")


def wait_deployment(api: httpx.Client, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while api.get(f"/deployments/name/{DEPLOYMENT}").status_code != 200:
        if time.monotonic() > deadline:
            raise SystemExit(f"{DEPLOYMENT} was not served within {timeout:g} s")
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_game_day", description=__doc__)
    parser.add_argument("--faults", default="all", help="comma-separated faults, or all")
    parser.add_argument("--fault-timeout", type=float, default=600.0, help="per fault (600 s)")
    args = parser.parse_args(argv)
    from devstack.bootstrap import bootstrap

    state = Path(INFO.state_dir)
    os.environ.update(INCIDENT_DELAYS)  # the served runbooks inherit them
    bootstrap(INFO, devstack.stack_secrets(state))
    for name in ("runbooks", "webhook"):
        procs.stop(state, name, timeout=30)
    devstack.serve_runbooks(INFO)
    devstack.serve_webhook(INFO)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    api = httpx.Client(base_url=INFO.prefect_api_url, headers=INFO.prefect_headers(), timeout=30)
    try:
        wait_deployment(api)
        started = time.monotonic()
        run_id = start_run(
            api,
            {"environment": "staging", "faults": faults, "fault_timeout_s": args.fault_timeout},
        )
        log(f"game day {run_id} started: {', '.join(faults)}")
        run = wait_run(api, run_id, args.fault_timeout * 7 + 600)
        took = time.monotonic() - started
    finally:
        for name in ("runbooks", "webhook"):
            procs.stop(state, name, timeout=30)
        api.close()
    from tests.support import oplog_row

    row = oplog_row(INFO, run_id)
    results = list((row.get("details") or {}).get("results") or [])
    for r in results:
        log(
            f"{r['fault']}: {r['outcome']} (incident {r['incident_id']}, {r['alert']} -> "
            f"{r['runbook']}: {r['action']}; asked {r['asked']}) alert {r['alert_s']} s, page "
            f"{r['page_s']} s, mitigated {r['mitigated_s']} s, resolved {r['resolved_s']} s"
        )
    handled = sum(1 for r in results if r["outcome"] == "handled")
    log(f"game day {run['state']['type']} in {took:.0f} s: {row.get('impact')}")
    emit(
        {
            "bench": "game-day",
            "state": run["state"]["type"],
            "handled": handled,
            "faults": len(results),
            "seconds": round(took, 1),
            "per_fault": {
                r["fault"]: {
                    k: r[k]
                    for k in ("outcome", "action", "asked", "alert_s", "page_s")
                    + ("mitigated_s", "resolved_s")
                }
                for r in results
            },
            "ok": handled == len(results) and bool(results),
        }
    )
    return 0 if handled == len(results) and results else 1


if __name__ == "__main__":
    raise SystemExit(main())
