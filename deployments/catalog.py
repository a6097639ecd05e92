"""Every runbook deployment, in one list: served by ``serve.py``, mirrored by prefect.yaml."""

from __future__ import annotations

from typing import Any

from flows.smoke import stack_smoke


def runner_deployments() -> list[Any]:
    """The ``RunnerDeployment`` of every runbook, with schedules and descriptions."""
    return [
        stack_smoke.to_deployment(
            name="stack-smoke",
            description="Check that every service the runbooks need answers.",
            tags=["devstack", "read-only"],
        ),
    ]
