"""Retry policy, defined once and used by name on every task.

Only :class:`~opsflows.errors.TransientError` is retried: a permanent error (bad input, a
rejected gate, a failed verification) fails the task at once. Tasks never cache results: a
cached smoke test or backup would be a silent skip, so ``cache_policy=NO_CACHE`` is part of
every policy.
"""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

from opsflows.errors import TransientError


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TransientError)


def retry_only_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry when the task failed with a transient error."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we classify whatever the task raised
        return _is_transient(exc)
    return False


#: Quick steps against a service that may blink (API calls, probes).
NETWORK: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [1, 2, 4],
    "retry_condition_fn": retry_only_transient,
    "cache_policy": NO_CACHE,
}

#: Long, expensive steps (dump, restore, upload): fewer, slower retries.
HEAVY: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": [5, 15],
    "retry_condition_fn": retry_only_transient,
    "cache_policy": NO_CACHE,
}

#: Steps that change state and must never run twice on their own (decisions, writes
#: that are not idempotent): no retries.
ONCE: dict[str, Any] = {"retries": 0, "cache_policy": NO_CACHE}
