"""Run a task for real (a task run, in a flow, with its own retry policy) and read back from
Prefect what its retries were: the task run's state history.

The engine reports task run states to the server as events, recorded in the background, so
the history is read once its final state has arrived (a wait on that condition).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import State, StateType

#: How far the recorded delay (AwaitingRetry's scheduled time minus its timestamp, both set
#: by the engine at one moment) may be from the configured one.
DELAY_TOLERANCE_S = 0.25


def run_in_flow(step: Any, *args: Any, **kwargs: Any) -> State:
    """Run the task ``step`` in a small flow of its own, in this process; its final state."""
    states: list[State] = []

    @flow(name="retry-budget", validate_parameters=False)
    def retry_budget() -> None:
        states.append(step(*args, return_state=True, **kwargs))

    retry_budget()
    return states[0]


@dataclass(frozen=True)
class History:
    """One task run's states as Prefect recorded them, oldest first, and its run count."""

    states: list[State]
    run_count: int

    @property
    def attempts(self) -> int:
        """Times the task ran (Running, then one Retrying per retry)."""
        return sum(1 for s in self.states if s.type == StateType.RUNNING)

    @property
    def awaiting(self) -> list[State]:
        return [s for s in self.states if s.name == "AwaitingRetry"]

    @property
    def delays(self) -> list[float]:
        """Each retry's delay as scheduled: AwaitingRetry's scheduled time minus its time."""
        return [
            (s.state_details.scheduled_time - s.timestamp).total_seconds()  # type: ignore[operator]
            for s in self.awaiting
        ]

    @property
    def waits(self) -> list[float]:
        """How long each retry really waited: from AwaitingRetry to the next run."""
        found = []
        for before, after in zip(self.states, self.states[1:], strict=False):
            if before.name == "AwaitingRetry":
                found.append((after.timestamp - before.timestamp).total_seconds())
        return found

    @property
    def final(self) -> State:
        return self.states[-1]


def history(task_run_id: UUID, timeout_s: float = 30.0) -> History:
    """The recorded history of a task run, once its final state was recorded."""
    deadline = time.monotonic() + timeout_s
    while True:
        with get_client(sync_client=True) as client:
            states = client.read_task_run_states(task_run_id)
            run = client.read_task_run(task_run_id)
        if any(s.is_final() for s in states) and run.state and run.state.is_final():
            return History(sorted(states, key=lambda s: s.timestamp), run.run_count)
        assert time.monotonic() < deadline, f"task run {task_run_id} has no final state recorded"
        time.sleep(0.2)


def task_run_of(state: State) -> UUID:
    return UUID(str(state.state_details.task_run_id))


def task_run_in(flow_run_id: UUID, name: str, timeout_s: float = 30.0) -> UUID:
    """The id of the task run called ``name`` (``name-<suffix>``) in a flow run."""
    deadline = time.monotonic() + timeout_s
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        found = [r.id for r in runs if r.name.startswith(f"{name}-")]
        if found:
            assert len(found) == 1, f"{len(found)} task runs called {name}"
            return found[0]
        assert time.monotonic() < deadline, f"no task run {name} in flow run {flow_run_id}"
        time.sleep(0.2)


def assert_retried(
    h: History, policy: dict[str, Any], attempts: int, final: Callable[[State], bool]
) -> None:
    """``attempts`` runs, each retry delayed as the policy says, ending as ``final`` says."""
    assert h.attempts == attempts, [s.name for s in h.states]
    assert h.run_count == attempts, "Prefect's run count agrees with the recorded states"
    assert final(h.final), h.final
    expected = list(policy["retry_delay_seconds"])[: attempts - 1]
    assert len(h.delays) == len(expected), (h.delays, expected)
    for got, want in zip(h.delays, expected, strict=True):
        assert abs(got - want) <= DELAY_TOLERANCE_S, f"retry delay {got:.3f} s, policy {want} s"
    for waited, want in zip(h.waits, expected, strict=True):
        assert waited >= want - DELAY_TOLERANCE_S, f"a retry ran {waited:.3f} s after, not {want}"
