"""Prefect global concurrency limits: create one on demand, or check that some exist.

``httpx`` errors of the Prefect client are translated here, once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from opsflows.errors import ConfigurationError, ServiceUnavailable


def ensure_limit(name: str, limit: int) -> str:
    """Create the limit ``name`` with ``limit`` slots unless it exists; its name.

    Raises:
        ServiceUnavailable: the Prefect API cannot be reached.
    """
    try:
        with get_client(sync_client=True) as client:
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                with contextlib.suppress(ObjectAlreadyExists):  # another run was first
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, limit=limit)
                    )
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(
            f"cannot create or read the concurrency limit {name}: {type(exc).__name__}",
            hint="is the Prefect API reachable?",
        ) from exc
    return name


def require_limits(names: Iterable[str]) -> None:
    """Fail when any of the limits ``names`` does not exist.

    Raises:
        ConfigurationError: a limit is missing (before any side effect of the caller).
        ServiceUnavailable: the Prefect API cannot be reached.
    """
    try:
        with get_client(sync_client=True) as client:
            for name in names:
                try:
                    client.read_global_concurrency_limit_by_name(name)
                except ObjectNotFound as exc:
                    raise ConfigurationError(
                        f"the concurrency limit {name} does not exist",
                        hint="create it (limit 1) in the Prefect UI, or run `opsflows bootstrap`",
                    ) from exc
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(
            f"cannot read the concurrency limits: {type(exc).__name__}",
            hint="is the Prefect API reachable?",
        ) from exc
