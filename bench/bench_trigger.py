"""Trigger latency: seconds from a signed webhook request to the flow run being Running,
and to a served ``stack-smoke`` run being Completed.

uv run python -m bench.bench_trigger [--requests N] [--complete-requests N]

Against the test stack's Prefect server, it starts its own two processes, as ``make up``
runs them: a runner serving a trivial flow (same poll interval as ``deployments.serve``) and
the webhook receiver (``python -m deployments.webhook_cli serve``) with a private routing
table and secret block. Each request is signed and sent one at a time; the latency is the
server's timestamp of the run's Running state minus the moment the request was sent. The last
stdout line is ``{"bench": "trigger", "p50_s": ..., "max_s": ...}``; target p50 <= 3 s.

Then, through the same receiver and the real serving path (the runbooks served by
``python -m deployments.serve`` as ``make up`` starts it, with the blocks ``opsflows bootstrap``
saves), each of ``--complete-requests`` requests starts the ``stack-smoke`` runbook: the
latency is the server's timestamp of its Completed state minus the moment the request was
sent (``complete_p50_s``), and ``incomplete`` counts the runs that ended in any other state
or did not end in time (must be 0).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import REPO, log, stack_info
from decisions.webhook import sign
from deployments.serve import POLL_SECONDS
from devstack import procs
from devstack import stack as devstack

INFO = stack_info()
devstack.export_env(INFO)  # before Prefect is imported: it reads PREFECT_API_URL then

from prefect import flow  # noqa: E402

DEPLOYMENT = "trigger-probe/bench-trigger"
#: A real runbook, served the way ``make up`` serves it.
SMOKE = "stack-smoke/stack-smoke"
SECRET_BLOCK = "opsflows-bench-webhook-secret"


@flow(name="trigger-probe", log_prints=False)
def trigger_probe(note: str = "") -> str:
    """Do nothing quickly: the benchmark times how fast a run starts, not what it does."""
    return note


def _serve_probe() -> None:
    from deployments.serve import serve_warm

    deployment: Any = trigger_probe.to_deployment(name=DEPLOYMENT.split("/")[1])
    serve_warm([deployment], preload=["bench.bench_trigger"])


def signed_request(secret: bytes, payload: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """Headers and body of a generic-form request, signed as CI would sign it."""
    body = json.dumps(payload).encode()
    stamp, delivery = str(int(time.time())), str(uuid.uuid4())
    return {
        "Content-Type": "application/json",
        "X-Opsflows-Event": "run-deployment",
        "X-Opsflows-Delivery": delivery,
        "X-Opsflows-Timestamp": stamp,
        "X-Opsflows-Signature": sign(secret, body, stamp, delivery),
    }, body


def state_times(run_id: str, timeout: float = 90.0) -> dict[str, float]:
    """Wait until the run is final; server timestamps (epoch s) of its first Pending and Running."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(uuid.UUID(run_id))
            if run.state is not None and run.state.is_final():
                times: dict[str, float] = {}
                for state in client.read_flow_run_states(uuid.UUID(run_id)):
                    times.setdefault(state.type.value, state.timestamp.timestamp())
                if "RUNNING" not in times or "PENDING" not in times:
                    raise SystemExit(f"run {run_id} never reached Running ({run.state.name})")
                return times
            time.sleep(0.2)
    raise SystemExit(f"run {run_id} did not finish within {timeout:.0f}s")


