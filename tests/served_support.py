"""What the served tier shares: the REST calls the UI makes, and the two ways runs are executed.

``Api`` starts deployments exactly as the UI's Run button does (read the deployment by name,
``POST /deployments/{id}/create_flow_run`` with its default parameters plus the ones the form
asks for) and answers approval forms as the UI does (``POST /flow_runs/{id}/resume`` with
``run_input``). ``start_serving``/``start_worker`` put the catalog on the server the two ways
people run it: ``python -m deployments.serve`` (as ``make up``) or ``prefect deploy --all`` from
prefect.yaml with one process worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from decisions.incidents import pause_expired
from devstack import procs
from devstack import stack as devstack
from devstack.stack import StackInfo

REPO = Path(__file__).resolve().parent.parent
POOL = "opsflows-process"  # the process pool prefect.yaml deploys to
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
#: How long a run Failed by the server's pause expiration may take to set itself Running.
PAUSE_EXPIRED_GRACE_S = 15.0
#: Timings small enough for a test, large enough for the bake to judge real traffic.
FAST_DEPLOY: dict[str, Any] = {
    "bake_seconds": 4,
    "bake_interval_s": 1,
    "smoke_retry_s": 5,
    "approval_timeout_s": 120,
}
PREFECT_CLI = str(Path(sys.executable).with_name("prefect"))
B = TypeVar("B")

#: A served case that runs on the ``serve`` path only. Every deployment keeps at least one case
#: on both paths (the worker path proves prefect.yaml and the worker's loader, not the runbook
#: again); the runbook's other cases run once, as ``make up`` serves them.
SERVE_ONLY = pytest.mark.parametrize("runpath", ["serve"], indirect=True)


def catalog_names() -> list[str]:
    from deployments.catalog import runner_deployments

    return [f"{d.flow_name}/{d.name}" for d in runner_deployments()]


class _Retrying(httpx.HTTPTransport):
    """Retry what the server calls retryable (503: SQLite busy), as Prefect's own client does."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(6):
            response = super().handle_request(request)
            if response.status_code not in (429, 503) or attempt == 5:
                return response
            response.close()
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")


