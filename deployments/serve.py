"""Serve every runbook from one process (schedules stay live across restarts).

python -m deployments.serve
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

#: How often the runner asks for runs to start. Runs created by the CI webhook or the UI are
#: picked up within this many seconds (Prefect's default, 10 s, makes a CI trigger feel slow);
#: one small query per second against the local server is cheap.
POLL_SECONDS = 1.0


def serve_warm(
    deployments: Sequence[Any], preload: Sequence[str], heartbeat_s: int | None = None
) -> None:
    """Like ``prefect.serve``, but each run forks from a warm process that imported ``preload``.

    ``prefect.serve`` registers deployments without their flow objects, so every run starts
    ``python -m prefect.engine`` and imports everything again (seconds per run). Registering
    the in-memory flow makes the runner start the run with ``run_flow_in_subprocess``, which
    :mod:`deployments.warm_start` points at a preloaded forkserver.

    Every run sends a heartbeat event each ``heartbeat_s`` (default ``Settings.run_heartbeat_s``):
    the runner hands it to the run's process as ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, where the
    flow engine emits them. When the heartbeats stop (this process and its runs killed), the
    "crash unresponsive runs" automation (:mod:`deployments.automations`) marks the run Crashed.
    """
    from prefect.runner import Runner

    from deployments.warm_start import install
    from opsflows.settings import get_settings

    install(preload)
    settings = get_settings()
    heartbeat = heartbeat_s if heartbeat_s is not None else settings.run_heartbeat_s
    runner = Runner(
        pause_on_shutdown=False,
        query_seconds=POLL_SECONDS,
        heartbeat_seconds=heartbeat,
        limit=settings.runner_limit,
    )
    registry = getattr(runner, "_deployment_registry", None)
    for deployment in deployments:
        deployment_id = runner.add_deployment(deployment)
        if registry is not None and deployment.entrypoint:
            registry.register_flow(deployment_id, flow_by_module(deployment.entrypoint))
        print(f"serving {deployment.flow_name}/{deployment.name}", flush=True)
    asyncio.run(runner.start())


def flow_by_module(entrypoint: str) -> Any:
    """The flow of a ``path/to/module.py:name`` entrypoint, imported as its package module.

    Runs are handed to their process by pickling the flow, and cloudpickle copies the flow's
    function by value (the module attribute is the Flow, not the function). A flow loaded from
    a *file* (``load_flow_from_entrypoint``) lives in a throw-away ``__prefect_loader_…``
    module, which the copy then refers to and the run's process cannot import (``restart``
    crashed with ``No module named '__prefect_loader_…'``). Imported as ``flows.operate``, the
    references resolve in the run's process. The copy carries only the globals the code uses,
    which is why flow modules keep evaluated annotations (no ``from __future__ import
    annotations``): string annotations lost ``SmokeCheck`` and staged-deploy's parameter
    validation failed (tests/integration/test_served_flows.py).
    """
    import importlib

    path, _, name = entrypoint.rpartition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name)
    if not hasattr(flow, "fn"):
        raise TypeError(f"{entrypoint} is not a Prefect flow")
    return flow


#: What the forkserver imports before it forks a run: every runbook, then the work a first
#: run would do on its own clock (:mod:`deployments.run_warmup`).
PRELOAD = ("deployments.catalog", "deployments.run_warmup")


def main() -> None:
    # Imported here so reading POLL_SECONDS does not import Prefect and every runbook.
    from deployments.catalog import runner_deployments

    serve_warm(runner_deployments(), preload=PRELOAD)


if __name__ == "__main__":
    main()
