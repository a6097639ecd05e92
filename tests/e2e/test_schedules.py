"""Serving the catalog (``python -m deployments.serve``, as ``make up`` does) registers the
scheduled runbooks with the right cron, one-at-a-time limits, and schedules that outlive the
serving process."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devstack import procs
from devstack.stack import StackInfo

REPO = Path(__file__).resolve().parents[2]
#: What the issue asks for, by flow name: (cron check, deployment concurrency limit).
DAILY_0200 = "0 2 * * *"


def catalog() -> dict[str, Any]:
    """Every catalog deployment by ``flow/deployment`` (one flow may have several, as
    traffic-spike and its scheduled scale-back check)."""
    from deployments.catalog import runner_deployments

    return {f"{d.flow_name}/{d.name}": d for d in runner_deployments()}


def read_deployments(names: list[str]) -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {name: client.read_deployment_by_name(name) for name in names}


@pytest.fixture(scope="module")
def served(
    stack: StackInfo, prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Serve the catalog once; the served deployments as the server has them; stop after."""
    from prefect.exceptions import ObjectNotFound

    wanted = list(catalog())
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    started = datetime.now(UTC)
    serve = [sys.executable, "-m", "deployments.serve"]
    env = {**os.environ, **stack.client_env()}
    with procs.background(serve, env, log, cwd=REPO, stop_timeout=30) as proc:
        deadline = time.monotonic() + 120
        fresh: dict[str, Any] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(ObjectNotFound):
                fresh = read_deployments(wanted)
                if all(d.updated and d.updated >= started for d in fresh.values()):
                    break
            time.sleep(1)
        else:
            raise AssertionError(f"catalog not served within 120 s:\n{log.read_text()[-2000:]}")
        yield {"deployments": fresh, "proc": proc}


def by_flow(served: dict[str, Any], flow_name: str) -> Any:
    matches = [d for key, d in served["deployments"].items() if key.startswith(flow_name + "/")]
    assert len(matches) == 1, f"expected one served deployment of {flow_name}"
    return matches[0]


def crons(deployment: Any) -> list[tuple[str, str | None, bool]]:
    return [(s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules]


def test_scheduled_runbooks_have_the_right_cron(served: dict[str, Any]) -> None:
    backup = by_flow(served, "backup-database")
    assert crons(backup) == [(DAILY_0200, "UTC", True)]
    drill = crons(by_flow(served, "restore-drill"))
    assert len(drill) == 1 and drill[0][1:] == ("UTC", True)
    minute, hour, dom, month, dow = drill[0][0].split()
    assert (dom, month) == ("*", "*") and dow != "*", f"drill is not weekly: {drill[0][0]}"
    rotation = crons(by_flow(served, "rotate-credentials"))
    assert len(rotation) == 1 and rotation[0][1:] == ("UTC", True)
    minute, hour, dom, month, dow = rotation[0][0].split()
    assert dom != "*" and (month, dow) == ("*", "*"), f"rotation is not monthly: {rotation[0][0]}"
    audit = crons(by_flow(served, "access-audit"))
    assert audit == [("0 9 1 1,4,7,10 *", "UTC", True)], "the access audit is quarterly"
    review = crons(by_flow(served, "access-log-review"))
    assert len(review) == 1 and review[0][1:] == ("UTC", True)
    minute, hour, dom, month, dow = review[0][0].split()
    assert dom != "*" and (month, dow) == ("*", "*"), f"log review is not monthly: {review[0][0]}"
    certificates = crons(by_flow(served, "certificate-check"))
    assert len(certificates) == 1 and certificates[0][1:] == ("UTC", True)
    minute, hour, dom, month, dow = certificates[0][0].split()
    assert (dom, month, dow) == ("*", "*", "*"), f"not daily: {certificates[0][0]}"
    # the daily run renews what is inside the page threshold (the flow's renew_within_days)
    assert by_flow(served, "certificate-check").parameters == {"renew": True}
    # Every schedule the catalog declares is on the server, as declared.
    for name, runner in catalog().items():
        declared = [(s.schedule.cron, s.schedule.timezone) for s in runner.schedules or []]
        assert [c[:2] for c in crons(served["deployments"][name])] == declared, name


def test_backup_and_rotation_cannot_overlap_themselves(served: dict[str, Any]) -> None:
    for flow_name in ("backup-database", "rotate-credentials"):
        limit = by_flow(served, flow_name).global_concurrency_limit
        assert limit is not None and limit.limit == 1, flow_name


def test_schedules_stay_active_after_the_serving_process_stops(served: dict[str, Any]) -> None:
    proc = served["proc"]
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    names = list(served["deployments"])
    for name, deployment in read_deployments(names).items():
        assert not deployment.paused, name
        assert all(s.active for s in deployment.schedules), name
