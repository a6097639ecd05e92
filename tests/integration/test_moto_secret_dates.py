"""The devstack's moto launcher can backdate a secret (``POST /moto-api/opsflows/secret-dates``):
moto has no settable clock, and the access audit's tests need a secret last rotated 40 days
ago. The dates come back through ``DescribeSecret`` and ``ListSecrets`` as Secrets Manager
would report them."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import boto3
import httpx
import pytest
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

from devstack.moto_server import add_admin_routes, patch_version_stage_move


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    patch_version_stage_move()
    add_admin_routes()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_a_secret_is_backdated_through_the_launchers_route(moto_url: str) -> None:
    sm = boto3.client(
        "secretsmanager", endpoint_url=moto_url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    sm.create_secret(Name="team/db", SecretString="{}")
    fresh = sm.describe_secret(SecretId="team/db")
    assert "LastRotatedDate" not in fresh
    assert (datetime.now(UTC) - fresh["LastChangedDate"]).total_seconds() < 60

    forty_days_ago = int(time.time()) - 40 * 86400
    resp = httpx.post(
        f"{moto_url}/moto-api/opsflows/secret-dates",
        json={"name": "team/db", "last_rotated": forty_days_ago, "last_changed": forty_days_ago},
    )
    assert resp.status_code == 200, resp.text

    listed = {s["Name"]: s for s in sm.list_secrets()["SecretList"]}["team/db"]
    for found in (sm.describe_secret(SecretId="team/db"), listed):
        assert int(found["LastRotatedDate"].timestamp()) == forty_days_ago
        assert int(found["LastChangedDate"].timestamp()) == forty_days_ago
    assert (
        httpx.post(f"{moto_url}/moto-api/opsflows/secret-dates", json={"name": "nope"}).status_code
        == 404
    )
