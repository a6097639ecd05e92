"""A served run whose process is killed (``kill -9``) ends Crashed, and the crash pages.

Without heartbeats nothing reports the death: the run would show Running forever. Here one
process serves a sleeping flow through ``deployments.serve.serve_warm`` (the code that serves
the runbooks); the test waits for the run's first heartbeat, SIGKILLs that whole process group,
then waits for the "crash unresponsive runs" automation to mark the run Crashed and for the
failure automation to page about it. Both automations are private to this test (own names,
own flow, a 45 s silence window) and deleted at the end; the shared served runbooks are not
touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import flow

from devstack import procs
from devstack.stack import StackInfo

REPO = Path(__file__).resolve().parents[2]
PROBE = "zombie-probe/e2e-zombie"
SILENCE_S = 45


@flow(name="zombie-probe")
def zombie_probe(report: str, seconds: float = 600) -> None:
    """Write the heartbeat interval of this run's engine to ``report``, then sleep.

    Args:
        report: File that receives the interval (seconds) the flow engine sends heartbeats at.
        seconds: How long to sleep (the test kills the run long before).
    """
    from prefect.settings import get_current_settings

    Path(report).write_text(str(get_current_settings().flows.heartbeat_frequency))
    time.sleep(seconds)


def serve_probe() -> None:
    """Entry of the serving subprocess (``python -c`` below), served like the runbooks."""
    from deployments.serve import serve_warm

    serve_warm([zombie_probe.to_deployment(name=PROBE.split("/")[1])], preload=["prefect"])


@pytest.fixture
def watched(stack: StackInfo, prefect_api: str) -> Iterator[str]:
    """Private failure + unresponsive automations for ``zombie-probe``; the page sink URL."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    from deployments.automations import (
        create_failure_automation,
        create_unresponsive_automation,
    )

    channel = f"test-zombie-{uuid.uuid4().hex[:8]}"
    CustomWebhookNotificationBlock(
        name="e2e zombie",
        url=f"{stack.kube_url}/_sink/{channel}",
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
        allow_private_urls=True,
    ).save(channel, overwrite=True)
    ids = [
        create_failure_automation(
            ["zombie-probe"], f"custom-webhook/{channel}", f"opsflows-test: page {channel}"
        ),
        create_unresponsive_automation(SILENCE_S, f"opsflows-test: crash {channel}"),
    ]
    try:
        yield f"{stack.kube_url}/_sink/{channel}"
    finally:
        with get_client(sync_client=True) as client:
            for automation_id in ids:
                client.delete_automation(automation_id)


def heartbeats(run_id: uuid.UUID) -> int:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    wanted = EventFilter(
        event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
        resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
    )
    with get_client(sync_client=True) as client:
        return len(client.read_events(filter=wanted, limit=10).events)


def wait_for(check: Any, timeout: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"{what} not seen within {timeout:.0f} s; serve log:\n" + log.read_text())


def test_a_killed_served_run_is_crashed_and_pages(
    stack: StackInfo, watched: str, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    from opsflows.settings import Settings

    log, report = tmp_path / "serve.log", tmp_path / "heartbeat.txt"
    argv = [
        sys.executable,
        "-c",
        "from tests.e2e.test_zombie_runs import serve_probe; serve_probe()",
    ]
    env = {**os.environ, **stack.client_env()}
    run_id: uuid.UUID | None = None
    with get_client(sync_client=True) as client:
        try:
            with procs.background(argv, env, log, cwd=REPO) as server:
                served = procs.http_ok(
                    f"{stack.prefect_api_url}/deployments/name/{PROBE}",
                    below=400,
                    headers=stack.prefect_headers(),
                )
                wait_for(served, 120, "the served deployment", log)
                deployment = client.read_deployment_by_name(PROBE)
                run = client.create_flow_run_from_deployment(
                    deployment.id, parameters={"report": str(report)}
                )
                run_id = run.id
                wait_for(lambda: heartbeats(run.id), 120, "a heartbeat of the run", log)
                state = client.read_flow_run(run.id).state
                assert state is not None and state.type == StateType.RUNNING
                # The runner gave the run's engine our interval, not Prefect's default (180 s).
                assert report.read_text() == str(Settings().run_heartbeat_s)
                os.killpg(server.pid, signal.SIGKILL)  # runner, forkserver and the run at once
                server.wait()

            def final() -> Any:
                state = client.read_flow_run(run.id).state
                return state if state is not None and state.is_final() else None

            state = wait_for(final, SILENCE_S + 150, "a final state after the kill", log)
            assert state.type == StateType.CRASHED, state
            assert f"No heartbeat for {SILENCE_S} s" in (state.message or "")

            def paged() -> list[Any]:
                return [m for m in httpx.get(watched, timeout=5).json() if str(run.id) in str(m)]

            pages = wait_for(paged, 60, "a page for the crashed run", log)
            assert "Crashed" in json.dumps(pages) and "No heartbeat" in json.dumps(pages)
        finally:
            if run_id is not None:
                current = client.read_flow_run(run_id).state
                if current is not None and not current.is_final():
                    with contextlib.suppress(Exception):
                        client.set_flow_run_state(run_id, Cancelled(), force=True)
