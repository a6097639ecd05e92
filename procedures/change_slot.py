"""One change per environment at a time: the strict ``change-<environment>`` slot.

Deploys, hotfixes, rollbacks, scale and restart, migrations and credential rotations all take
the same slot, so a migration never runs under a deploy's bake and two production releases
never overlap. The slot is a lease the holding process renews: when the process dies
(``kill -9``, a lost node) the Prefect server takes it back within the lease
(``OPSFLOWS_CHANGE_LEASE_S``, 120 s by default) plus its repossessor interval (15 s), so a
crashed change never blocks the environment for good. A change already under way is never
cancelled because the Prefect API was unreachable when its lease was due for renewal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.logging import get_run_logger

from opsflows.errors import ConfigurationError, Throttled
from opsflows.settings import get_settings
from procedures.operation import current_run


def limit_name(environment: str) -> str:
    """The global concurrency limit that serialises changes of ``environment``."""
    return f"change-{environment}"


@contextlib.contextmanager
def change_slot(environment: str, timeout_s: float, *, strict: bool = True) -> Iterator[None]:
    """Hold the ``change-<environment>`` slot for the body of the ``with``.

    Args:
        environment: The environment changed (``production``, ``staging``, …).
        timeout_s: How long to wait for a running change to finish.
        strict: A missing limit is an error (True) or means "no serialisation" (False).

    Raises:
        ConfigurationError: ``strict`` and the limit does not exist.
        Throttled: another change held the slot for longer than ``timeout_s``.
    """
    name = limit_name(environment)
    lease_s = get_settings().change_lease_s
    held = False
    try:
        with concurrency(
            name,
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
            get_run_logger().info("holding the %s lock (lease %gs)", name, lease_s)
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
        raise Throttled(
            f"another change of {environment} held {name} for more than {timeout_s:g}s",
            hint=(
                "wait for the running change to finish, then start this one again (a change "
                f"whose process died frees it within {lease_s:g}s plus the server's repossessor "
                "interval)"
            ),
        ) from exc
