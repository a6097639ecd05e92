"""One change per environment at a time: the strict ``change-<environment>`` slot.

Deploys, hotfixes, rollbacks, scale and restart, migrations and credential rotations all take
the same slot, so a migration never runs under a deploy's bake and two production releases
never overlap. A migration also takes the slot of the database it changes,
``change-db-<database>@<host>:<port>`` (:func:`database_limit_name`, created with a limit of
1 the first time it is needed), in the same request as the environment's: two migrations of
one database never overlap, whatever environment each was started for. The slot is keyed on
where the database is, not on the block's name: two blocks (``app-db``, ``app-db-admin``)
pointing at one database share it.

A slot is a lease the holding process renews: when the process dies
(``kill -9``, a lost node) the Prefect server takes it back within the lease
(``OPSFLOWS_CHANGE_LEASE_S``, 120 s by default) plus its repossessor interval (15 s), so a
crashed change never blocks the environment for good. A change already under way is never
cancelled because the Prefect API was unreachable when its lease was due for renewal.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.logging import get_run_logger

from blocks.postgres import PostgresTarget
from opsflows.errors import ConfigurationError, ServiceUnavailable, Throttled
from opsflows.settings import get_settings
from procedures.operation import current_run


def limit_name(environment: str) -> str:
    """The global concurrency limit that serialises changes of ``environment``."""
    return f"change-{environment}"


def database_limit_name(target: PostgresTarget) -> str:
    """The global concurrency limit that serialises changes of the database ``target``
    points at (its name, host and port; characters a limit name cannot hold become ``_``)."""
    key = f"{target.database}@{target.host}:{target.port}"
    return "change-db-" + re.sub(r"[^A-Za-z0-9._@:+-]", "_", key)


def ensure_database_limit(target: PostgresTarget) -> str:
    """Create the database's strict limit of 1 unless it exists; its name."""
    name = database_limit_name(target)
    try:
        with get_client(sync_client=True) as client:
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                with contextlib.suppress(ObjectAlreadyExists):  # another run was first
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, limit=1)
                    )
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(
            f"cannot create or read the concurrency limit {name}: {type(exc).__name__}",
            hint="is the Prefect API reachable?",
        ) from exc
    return name


def _busy(names: list[str]) -> list[str]:
    """Which of ``names`` have no free slot now (best effort: all of them when unknown)."""
    try:
        with get_client(sync_client=True) as client:
            limits = [client.read_global_concurrency_limit_by_name(n) for n in names]
        return [n for n, lim in zip(names, limits, strict=True) if lim.active_slots >= lim.limit]
    except Exception:  # noqa: BLE001 - only for the message
        return names


@contextlib.contextmanager
def change_slot(
    environment: str,
    timeout_s: float,
    *,
    strict: bool = True,
    database: PostgresTarget | None = None,
) -> Iterator[None]:
    """Hold the ``change-<environment>`` slot for the body of the ``with``.

    Args:
        environment: The environment changed (``production``, ``staging``, …).
        timeout_s: How long to wait for a running change to finish.
        strict: A missing limit is an error (True) or means "no serialisation" (False).
        database: The database the change alters (a migration): its slot
            (:func:`database_limit_name`, created when missing) is taken too, atomically
            with the environment's (both or neither, so two runs never deadlock).

    Raises:
        ConfigurationError: ``strict`` and the environment's limit does not exist.
        Throttled: another change held a slot for longer than ``timeout_s``.
    """
    name = limit_name(environment)
    names = [name] if database is None else [name, ensure_database_limit(database)]
    lease_s = get_settings().change_lease_s
    held = False
    try:
        with concurrency(
            names,
            occupy=1,
            strict=strict,
            timeout_seconds=timeout_s,
            lease_duration=lease_s,
            # A Prefect API outage at renewal time must not cancel a change half-way (a deploy
            # cancelled mid-bake would skip its automatic rollback): the change carries on, and
            # Prefect logs that the slot may no longer be reserved.
            raise_on_lease_renewal_failure=False,
        ):
            held = True
            current_run().record.changing = environment
            get_run_logger().info("holding the %s lock (lease %gs)", " and ".join(names), lease_s)
            yield
    except ConcurrencySlotAcquisitionError as exc:
        if held:
            raise
        raise ConfigurationError(
            f"the concurrency limit {name} does not exist",
            hint="create it (run `opsflows bootstrap`) so changes cannot overlap",
        ) from exc
    except TimeoutError as exc:
        if held:
            raise
        held_by = " and ".join(_busy(names))
        what = f"another change of {environment}" if held_by == name else "another change"
        raise Throttled(
            f"{what} held {held_by} for more than {timeout_s:g}s",
            hint=(
                "wait for the running change to finish, then start this one again (a change "
                f"whose process died frees it within {lease_s:g}s plus the server's repossessor "
                "interval)"
            ),
        ) from exc
