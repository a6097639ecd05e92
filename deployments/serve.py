"""Serve every runbook from one process (schedules stay live across restarts).

python -m deployments.serve
"""

from __future__ import annotations

from prefect import serve

from deployments.catalog import runner_deployments


def main() -> None:
    serve(*runner_deployments(), pause_on_shutdown=False, print_starting_message=True)


if __name__ == "__main__":
    main()
