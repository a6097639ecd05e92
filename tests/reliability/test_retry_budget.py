"""The production retry budget, in force: one fault class per test, the real policy.

The other fault tests shrink the retries to keep the tier fast; these keep every task as it
ships (``opsflows.retry``: HEAVY 2 retries after 5 s and 15 s, NETWORK 3 retries after 1, 2
and 4 s) and run it as a real task run. The attempts are counted, and the delays read, from
Prefect's own record of the task run (tests/retry_support.py); the faults are real: a fault
proxy in front of moto, the simulator's ``/_sim/faults``, a TCP proxy in front of PostgreSQL.
A permanent error is not retried at all.
"""

from __future__ import annotations

import inspect
import json
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from kubernetes import client
from prefect.client.schemas.objects import State
from prefect_aws import AwsCredentials

from blocks.kube import KubeEnvironment
from blocks.postgres import PostgresTarget
from devstack.faultproxy import FaultProxy, Rule
from devstack.kubesim.seed import web_app_deployment
from devstack.stack import AWS_REGION, MOTO_KEYS, StackInfo
from devstack.tcpfaultproxy import TcpFaultProxy, TcpRule
from flows.backup import backup_database
from opsflows import retry
from opsflows.errors import AuthenticationError, ServiceUnavailable
from tasks import rollout
from tasks.catalog import list_backups
from tasks.dump import dump_to_s3
from tasks.multipart import MultipartUpload
from tasks.postgres import check_database
from tasks.secrets import check_secret
from tests.backup_support import BackupEnv, admin_target, backup_env, fill
from tests.retry_support import assert_retried, history, run_in_flow, task_run_in, task_run_of
from tests.support import flow_run_id

#: No botocore-level retries: the retries under test are ours.
NO_SDK_RETRIES = {"config": {"retries": {"mode": "standard", "total_max_attempts": 1}}}
#: Tries of one part inside one attempt of the upload (MultipartUpload's own part retries).
PART_TRIES = 1 + int(inspect.signature(MultipartUpload).parameters["part_retries"].default)
PART = {"method": "PUT", "contains": "partNumber="}
DUMP_TASK = "dump database to S3"


def test_the_tasks_carry_the_production_policies() -> None:
    """What the tests below exercise is the policy itself, not a copy shrunk for tests."""
    assert (dump_to_s3.retries, dump_to_s3.retry_delay_seconds) == (2, [5, 15])
    for step in (rollout.set_image, check_secret, check_database):
        assert (step.retries, step.retry_delay_seconds) == (3, [1, 2, 4]), step.name
    assert retry.HEAVY["retry_delay_seconds"] == [5, 15]
    assert retry.NETWORK["retry_delay_seconds"] == [1, 2, 4]


# --- S3 (HEAVY): the backup's dump and upload ------------------------------------------


@pytest.fixture(scope="module")
def env(stack: StackInfo, bootstrapped: object) -> Iterator[BackupEnv]:
    """A small database: its dump is one part."""
    with backup_env(stack, "budget") as made:
        fill(made, 200)
        yield made


@pytest.fixture
def s3_proxy(env: BackupEnv) -> Iterator[FaultProxy]:
    with FaultProxy(env.info.host, env.info.moto_port) as made:
        yield made


def uploads_started_and_aborted(proxy: FaultProxy) -> tuple[int, int]:
    creates = [t for m, t, _ in proxy.log if m == "POST" and t.endswith("?uploads")]
    aborts = [t for m, t, _ in proxy.log if m == "DELETE" and "uploadId=" in t]
    return len(creates), len(aborts)


def test_s3_refusing_two_attempts_of_the_upload_the_third_completes_the_backup(
    env: BackupEnv, s3_proxy: FaultProxy
) -> None:
    store = env.save_store(s3_proxy.url, f"{env.store_block}-refused", **NO_SDK_RETRIES)
    s3_proxy.add(Rule("refuse", times=2 * PART_TRIES, **PART))  # type: ignore[arg-type]

    state = backup_database(database=env.db_block, store=store, return_state=True)

    made = state.result()
    dump = history(task_run_in(flow_run_id(state), DUMP_TASK))
    assert_retried(dump, retry.HEAVY, attempts=3, final=State.is_completed)
    assert s3_proxy.count("refuse") == 2 * PART_TRIES
    assert uploads_started_and_aborted(s3_proxy) == (3, 2), "each failed attempt aborted"
    complete = [r.backup_id for r in list_backups.fn(env.store, env.dbname) if r.complete]
    assert complete == [made["backup_id"]]
    assert env.uploads() == []
    for key in env.keys():
        env.client.delete_object(Bucket="opsflows-backups", Key=key)


def test_s3_staying_down_fails_the_backup_after_three_attempts_each_upload_aborted(
    env: BackupEnv, s3_proxy: FaultProxy
) -> None:
    store = env.save_store(s3_proxy.url, f"{env.store_block}-down", **NO_SDK_RETRIES)
    s3_proxy.add(Rule("refuse", **PART))  # type: ignore[arg-type]

    state = backup_database(database=env.db_block, store=store, return_state=True)

    with pytest.raises(ServiceUnavailable):
        state.result()
    dump = history(task_run_in(flow_run_id(state), DUMP_TASK))
    assert_retried(dump, retry.HEAVY, attempts=3, final=State.is_failed)
    assert s3_proxy.count("refuse") == 3 * PART_TRIES
    assert uploads_started_and_aborted(s3_proxy) == (3, 3)
    assert env.uploads() == [], "no orphan parts"
    assert env.keys() == [], "no dump object and no manifest"


