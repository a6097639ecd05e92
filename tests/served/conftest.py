"""The served deployment matrix: every catalog deployment started the way people start it.

Runs against the test stack *as ``make up`` serves it*: blocks and limits bootstrapped, and
every run started through the Prefect REST API exactly as the UI does (``served_support.Api``),
never by calling the flow in this process. Each case runs twice, once per ``runpath``:

``serve``
    ``devstack.stack.serve_runbooks`` starts ``python -m deployments.serve`` (warm start
    included), the command ``make up`` runs; the CI webhook receiver is the one ``make up``
    starts (``serve_webhook``). Run logs: ``.devstack-test/logs/runbooks.log``.
``worker``
    ``prefect work-pool create opsflows-process --type process``, ``prefect deploy --all`` from
    prefect.yaml (repository root, PREFECT_API_URL = test stack) and one
    ``prefect worker start --pool opsflows-process``. Logs: ``.devstack-test/logs/worker.log``.

Keeping the two paths apart: both register the same ``flow/deployment`` names, so they never
coexist. ``serve`` runs first; its teardown stops the serving process. ``worker`` then deletes
those deployments and lets ``prefect deploy --all`` create them again bound to the process pool
(checked: every catalog deployment has ``work_pool_name == opsflows-process``, so no runner
can take its runs), and deletes them when it ends; ``serve`` likewise deletes stale records
first and checks that no served deployment is bound to a pool. The other e2e tests that serve
flows use other names (``webhook-probe/e2e-webhook``, ``zombie-probe/e2e-zombie``);
``tests/e2e/test_schedules.py`` serves the catalog itself but stops its process when its module
ends, before this tier starts (tiers run in folder order), and ``serve`` re-registers from
scratch. Production receives steady traffic for the whole tier, so every bake judges real data.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import procs
from devstack import stack as devstack
from devstack.stack import StackInfo
from tests.deploy_support import steady_load
from tests.incident_support import INCIDENT_DELAYS
from tests.served_support import Api, RunPath, start_serving, stop_serving, worker_path

RUNPATHS = ["serve", "worker"]
#: `make test` runs each path in a pytest process on a stack of its own
#: (OPSFLOWS_TEST_RUNPATHS=serve or worker); unset, one process runs both, serve first.
ONLY = [p for p in os.environ.get("OPSFLOWS_TEST_RUNPATHS", "").split(",") if p]
#: Serve-path cases that run in the worker group's process instead (before its worker path),
#: so the two groups take about as long: the serve path has over twice the worker's cases.
SERVE_WITH_WORKER = ("test_game_day_triage.py",)
# Incident paging delays shrunk for the tier (incident_support.INCIDENT_DELAYS): the served
# process and the worker inherit this environment.
os.environ.update(INCIDENT_DELAYS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the cases of the run paths OPSFLOWS_TEST_RUNPATHS names (the cases without a
    run path go with ``serve``; the SERVE_WITH_WORKER files' serve cases with ``worker``)."""
    if not ONLY:
        return
    unknown = set(ONLY) - set(RUNPATHS)
    if unknown:
        raise pytest.UsageError(f"OPSFLOWS_TEST_RUNPATHS: unknown run path(s) {sorted(unknown)}")
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        path = params.get("runpath", "serve")
        if path == "serve" and item.path.name in SERVE_WITH_WORKER and len(ONLY) == 1:
            path = "worker"  # its group's process, not its run path
        (keep if path in ONLY else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def api(stack: StackInfo, bootstrapped: dict[str, list[str]]) -> Iterator[Api]:
    client = Api(stack.prefect_api_url, stack.prefect_headers())
    yield client
    client.http.close()


@pytest.fixture(scope="session", params=RUNPATHS)
def runpath(request: pytest.FixtureRequest, stack: StackInfo, api: Api) -> Iterator[RunPath]:
    """The catalog on the server, run by ``serve`` or by a ``worker`` (see the docstring)."""
    with steady_load(stack.app_url("production") + "/", rps=10):
        if request.param == "serve":
            path = start_serving(stack, api)
            try:
                yield path
            finally:
                stop_serving(stack)
        else:
            with worker_path(stack, api) as path:
                yield path


@pytest.fixture(scope="session")
def webhook(stack: StackInfo, bootstrapped: dict[str, list[str]]) -> str:
    """The CI webhook receiver started as ``make up`` starts it (fresh code); its URL."""
    procs.stop(Path(stack.state_dir), "webhook")
    devstack.serve_webhook(stack)
    return stack.webhook_url


@pytest.fixture(scope="session")
def shared() -> dict[str, Any]:
    """State the ordered cases of one run path hand to each other (e.g. deploy then rollback)."""
    return {}
