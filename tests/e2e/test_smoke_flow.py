"""The stack smoke flow through the real Prefect server, and bad configuration failing clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from blocks.kube import KubeEnvironment
from blocks.postgres import PostgresTarget
from devstack import procs
from devstack import stack as devstack
from devstack.stack import StackInfo
from flows.smoke import stack_smoke
from opsflows.errors import (
    AuthenticationError,
    ConfigurationError,
    ServiceUnavailable,
)
from tests.support import assert_no_secret, flow_run_id, flow_run_texts


def ops_log_rows(info: StackInfo, run_id: Any) -> list[tuple[Any, ...]]:
    secrets = devstack.stack_secrets(Path(info.state_dir))
    with psycopg.connect(
        host=info.host,
        port=info.postgres_port,
        dbname="opsflows",
        user="opsflows",
        password=secrets["opsflows"],
    ) as conn:
        return conn.execute(
            "SELECT operation, status, issues FROM ops_log WHERE flow_run_id = %s", (str(run_id),)
        ).fetchall()


def test_smoke_flow_touches_every_service(stack: StackInfo, bootstrapped: Any) -> None:
    state = stack_smoke(return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["postgres"]["server_version"].split(".")[0] == "15"  # the seed's PostgreSQL
    assert result["s3"]["bucket"] == "opsflows-backups"
    assert result["secrets"]["secret"] == "opsflows/app/db"
    for env in ("staging", "production"):
        assert result[f"kube:{env}"]["image"].startswith("registry.local/web-app")
        assert result[f"health:{env}"]["status"] == 200
    assert result["prometheus"]["rules"] >= 1
    run_id = flow_run_id(state)
    assert ops_log_rows(stack, run_id) == [("stack smoke check", "succeeded", "")]
    texts = flow_run_texts(run_id)
    assert any("Operation log: stack smoke check" in t for t in texts)
    assert_no_secret(texts, devstack.stack_secrets(Path(stack.state_dir)).values())


def test_missing_block_names_it_and_says_how_to_fix(stack: StackInfo, bootstrapped: Any) -> None:
    state = stack_smoke(database="no-such-db-block", return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigurationError) as info:
        state.result()
    assert "opsflows-postgres-target/no-such-db-block" in str(info.value)
    assert "opsflows bootstrap" in str(info.value)
    rows = ops_log_rows(stack, flow_run_id(state))
    assert rows and rows[0][1] == "failed" and "no-such-db-block" in rows[0][2]


def test_wrong_password_is_an_authentication_error_without_the_password(
    stack: StackInfo, bootstrapped: Any
) -> None:
    wrong = "wrong-pass-" + "x7Q9z"
    good = PostgresTarget.load("app-db")
    PostgresTarget(
        host=good.host, port=good.port, database=good.database, user=good.user, password=wrong
    ).save("test-wrong-password", overwrite=True)
    state = stack_smoke(database="test-wrong-password", return_state=True)
    assert state.is_failed()
    with pytest.raises(AuthenticationError) as info:
        state.result()
    assert "refused the password" in str(info.value)
    assert wrong not in str(info.value)
    assert_no_secret(flow_run_texts(flow_run_id(state)), [wrong])


def test_unreachable_service_is_transient_and_named(stack: StackInfo, bootstrapped: Any) -> None:
    good = KubeEnvironment.load("staging")
    KubeEnvironment(
        environment="staging",
        api_url=f"http://127.0.0.1:{procs.free_port()}",
        namespace=good.namespace,
        service_url=good.service_url,
        prometheus_url=good.prometheus_url,
    ).save("test-unreachable", overwrite=True)
    state = stack_smoke(environments=["test-unreachable"], return_state=True)
    assert state.is_failed()
    with pytest.raises(ServiceUnavailable) as info:
        state.result()
    assert "cannot reach the Kubernetes API" in str(info.value)