def final_state(run_id: str, timeout: float = 120.0) -> tuple[str, float]:
    """The run's final state type and its server timestamp (``TIMEOUT`` when it never ended)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(uuid.UUID(run_id)).state
            if state is not None and state.is_final():
                return state.type.value, state.timestamp.timestamp()
            time.sleep(0.2)
    return "TIMEOUT", time.time()


def serve_runbooks(info: Any) -> bool:
    """Blocks saved and every runbook served as ``make up`` does; True when started now."""
    from devstack.bootstrap import bootstrap

    bootstrap(info, devstack.stack_secrets(Path(info.state_dir)))
    return devstack.serve_runbooks(info)


def completed_runs(http: Any, secret: bytes, requests: int) -> tuple[list[float], list[str]]:
    """Request ``stack-smoke`` runs one at a time; seconds to Completed, and what did not."""
    latencies: list[float] = []
    incomplete: list[str] = []
    for i in range(requests):
        headers, body = signed_request(secret, {"deployment": SMOKE, "parameters": {}})
        sent = time.time()
        resp = http.post("/webhook", content=body, headers=headers)
        if resp.status_code != 202:
            raise SystemExit(f"webhook answered {resp.status_code}: {resp.text}")
        run_id = resp.json()["flow_run_id"]
        final, at = final_state(run_id)
        if final == "COMPLETED":
            latencies.append(at - sent)
        else:
            incomplete.append(f"{run_id}: {final}")
        log(f"{SMOKE} {i + 1}/{requests}: {final} {at - sent:.2f}s after the request")
    return latencies, incomplete


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--complete-requests", type=int, default=5)
    parser.add_argument("--serve-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_probe:
        _serve_probe()
        return 0
    import httpx
    from prefect.blocks.system import Secret

    info = INFO
    secret = secrets.token_urlsafe(24)
    Secret(value=secret).save(SECRET_BLOCK, overwrite=True)
    port = procs.free_port(info.host)
    env = {**os.environ, **info.client_env()}
    samples: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-trigger-") as tmp:
        routes = Path(tmp) / "routes.yaml"
        routes.write_text(
            json.dumps(
                {
                    "routes": [
                        {
                            "name": "bench",
                            "source": "opsflows",
                            "event": "run-deployment",
                            "allow": {DEPLOYMENT: ["note"], SMOKE: []},
                        }
                    ]
                }
            )
        )
        hook = [sys.executable, "-m", "deployments.webhook_cli", "serve", "--port", str(port)]
        hook += ["--routes", str(routes), "--secret-block", SECRET_BLOCK]
        hook += ["--replay-db", str(Path(tmp) / "deliveries.sqlite"), "--log-level", "warning"]
        serve = [sys.executable, "-m", "bench.bench_trigger", "--serve-probe"]
        with (
            procs.background(serve, env, Path(tmp) / "serve.log", cwd=REPO),
            procs.background(hook, env, Path(tmp) / "webhook.log", cwd=REPO) as hook_proc,
        ):
            url = f"http://{info.host}:{port}"
            deployment_url = f"{info.prefect_api_url}/deployments/name/{DEPLOYMENT}"
            for probe in (
                procs.http_ok(url + "/healthz"),
                procs.http_ok(deployment_url, below=400, headers=info.prefect_headers()),
            ):
                if not procs.wait_until(probe, 60) or hook_proc.poll() is not None:
                    raise SystemExit(f"bench processes did not start; logs in {tmp}")
            time.sleep(2)  # let the runner finish its first poll cycle before timing
            with httpx.Client(base_url=url, timeout=90) as http:
                for i in range(args.requests):
                    headers, body = signed_request(
                        secret.encode(), {"deployment": DEPLOYMENT, "parameters": {"note": str(i)}}
                    )
                    sent = time.time()
                    resp = http.post("/webhook", content=body, headers=headers)
                    answered = time.time() - sent
                    if resp.status_code != 202:
                        raise SystemExit(f"webhook answered {resp.status_code}: {resp.text}")
                    times = state_times(resp.json()["flow_run_id"])
                    sample = {
                        "answer": answered,
                        "pickup": times["PENDING"] - sent,
                        "running": times["RUNNING"] - sent,
                    }
                    log(
                        f"request {i + 1}/{args.requests}: answered {answered:.2f}s, picked up "
                        f"{sample['pickup']:.2f}s, Running {sample['running']:.2f}s"
                    )
                    samples.append(sample)
                started_runbooks = serve_runbooks(info)
                try:
                    completes, incomplete = completed_runs(
                        http, secret.encode(), args.complete_requests
                    )
                finally:
                    if started_runbooks:
                        procs.stop(Path(info.state_dir), "runbooks")
    running = [s["running"] for s in samples]

    def p50(key: str) -> float:
        return round(statistics.median(s[key] for s in samples), 3)

    print(
        json.dumps(
            {
                "bench": "trigger",
                "p50_s": p50("running"),
                "max_s": round(max(running), 3),
                "min_s": round(min(running), 3),
                "answer_p50_s": p50("answer"),
                "pickup_p50_s": p50("pickup"),
                "requests": len(samples),
                "complete_p50_s": round(statistics.median(completes), 3) if completes else None,
                "complete_max_s": round(max(completes), 3) if completes else None,
                "complete_requests": args.complete_requests,
                "incomplete": len(incomplete),
                "poll_s": POLL_SECONDS,
                "target_p50_s": 3.0,
            }
        )
    )
    if incomplete:
        log("runs that did not complete: " + "; ".join(incomplete))
    return 0 if not incomplete else 1


if __name__ == "__main__":
    raise SystemExit(main())