class Api:
    """The Prefect REST API, called the way the UI calls it."""

    def __init__(self, api_url: str, headers: dict[str, str] | None = None) -> None:
        self.http = httpx.Client(
            base_url=api_url, headers=headers or {}, timeout=30, transport=_Retrying()
        )

    def deployment(self, name: str) -> dict[str, Any]:
        resp = self.http.get(f"/deployments/name/{name}")
        resp.raise_for_status()
        return dict(resp.json())

    def start(self, name: str, **params: Any) -> str:
        """The Run button: the deployment's defaults plus the form's values; the run id."""
        deployment = self.deployment(name)
        body = {"parameters": {**(deployment.get("parameters") or {}), **params}}
        resp = self.http.post(f"/deployments/{deployment['id']}/create_flow_run", json=body)
        assert resp.status_code == 201, f"{name}: {resp.status_code} {resp.text[:500]}"
        return str(resp.json()["id"])

    def run(self, run_id: str) -> dict[str, Any]:
        resp = self.http.get(f"/flow_runs/{run_id}")
        resp.raise_for_status()
        return dict(resp.json())

    def wait(self, run_id: str, until: tuple[str, ...] = FINAL, timeout: float = 240) -> Any:
        """Poll until the run's state type is in ``until``; the run (as JSON)."""
        deadline = time.monotonic() + timeout
        run = self.run(run_id)
        expired_since: float | None = None
        while time.monotonic() < deadline:
            run = self.run(run_id)
            state = run.get("state") or {}
            if pause_expired(state.get("type"), state.get("message")):
                # Failed by the server as its pause expired: the run sets itself Running
                # again within a few seconds unless its process is gone.
                expired_since = expired_since or time.monotonic()
                if time.monotonic() - expired_since < PAUSE_EXPIRED_GRACE_S:
                    time.sleep(0.5)
                    continue
            else:
                expired_since = None
            if state.get("type") in until:
                return run
            if state.get("type") in FINAL:
                break
            time.sleep(0.5)
        raise AssertionError(f"run {run_id} is {describe(run)}, expected one of {until}")

    def finish(self, name: str, timeout: float = 240, **params: Any) -> Any:
        """Start ``name`` and wait for its final state."""
        return self.wait(self.start(name, **params), timeout=timeout)

    def latest_artifact(self, key: str) -> str:
        """The data of the newest artifact with ``key`` (as the UI's Artifacts page shows it)."""
        resp = self.http.post(
            "/artifacts/latest/filter", json={"artifacts": {"key": {"any_": [key]}}}
        )
        resp.raise_for_status()
        found = resp.json()
        assert found, f"no artifact {key}"
        return str(found[0]["data"])

    def refused(self, run_id: str, run_input: dict[str, Any], timeout: float = 60) -> Any:
        """Submit an answer the roles policy refuses; the run (JSON) once it asks again."""
        before = self.run(run_id)["state"]["id"]
        self.resume(run_id, run_input)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id)
            state = run.get("state") or {}
            assert state.get("type") not in FINAL, f"the refused answer ended the run: {state}"
            if state.get("type") == "PAUSED" and state.get("id") != before:
                return run
            time.sleep(0.3)
        raise AssertionError(f"run {run_id} did not ask again after a refused answer")

    def resume(self, run_id: str, run_input: dict[str, Any]) -> None:
        """The approval form's submit button.

        Prefect sets a run Paused first and saves the form's schema right after; an answer in
        between is refused with "Run input schema not found" (the UI shows the form only
        once the schema is there), so that refusal is tried again for a few seconds.
        """
        deadline = time.monotonic() + 15
        while True:
            resp = self.http.post(f"/flow_runs/{run_id}/resume", json={"run_input": run_input})
            resp.raise_for_status()
            body = resp.json()
            reason = str((body.get("details") or {}).get("reason", ""))
            if body.get("status") == "REJECT" and "schema not found" in reason:
                if time.monotonic() < deadline:
                    time.sleep(0.3)
                    continue
            assert body.get("status") == "ACCEPT", resp.text
            return

    def delete_deployments(self, names: list[str]) -> None:
        for name in names:
            resp = self.http.get(f"/deployments/name/{name}")
            if resp.status_code == 200:
                self.http.delete(f"/deployments/{resp.json()['id']}").raise_for_status()

    def wait_deployments(self, names: list[str], timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        found: dict[str, Any] = {}
        while time.monotonic() < deadline:
            for name in names:
                resp = self.http.get(f"/deployments/name/{name}")
                if resp.status_code == 200:
                    found[name] = resp.json()
            if len(found) == len(names):
                return found
            time.sleep(1)
        raise AssertionError(f"not on the server after {timeout}s: {set(names) - set(found)}")


def describe(run: dict[str, Any]) -> str:
    state = run.get("state") or {}
    return f"{state.get('type')} ({state.get('name')}): {state.get('message')}"


def assert_completed(run: dict[str, Any], log: Path) -> None:
    assert run["state"]["type"] == "COMPLETED", f"{describe(run)}; see {log}"


@dataclass
class RunPath:
    """One way the catalog runs: ``serve`` (deployments.serve) or ``worker`` (prefect.yaml)."""

    kind: str
    stack: StackInfo
    api: Api
    log: Path


def _stack_env(stack: StackInfo) -> dict[str, str]:
    return {**os.environ, **stack.client_env()}


def start_serving(stack: StackInfo, api: Api) -> RunPath:
    """Serve the catalog as ``make up`` does, from fresh deployments this process registers."""
    state = Path(stack.state_dir)
    procs.stop(state, "runbooks")
    names = catalog_names()
    # Fresh records: the probe of serve_runbooks must not pass on stale deployments, and no
    # deployment may still point at the worker's pool.
    api.delete_deployments(names)
    devstack.serve_runbooks(stack)
    found = api.wait_deployments(names)
    pooled = {n: d["work_pool_name"] for n, d in found.items() if d.get("work_pool_name")}
    assert not pooled, f"served deployments bound to a work pool: {pooled}"
    return RunPath("serve", stack, api, procs.log_file(state, "runbooks"))


def stop_serving(stack: StackInfo) -> None:
    procs.stop(Path(stack.state_dir), "runbooks", timeout=30)


def _cli(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(
        [PREFECT_CLI, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-2000:]}{done.stderr}"
    return done.stdout


@contextlib.contextmanager
def worker_path(stack: StackInfo, api: Api) -> Iterator[RunPath]:
    """prefect.yaml deployed with ``prefect deploy --all`` and one process worker running them.

    The served deployments (same names) are deleted first, so every run of the catalog's names
    goes to the pool; the worker's deployments are deleted afterwards, so the next serve
    registers its own again.
    """
    names = catalog_names()
    env = {**_stack_env(stack), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    api.delete_deployments(names)
    _cli(["--no-prompt", "work-pool", "create", POOL, "--type", "process", "--overwrite"], env)
    _cli(["--no-prompt", "deploy", "--all"], env)
    found = api.wait_deployments(names, timeout=10)
    wrong = {n: d["work_pool_name"] for n, d in found.items() if d["work_pool_name"] != POOL}
    assert not wrong, f"deployments not on {POOL}: {wrong}"
    log = procs.log_file(Path(stack.state_dir), "worker")
    argv = [PREFECT_CLI, "worker", "start", "--pool", POOL, "--type", "process"]
    with procs.background(argv, env, log, cwd=REPO, stop_timeout=30) as proc:
        ready = lambda: api.http.get(f"/work_pools/{POOL}").json().get("status") == "READY"  # noqa: E731
        assert procs.wait_until(ready, 60) and proc.poll() is None, procs.tail(log)
        try:
            yield RunPath("worker", stack, api, log)
        finally:
            api.delete_deployments(names)


# -- what the runs changed -------------------------------------------------------------


def load_block(cls: type[B], name: str) -> B:
    """A saved block, typed (``Block.load`` is sync-or-async to a type checker)."""
    loaded = cls.load(name)  # type: ignore[attr-defined]
    assert isinstance(loaded, cls), f"{name} is not a {cls.__name__}"
    return loaded


def served_image(stack: StackInfo, env: str) -> str:
    """The image that answers ``/health`` of ``env`` right now."""
    return str(httpx.get(stack.app_url(env) + "/health", timeout=5).json()["image"])


def kube_image(env: str) -> str:
    """The image of the environment's Deployment in the simulator."""
    from prefect.logging import disable_run_logger

    from blocks.kube import KubeEnvironment
    from tasks import rollout

    with disable_run_logger():
        return str(rollout.current_release.fn(load_block(KubeEnvironment, env)).image)


def kube_deployment(stack: StackInfo, env: str) -> dict[str, Any]:
    from blocks.kube import KubeEnvironment

    block = load_block(KubeEnvironment, env)
    url = f"{stack.kube_url}/apis/apps/v1/namespaces/{block.namespace}/deployments/"
    return dict(httpx.get(url + block.deployment, timeout=10).json())


def github_delivery(
    secret: str, event: str, payload: dict[str, Any]
) -> tuple[dict[str, str], bytes]:
    """A GitHub webhook delivery signed as GitHub signs it (X-Hub-Signature-256)."""
    import uuid

    body = json.dumps(payload).encode()
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={digest}",
    }
    return headers, body


def webhook_secret(stack: StackInfo) -> str:
    return devstack.stack_secrets(Path(stack.state_dir))["webhook"]
