"""A rotation run SIGKILLed right after each step took effect is resumed by a rerun.

The flow runs in a forked process (``forkserver``); the test kills it once the step is done,
marks the run Crashed (as a worker would) and checks that a rerun completes the rotation.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

import flows.rotate_credentials as flow_module
from tests.rotation_support import World, assert_no_secrets, check_completed
from tests.support import count_fault

#: step -> the flow-module task after which the run is killed (the step has taken effect).
KILL_AFTER = {
    "create_pending": "create_pending",
    "set_password": "set_password",
    "test": "test_login",
    "switch_consumers": "restart_consumers",
    "finish": "finish",
}
#: The shortest change-slot lease Settings allow (the Prefect server's minimum).
SHORTEST_LEASE_S = 60


def _run_until_killed(params: dict[str, Any], attr: str, marker: str) -> None:
    """Child process: run the flow; after ``attr`` returns, say so and wait to be killed.

    The run takes its change slot on the shortest lease the server grants, so the rerun
    waits ~75 s (lease and repossessor) for the dead run's slot instead of ~135 s.
    """
    from opsflows.settings import get_settings

    os.environ["OPSFLOWS_CHANGE_LEASE_S"] = str(SHORTEST_LEASE_S)
    get_settings.cache_clear()
    original = getattr(flow_module, attr)

    def paused(*args: Any, **kwargs: Any) -> Any:
        from prefect.runtime import flow_run

        result = original(*args, **kwargs)
        # written aside, then renamed: the test kills this process as soon as the marker exists
        Path(marker + ".tmp").write_text(str(flow_run.id))
        os.replace(marker + ".tmp", marker)
        time.sleep(600)
        return result

    setattr(flow_module, attr, paused)
    flow_module.rotate_credentials(**params)


def _mark_crashed(flow_run_id: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(
            UUID(flow_run_id), Crashed(message="killed with SIGKILL by the test"), force=True
        )


@pytest.fixture(scope="module")
def forkserver() -> multiprocessing.context.BaseContext:
    """Children forked from a server that imported the flow once (fast, thread-free)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["flows.rotate_credentials", "tasks.consumers", "boto3"])
    return ctx


@pytest.mark.parametrize("step", list(KILL_AFTER))
def test_a_run_killed_at_any_step_is_resumed_by_a_rerun(
    world: World, forkserver: Any, tmp_path: Path, step: str
) -> None:
    before = world.value()
    marker = tmp_path / "reached"
    child = forkserver.Process(
        target=_run_until_killed, args=(world.params(), KILL_AFTER[step], str(marker))
    )
    child.start()
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert child.is_alive(), f"the run ended before reaching {step} ({child.exitcode})"
        assert time.monotonic() < deadline, f"the run never reached {step}"
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    count_fault("kill")
    child.join(10)
    assert child.exitcode == -signal.SIGKILL
    killed = marker.read_text()
    _mark_crashed(killed)  # what a worker would report for a process that vanished
    world.run_ids.append(killed)

    state = world.run()

    now = check_completed(world, state, before)
    steps = state.result()["steps"]
    resumed_at = {
        "create_pending": "set_password",
        "set_password": "test",
        "test": "test",
        "switch_consumers": "test",
        "finish": "done",
    }
    assert steps[0] == resumed_at[step], steps
    assert "create_pending" not in steps
    if step == "finish":
        assert steps == ["done", "verify"]
        assert world.stages() == {
            before["version"]: ["AWSPREVIOUS"],
            now["version"]: ["AWSCURRENT"],
        }
    assert_no_secrets(world.run_ids, world.passwords)
    deployment = world.deployment(world.envs[0])
    assert deployment["metadata"]["generation"] == 2  # restarted exactly once
    assert (
        json.dumps(deployment["spec"]["template"]["metadata"]["annotations"]).count(now["version"])
        == 1
    )
