"""The upload lease against the stack's Prefect server: created on first use, held while
the body runs, given back after it, and a full limit is ``Throttled`` without a retry."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectNotFound

from opsflows.errors import Throttled
from procedures.upload_lease import WRITERS_LIMIT, limit_name, live_writers, upload_lease

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def database() -> Iterator[str]:
    name = "lease_" + secrets.token_hex(4)
    yield name
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectNotFound):
        client.delete_global_concurrency_limit_by_name(limit_name(name))


def _limit(database: str) -> tuple[int, int]:
    with get_client(sync_client=True) as client:
        found = client.read_global_concurrency_limit_by_name(limit_name(database))
    return found.limit, found.active_slots


def test_the_first_lease_creates_the_limit_and_each_lease_is_held_then_given_back(
    database: str,
) -> None:
    assert live_writers(database) == 0, "no limit yet: nobody is writing"
    with upload_lease(database):
        assert _limit(database) == (WRITERS_LIMIT, 1)
        with upload_lease(database):  # a second backup of the same database, side by side
            assert live_writers(database) == 2
        assert live_writers(database) == 1
    assert _limit(database) == (WRITERS_LIMIT, 0)
    with upload_lease(database):  # the limit exists now: taken on the first ask
        assert live_writers(database) == 1
    assert live_writers(database) == 0


def test_a_full_limit_is_throttled_and_the_holder_keeps_its_slot(database: str) -> None:
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=limit_name(database), limit=1)
        )
    with upload_lease(database):
        with pytest.raises(Throttled, match=r"are uploading \(backup-upload-lease_\w+ is full\)"):
            with upload_lease(database, timeout_s=1):
                pytest.fail("the body must not run without a slot")
        assert _limit(database) == (1, 1), "the full limit is not recreated or changed"
    assert _limit(database) == (1, 0)


def test_a_failure_inside_the_body_gives_the_slot_back(database: str) -> None:
    with pytest.raises(RuntimeError, match="upload failed"):
        with upload_lease(database):
            raise RuntimeError("upload failed")
    assert live_writers(database) == 0
