"""One change per environment at a time: the strict ``change-<environment>`` slot.

Deploys, hotfixes, rollbacks, scale and restart, migrations and credential rotations all take
the same slot, so a migration never runs under a deploy's bake and two production releases
never overlap. A migration also takes the slot of the database it changes,
``change-db-<database>@<host>:<port>`` (:func:`database_limit_name`, created with a limit of
1 the first time it is needed), in the same request as the environment's (both or neither,
so two runs never deadlock): two migrations of one database never overlap, whatever
environment each was started for. It is keyed on where the database is, not on the block's
name: two blocks (``app-db``, ``app-db-admin``) pointing at one database share it.

A slot is a lease the holding process renews: when the process dies
(``kill -9``, a lost node) the Prefect server takes it back within the lease
(``OPSFLOWS_CHANGE_LEASE_S``, 120 s by default) plus its repossessor interval (15 s), so a
crashed change never blocks the environment for good.

A change that can no longer renew its lease (the Prefect API unreachable for most of a lease,
or the server already gave the slot away) has lost the guarantee that nothing else changes the
environment. It is not killed mid-step (a deploy cancelled mid-bake would skip its rollback):
it stops at its next safe point, where the procedure calls :func:`check_slots` and gets
:class:`~opsflows.errors.ChangeSlotLost`; the release procedure then rolls back to the
recorded revision, as after any failure.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency._sync import acquire_concurrency_slots_with_lease
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.logging import get_run_logger

from blocks.postgres import PostgresTarget
from opsflows.errors import ChangeSlotLost, ConfigurationError, ServiceUnavailable, Throttled
from opsflows.settings import get_settings
from procedures.operation import current_run

#: A lease not renewed for this share of its duration counts as lost: the change stops
#: before the server could give the slot to another change.
LOST_AFTER = 0.8
#: Renewals per lease: a short outage is ridden out by the next attempt.
RENEWALS_PER_LEASE = 4


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


class SlotLease:
    """A held slot whose lease a background thread renews; :meth:`check` says if it is lost."""

    def __init__(self, name: str, lease_id: UUID, lease_s: float) -> None:
        self.name = name
        self.lease_id = lease_id
        self.lease_s = lease_s
        self.renewed_at = time.monotonic()
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew, name=f"opsflows-lease-{name}", daemon=True
        )

    def start(self) -> SlotLease:
        self._thread.start()
        return self

    def _renew(self) -> None:
        interval = self.lease_s / RENEWALS_PER_LEASE
        with get_client(sync_client=True) as client:
            while not self._stop.wait(interval) and self.lost is None:
                try:
                    client.renew_concurrency_lease(self.lease_id, self.lease_s)
                    self.renewed_at = time.monotonic()
                except (ObjectNotFound, httpx.HTTPStatusError) as exc:
                    status = getattr(getattr(exc, "response", None), "status_code", 404)
                    if status in (404, 410):
                        self.lost = "the Prefect server no longer holds the lease"
                        return
                    self._note_silence(exc)
                except Exception as exc:  # noqa: BLE001 - an outage: keep trying until lost
                    self._note_silence(exc)

    def _note_silence(self, exc: BaseException) -> None:
        silent = time.monotonic() - self.renewed_at
        if silent >= self.lease_s * LOST_AFTER:
            self.lost = f"lease not renewed for {silent:.0f} s ({type(exc).__name__})"

    def check(self) -> None:
        """Raise :class:`ChangeSlotLost` when the slot can no longer be counted on."""
        silent = time.monotonic() - self.renewed_at
        if self.lost is None and silent >= self.lease_s * LOST_AFTER:
            self.lost = f"lease not renewed for {silent:.0f} s"
        if self.lost is not None:
            raise ChangeSlotLost(
                f"lost the {self.name} slot: {self.lost}; another change may now run",
                hint="the change stopped at a safe point; check the environment and run it "
                "again once the Prefect API is reachable",
            )

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception), get_client(sync_client=True) as client:
            client.release_concurrency_slots_with_lease(self.lease_id)


_HELD: ContextVar[tuple[SlotLease, ...]] = ContextVar("opsflows_slots", default=())


def check_slots() -> None:
    """A safe point: stop the change (:class:`ChangeSlotLost`) if any held slot was lost."""
    for lease in _HELD.get():
        lease.check()


def require_slots(*environments: str) -> None:
    """Fail before any side effect when a change slot the run will need does not exist.

    Raises:
        ConfigurationError: a ``change-<environment>`` limit is missing.
        ServiceUnavailable: the Prefect API cannot be reached.
    """
    try:
        with get_client(sync_client=True) as client:
            for environment in environments:
                name = limit_name(environment)
                try:
                    client.read_global_concurrency_limit_by_name(name)
                except ObjectNotFound as exc:
                    raise ConfigurationError(
                        f"the concurrency limit {name} does not exist",
                        hint="create it (limit 1) in the Prefect UI, or run `opsflows bootstrap`",
                    ) from exc
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(
            f"cannot read the change limits: {type(exc).__name__}",
            hint="is the Prefect API reachable?",
        ) from exc


@contextlib.contextmanager
def change_slot(
    environment: str, timeout_s: float, *, database: PostgresTarget | None = None
) -> Iterator[SlotLease]:
    """Hold the ``change-<environment>`` slot for the body of the ``with`` (strict).

    Args:
        environment: The environment changed (``production``, ``staging``, …).
        timeout_s: How long to wait for a running change to finish.
        database: The database the change alters (a migration): its slot
            (:func:`database_limit_name`, created when missing) is taken too, in the same
            request and under the same lease as the environment's.

    Raises:
        ConfigurationError: the environment's limit does not exist.
        Throttled: another change held a slot for longer than ``timeout_s``.
    """
    name = limit_name(environment)
    names = [name] if database is None else [name, ensure_database_limit(database)]
    lease_s = get_settings().change_lease_s
    try:
        acquired = acquire_concurrency_slots_with_lease(
            names, 1, timeout_seconds=timeout_s, lease_duration=lease_s, strict=True
        )
    except ConcurrencySlotAcquisitionError as exc:
        raise ConfigurationError(
            f"the concurrency limit {name} does not exist",
            hint="create it (run `opsflows bootstrap`) so changes cannot overlap",
        ) from exc
    except TimeoutError as exc:
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
    held = " and ".join(names)
    lease = SlotLease(held, acquired.lease_id, lease_s).start()
    token = _HELD.set((*_HELD.get(), lease))
    current_run().record.changing = environment
    get_run_logger().info("holding the %s lock (lease %gs)", held, lease_s)
    try:
        yield lease
    finally:
        with contextlib.suppress(ValueError):
            _HELD.reset(token)
        lease.release()