# --- Kubernetes API (NETWORK): set image -------------------------------------------------


@pytest.fixture
def kube_env(stack: StackInfo) -> Iterator[KubeEnvironment]:
    """A Deployment of the sample app in a namespace of its own."""
    name = f"budget-{uuid.uuid4().hex[:6]}"
    env = KubeEnvironment(
        environment=name, api_url=stack.kube_url, namespace=name,
        service_url=stack.app_url("staging"), prometheus_url=stack.prometheus_url,
    )  # fmt: skip
    core = client.CoreV1Api(env.api_client())
    core.create_namespace({"metadata": {"name": name}})
    client.AppsV1Api(env.api_client()).create_namespaced_deployment(name, web_app_deployment())
    yield env
    httpx.delete(f"{stack.kube_url}/_sim/faults", timeout=5)  # a failed test leaves none
    core.delete_namespace(name)


def deployment_path(env: KubeEnvironment) -> str:
    return f"^/apis/apps/v1/namespaces/{env.namespace}/deployments/{env.deployment}$"


def sim_rules(stack: StackInfo, path: str) -> list[dict[str, Any]]:
    rules = httpx.get(f"{stack.kube_url}/_sim/faults", timeout=5).json()["rules"]
    return [r for r in rules if r["path"] == path]


def image_of(env: KubeEnvironment) -> str:
    dep = client.AppsV1Api(env.api_client()).read_namespaced_deployment(
        env.deployment, env.namespace
    )
    return str(dep.spec.template.spec.containers[0].image)


def test_kubernetes_api_failing_three_requests_is_retried_after_1_2_and_4_s(
    stack: StackInfo, kube_env: KubeEnvironment
) -> None:
    path = deployment_path(kube_env)
    rule = {"status": 503, "method": "PATCH", "path": path, "count": 3}
    httpx.post(f"{stack.kube_url}/_sim/faults", json=rule, timeout=5).raise_for_status()

    state = run_in_flow(rollout.set_image, kube_env, "registry.local/web-app:7.0.1")

    assert_retried(history(task_run_of(state)), retry.NETWORK, 4, State.is_completed)
    assert sim_rules(stack, path) == [], "all three faults were used"
    assert image_of(kube_env) == "registry.local/web-app:7.0.1"


# --- Secrets Manager (NETWORK): check secret ----------------------------------------------


@pytest.fixture
def secret(stack: StackInfo) -> Iterator[str]:
    sm = boto3.client(
        "secretsmanager", endpoint_url=stack.aws_endpoint_url, region_name=AWS_REGION,
        aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
    )  # fmt: skip
    name = f"opsflows-test/budget-{secrets.token_hex(4)}"
    sm.create_secret(Name=name, SecretString=json.dumps({"password": secrets.token_hex(16)}))
    yield name
    sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def test_secrets_manager_failing_three_requests_is_retried_after_1_2_and_4_s(
    stack: StackInfo, secret: str
) -> None:
    with FaultProxy(stack.host, stack.moto_port) as proxy:
        credentials = AwsCredentials(
            aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
            region_name=AWS_REGION,
            aws_client_parameters={"endpoint_url": proxy.url, **NO_SDK_RETRIES},
        )
        proxy.add(Rule("503", method="POST", times=3))

        state = run_in_flow(check_secret, credentials, secret)

        assert_retried(history(task_run_of(state)), retry.NETWORK, 4, State.is_completed)
        assert proxy.count("503") == 3
        assert state.result()["secret"] == secret


# --- PostgreSQL (NETWORK): check database ----------------------------------------------


def test_postgres_cutting_three_connections_is_retried_after_1_2_and_4_s(
    stack: StackInfo,
) -> None:
    admin = admin_target(stack)
    with TcpFaultProxy(stack.host, stack.postgres_port) as proxy:
        proxy.add(TcpRule("cut", after=0, reply=False, times=3))
        through = admin.model_copy(update={"host": proxy.host, "port": proxy.port})

        state = run_in_flow(check_database, through)

        assert_retried(history(task_run_of(state)), retry.NETWORK, 4, State.is_completed)
        assert (proxy.count("cut"), proxy.connections) == (3, 4)
        assert state.result().server_version


# --- a permanent error is never retried -------------------------------------------------


def test_kubernetes_refusing_our_credentials_is_not_retried(
    stack: StackInfo, kube_env: KubeEnvironment
) -> None:
    path = deployment_path(kube_env)
    before = image_of(kube_env)
    rule = {"status": 403, "method": "PATCH", "path": path, "count": 1}
    httpx.post(f"{stack.kube_url}/_sim/faults", json=rule, timeout=5).raise_for_status()

    state = run_in_flow(rollout.set_image, kube_env, "registry.local/web-app:7.0.2")

    with pytest.raises(AuthenticationError):
        state.result()
    h = history(task_run_of(state))
    assert_retried(h, retry.NETWORK, attempts=1, final=State.is_failed)
    assert h.awaiting == []
    assert sim_rules(stack, path) == []
    assert image_of(kube_env) == before


def test_postgres_refusing_the_password_is_not_retried(stack: StackInfo) -> None:
    wrong = PostgresTarget(
        host=stack.host, port=stack.postgres_port, database="postgres", user="postgres",
        password=secrets.token_urlsafe(18),
    )  # fmt: skip

    state = run_in_flow(check_database, wrong)

    with pytest.raises(AuthenticationError):
        state.result()
    h = history(task_run_of(state))
    assert_retried(h, retry.NETWORK, attempts=1, final=State.is_failed)
    assert h.awaiting == []
