"""Paging latency: seconds from an Alertmanager notification of a P1 group to the on-call's
page arriving at the notification sink.

uv run python -m bench.bench_incident [--requests N]

Against the test stack, as ``make up`` runs it: blocks saved (``opsflows bootstrap``), the
runbooks served by ``python -m deployments.serve`` and the receiver by ``opsflows webhook
serve`` (both restarted from this checkout). Each request is a P1 firing group POSTed to
``/alertmanager`` as Alertmanager sends it (version 4, bearer token); the latency is the
sink's receive time of the page that names the group minus the moment the request was sent.
Each incident is then resolved (its run completes) before the next request. The last stdout
line is ``{"bench": "incident", "page_s": <median>, ...}``; target: page_s <= 5 s (the runbook
pages P1 "immediately"; its goal is to detect and respond within 5 minutes).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from datetime import datetime
from pathlib import Path

from bench.common import emit, log, stack_info
from devstack import procs
from devstack import stack as devstack

INFO = stack_info()
devstack.export_env(INFO)  # before Prefect is imported: it reads PREFECT_API_URL then

from tests.alertmanager_support import alert, notification, resolved  # noqa: E402
from tests.incident_support import post_alerts, sink_messages, wait_for  # noqa: E402

TARGET_S = 5.0


def page_latency(marker: str, sent: float) -> float:
    """Seconds from ``sent`` to the page naming ``marker`` at the sink."""
    pages = wait_for(lambda: sink_messages(INFO, "page", marker), 120, f"no page for {marker}")
    received = datetime.fromisoformat(str(pages[0]["received_at"])).timestamp()
    return received - sent


def wait_final(run_id: str, timeout: float = 120.0) -> str:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(uuid.UUID(run_id)).state
            if state is not None and state.is_final():
                return state.type.value
            time.sleep(0.5)
    return "TIMEOUT"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5)
    args = parser.parse_args(argv)
    from devstack.bootstrap import bootstrap

    state = Path(INFO.state_dir)
    bootstrap(INFO, devstack.stack_secrets(state))
    for name in ("runbooks", "webhook"):
        procs.stop(state, name, timeout=30)
    devstack.serve_runbooks(INFO)
    devstack.serve_webhook(INFO)
    latencies: list[float] = []
    unfinished: list[str] = []
    try:
        time.sleep(2)  # the runner's first poll cycle
        for i in range(args.requests):
            marker = f"bench-{uuid.uuid4().hex[:10]}"
            payload = notification([alert("ServiceDown", "P1", summary=marker)])
            sent = time.time()
            answer = post_alerts(INFO, payload)
            if answer.status_code != 202:
                raise SystemExit(f"receiver answered {answer.status_code}: {answer.text}")
            latency = page_latency(marker, sent)
            latencies.append(latency)
            run_id = answer.json()["flow_run_id"]
            post_alerts(INFO, resolved(payload))
            final = wait_final(run_id)
            if final != "COMPLETED":
                unfinished.append(f"{run_id}: {final}")
            log(f"request {i + 1}/{args.requests}: paged after {latency:.2f}s; run {final}")
    finally:
        for name in ("runbooks", "webhook"):
            procs.stop(state, name, timeout=30)
    emit(
        {
            "bench": "incident",
            "page_s": round(statistics.median(latencies), 3),
            "page_max_s": round(max(latencies), 3),
            "page_min_s": round(min(latencies), 3),
            "requests": len(latencies),
            "unfinished": len(unfinished),
            "target_page_s": TARGET_S,
        }
    )
    if unfinished:
        log("incident runs that did not complete: " + "; ".join(unfinished))
    return 0 if not unfinished else 1


if __name__ == "__main__":
    raise SystemExit(main())
