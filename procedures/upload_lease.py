"""The lease a backup holds while its upload runs, so no retention pass aborts it.

A backup holds one slot of the global concurrency limit ``backup-upload-<database>`` from
before its multipart upload starts until the upload is completed or aborted. The slot is a
lease its process renews (``OPSFLOWS_CHANGE_LEASE_S``, 120 s by default); when the process
dies the Prefect server takes it back within the lease plus its repossessor interval (15 s).
A retention pass aborts the database's pending uploads only while no slot is held
(:func:`live_writers` is 0, see ``decisions.retention.sweep_uploads``): a fact the Prefect
server keeps, which no clock skew between machines can fake.

The limit counts writers, it does not serialise them: it allows ``WRITERS_LIMIT`` holders, so
backups of one database still run side by side (the daily one and a migration's). It is
created the first time a backup of the database runs. A backup whose lease cannot be renewed
is stopped, and its upload aborted, before the lease runs out: no upload runs unleased.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound
from prefect.logging import get_logger

from opsflows.errors import Throttled
from opsflows.settings import get_settings
from tasks.concurrency_limits import ensure_limit

#: Far more backups of one database than ever run at once: the limit is a presence count.
WRITERS_LIMIT = 1000


def limit_name(database: str) -> str:
    """The global concurrency limit a backup of ``database`` holds while it uploads."""
    return "backup-upload-" + re.sub(r"[/%&<>]", "_", database)


def _slot(name: str, timeout_s: float) -> contextlib.AbstractContextManager[None]:
    return concurrency(
        name,
        occupy=1,
        strict=True,
        timeout_seconds=timeout_s,
        lease_duration=get_settings().change_lease_s,
        # Unlike a change, a backup is safe to stop half-way: its upload is aborted and the
        # next run takes a new one. Writing on without a lease is not safe: another run's
        # retention pass could take the upload for abandoned and abort it.
        raise_on_lease_renewal_failure=True,
    )


@contextlib.contextmanager
def upload_lease(database: str, timeout_s: float = 60) -> Iterator[None]:
    """Hold a ``backup-upload-<database>`` slot for the body of the ``with`` (the upload).

    The slot is asked for first and the limit created only when that fails (the first
    backup of the database): one API round trip less on every other run.

    Raises:
        Throttled: no slot within ``timeout_s`` (``WRITERS_LIMIT`` backups are writing).
    """
    name = limit_name(database)
    with contextlib.ExitStack() as held:
        try:
            _take_slot(held, name, timeout_s)
        except TimeoutError as exc:
            raise Throttled(
                f"{WRITERS_LIMIT} backups of {database} are uploading ({name} is full)",
                hint="wait for them to finish",
            ) from exc
        yield


def _take_slot(held: contextlib.ExitStack, name: str, timeout_s: float) -> None:
    """Enter a slot of ``name`` into ``held``; a refusal other than a timeout most likely
    means no limit yet: create it and ask once more."""
    try:
        held.enter_context(_slot(name, timeout_s))
    except TimeoutError:
        raise
    except Exception:  # noqa: BLE001 - see above; a second refusal is raised as it is
        ensure_limit(name, WRITERS_LIMIT)
        held.enter_context(_slot(name, timeout_s))


def live_writers(database: str) -> int | None:
    """How many backups of ``database`` hold an upload lease now; None when unknown.

    A limit that does not exist means no backup of the database has uploaded since this
    lease was introduced: 0. An unreachable Prefect API is unknown (None), and retention then
    aborts nothing.
    """
    name = limit_name(database)
    try:
        with get_client(sync_client=True) as client:
            return int(client.read_global_concurrency_limit_by_name(name).active_slots)
    except ObjectNotFound:
        return 0
    except Exception as exc:  # noqa: BLE001 - any failure means "unknown": abort nothing
        get_logger("opsflows.backup").warning("cannot read %s: %s", name, type(exc).__name__)
        return None
