"""A rotation scenario's own world on the local stack, and the checks made on its runs.

Each scenario builds its own world (role and database ``rot_<hex>``, secret
``opsflows-test/rot_<hex>``, simulator namespaces ``rot-<hex>-<n>`` with a Deployment that reads
the Kubernetes Secret ``rot-db``), so nobody else's ``app`` credential changes under them. Used
by ``tests/e2e/test_rotate_flow.py`` and the ``tests/reliability/test_rotation_*`` files.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import boto3
import httpx
import psycopg
from prefect.client.orchestration import get_client
from psycopg import sql

import flows.rotate_credentials as flow_module
from blocks.kube import KubeEnvironment
from blocks.postgres import PostgresTarget
from devstack.kubesim.seed import web_app_deployment
from devstack.stack import AWS_REGION, MOTO_KEYS, StackInfo, stack_secrets
from opsflows.settings import Settings

KUBE_SECRET = "rot-db"
APP = "rot-app"


@dataclass
class World:
    """One scenario's own role, database, secret and consumers, and the runs made on them."""

    stack: StackInfo
    consumers: int = 1
    name: str = field(default_factory=lambda: "rot_" + secrets.token_hex(4))
    rotation_id: str = "test-1"
    owns_tables: bool = False  # the role owns its database and tables, as ``app`` does
    run_ids: list[str] = field(default_factory=list)
    passwords: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.secret_id = f"opsflows-test/{self.name}"
        self.envs = [f"{self.name.replace('_', '-')}-{i}" for i in range(self.consumers)]
        self.block = f"{self.name.replace('_', '-')}-db"  # a PostgresTarget consumer
        self.sm = boto3.client(
            "secretsmanager",
            endpoint_url=self.stack.aws_endpoint_url,
            region_name=AWS_REGION,
            aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
        )
        self.http = httpx.Client(base_url=self.stack.kube_url, timeout=10)

    # -- building and removing ---------------------------------------------------------

    def admin(self, database: str = "postgres") -> psycopg.Connection[Any]:
        password = stack_secrets(Settings().state_dir)["postgres"]
        return psycopg.connect(
            host=self.stack.host, port=self.stack.postgres_port, user="postgres",
            password=password, dbname=database, autocommit=True,
        )  # fmt: skip

    def create(self) -> World:
        ident, name = sql.Identifier, self.name
        password = secrets.token_urlsafe(18)
        self.passwords.add(password)
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident(name)))
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    ident(name), sql.Literal(password)
                )
            )
        with self.admin(name) as conn:
            conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, note text)")
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(ident(name), ident(name))
            )
            conn.execute(sql.SQL("GRANT SELECT, INSERT ON orders TO {}").format(ident(name)))
            if self.owns_tables:
                for kind in ("DATABASE", "TABLE"):
                    on = name if kind == "DATABASE" else "orders"
                    conn.execute(
                        sql.SQL(f"ALTER {kind} {{}} OWNER TO {{}}").format(ident(on), ident(name))
                    )
        value = {"engine": "postgres", "host": self.stack.host, "port": self.stack.postgres_port}
        value |= {"dbname": name, "username": name, "password": password}
        self.sm.create_secret(Name=self.secret_id, SecretString=json.dumps(value))
        for env in self.envs:
            self._create_consumer(env, value)
        PostgresTarget(
            host=self.stack.host, port=self.stack.postgres_port, database=name, user=name,
            password=password,
        ).save(self.block, overwrite=True)  # fmt: skip
        return self

    def _create_consumer(self, namespace: str, value: dict[str, Any]) -> None:
        http = self.http
        http.post("/api/v1/namespaces", json={"metadata": {"name": namespace}}).raise_for_status()
        fields = {k: str(v) for k, v in value.items() if k != "engine"}
        http.post(
            f"/api/v1/namespaces/{namespace}/secrets",
            json={"metadata": {"name": KUBE_SECRET}, "stringData": fields},
        ).raise_for_status()
        manifest = web_app_deployment(name=APP, replicas=1)
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        container["env"][0]["valueFrom"]["secretKeyRef"]["name"] = KUBE_SECRET
        http.post(f"/apis/apps/v1/namespaces/{namespace}/deployments", json=manifest)
        KubeEnvironment(
            environment=namespace, api_url=self.stack.kube_url, namespace=namespace,
            deployment=APP, service_url=self.stack.app_url("staging"),
            prometheus_url=self.stack.prometheus_url,
        ).save(namespace, overwrite=True)  # fmt: skip
        with get_client(sync_client=True) as client:  # the change slot a rotation takes (strict)
            client.upsert_global_concurrency_limit_by_name(f"change-{namespace}", 1)

    def remove(self) -> None:
        for env in self.envs:
            self.http.delete(f"/api/v1/namespaces/{env}")
        for cls, name in [(KubeEnvironment, e) for e in self.envs] + [(PostgresTarget, self.block)]:
            with contextlib.suppress(Exception):  # best-effort cleanup
                cls.delete(name)
        with get_client(sync_client=True) as client:
            for env in self.envs:
                with contextlib.suppress(Exception):
                    client.delete_global_concurrency_limit_by_name(f"change-{env}")
        self.sm.delete_secret(SecretId=self.secret_id, ForceDeleteWithoutRecovery=True)
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )
            for role in (self.name, self.name + "_clone"):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        self.http.close()

    # -- running ---------------------------------------------------------------------

    def params(self, **overrides: Any) -> dict[str, Any]:
        """The flow's parameters for this world. ``single_user`` unless overridden: the fault
        scenarios prove its recovery (the role in use may already have the new password);
        the flow's default, ``alternating_users``, is named where a scenario wants it."""
        params: dict[str, Any] = {
            "secret_id": self.secret_id, "consumers": self.envs, "strategy": "single_user",
            "kube_secret_name": KUBE_SECRET, "rotation_id": self.rotation_id,
            "database_blocks": [self.block],
            "rollout_timeout_s": 30.0, "reason": "test rotation",
        }  # fmt: skip
        return params | overrides

    def run(self, **overrides: Any) -> Any:
        """Run the flow in this process; its final ``State``."""
        from flows.rotate_credentials import rotate_credentials

        try:
            state = rotate_credentials(**self.params(**overrides), return_state=True)
        finally:
            self.remember_passwords()
        self.run_ids.append(str(state.state_details.flow_run_id))
        return state

    def remember_passwords(self) -> None:
        """Every password any version of the secret ever held (for the leak scan)."""
        for version in self.stages():
            value = self.sm.get_secret_value(SecretId=self.secret_id, VersionId=version)
            self.passwords.add(json.loads(value["SecretString"])["password"])

    # -- observing -------------------------------------------------------------------

    def stages(self) -> dict[str, list[str]]:
        found = self.sm.describe_secret(SecretId=self.secret_id)["VersionIdsToStages"]
        return {k: sorted(v) for k, v in found.items()}

    def value(self, stage: str = "AWSCURRENT") -> dict[str, Any]:
        raw = self.sm.get_secret_value(SecretId=self.secret_id, VersionStage=stage)
        return dict(json.loads(raw["SecretString"]), version=raw["VersionId"])

    def logs_in(self, cred: dict[str, Any]) -> bool:
        try:
            with psycopg.connect(
                host=cred["host"], port=cred["port"], dbname=cred["dbname"],
                user=cred["username"], password=cred["password"], connect_timeout=5,
            ) as conn:  # fmt: skip
                conn.execute("SELECT count(*) FROM orders")
        except psycopg.OperationalError as exc:
            if "password authentication failed" in str(exc):
                return False
            raise
        return True

    def kube_secret(self, env: str) -> dict[str, Any]:
        body = self.http.get(f"/api/v1/namespaces/{env}/secrets/{KUBE_SECRET}").json()
        fields = {k: base64.b64decode(v).decode() for k, v in body["data"].items()}
        return dict(fields, annotations=body["metadata"].get("annotations") or {})

    def block_password(self) -> str:
        return PostgresTarget.load(self.block).password.get_secret_value()

    def deployment(self, env: str) -> dict[str, Any]:
        return dict(self.http.get(f"/apis/apps/v1/namespaces/{env}/deployments/{APP}").json())

    def oplog(self, run_id: str) -> dict[str, Any]:
        ops = stack_secrets(Settings().state_dir)["opsflows"]
        with psycopg.connect(
            host=self.stack.host, port=self.stack.postgres_port, user="opsflows",
            password=ops, dbname="opsflows",
        ) as conn:  # fmt: skip
            row = conn.execute(
                "SELECT status, issues, follow_up, details, impact FROM ops_log"
                " WHERE flow_run_id = %s",
                (run_id,),
            ).fetchone()
        assert row is not None, f"no ops_log row for {run_id}"
        return dict(zip(("status", "issues", "follow_up", "details", "impact"), row, strict=True))


def assert_no_secrets(run_ids: list[str], values: set[str]) -> int:
    """Scan every log line, artifact, parameter and state message of the runs; lines scanned."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    ids = [UUID(r) for r in run_ids]
    assert values and all(len(v) >= 16 for v in values)
    texts: list[str] = []
    with get_client(sync_client=True) as client:
        for offset in range(0, 10_000, 200):
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)),
                limit=200,
                offset=offset,
            )
            texts += [log.message for log in logs]
            if len(logs) < 200:
                break
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
        )
        texts += [f"{a.key} {a.description} {a.data}" for a in artifacts]
        started = []
        for run_id in ids:
            run = client.read_flow_run(run_id)
            texts.append(json.dumps(run.parameters, default=str))
            texts.append(str(run.state.message if run.state else ""))
            if run.start_time:
                started.append(run.start_time.timestamp())
        task_runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=ids))
        )
        texts += [str(tr.state.message if tr.state else "") for tr in task_runs]
    texts += _stored_results(min(started) - 1)
    assert any("next step" in text for text in texts), "the scan saw no rotation log lines"
    assert any(text.startswith("oplog-rotate-credentials") for text in texts), "no op-log artifact"
    leaks = [text[:80] for text in texts for value in values if value in text]
    assert not leaks, f"{len(leaks)} log lines/artifacts carry a secret value"
    return len(texts)


def _stored_results(since: float) -> list[str]:
    """Results and exceptions Prefect persisted to local storage since ``since`` (decoded)."""
    from prefect.settings import get_current_settings

    root = Path(get_current_settings().results.local_storage_path).expanduser()
    found = []
    for path in root.glob("*") if root.is_dir() else []:
        if path.is_file() and path.stat().st_mtime >= since:
            raw = path.read_bytes()
            with contextlib.suppress(ValueError):
                raw += b"\n" + base64.b64decode(raw, validate=False)
            found.append(raw.decode(errors="replace"))
    return found


# --- checks on a faulted run (reliability) ----------------------------------------------


def arm(attr: str, before: Callable[[], None], after: Callable[[], None] = lambda: None) -> Any:
    """A stand-in for the flow's task ``attr``: arm the fault, run the real task (retries kept,
    delays zeroed), disarm. Only the first call is faulted."""
    original = getattr(flow_module, attr)
    calls = []

    def faulted(*args: Any, **kwargs: Any) -> Any:
        calls.append(attr)
        if len(calls) > 1:
            return original(*args, **kwargs)
        before()
        try:
            return original.with_options(retry_delay_seconds=0)(*args, **kwargs)
        finally:
            after()

    return faulted


def check_failed_run(w: World, state: Any, step: str) -> dict[str, Any]:
    """The run failed at ``step``, AWSCURRENT logs in, the op log says which step failed."""
    assert state.is_failed(), state.message
    current = w.value()
    assert w.logs_in(current), f"AWSCURRENT does not log in after a failure at {step}"
    entry = w.oplog(w.run_ids[-1])
    assert entry["status"] == "failed"
    assert entry["details"]["failed_step"] == step
    assert f"step {step} failed" in entry["issues"]
    assert "rerun" in entry["follow_up"]
    return current


def check_completed(w: World, state: Any, before: dict[str, Any]) -> dict[str, Any]:
    """The rerun completed: a new AWSCURRENT that logs in, the old one retired, consumers on it."""
    assert state.is_completed(), state.message
    now = w.value()
    assert now["version"] != before["version"] and w.logs_in(now)
    assert not w.logs_in(before)
    assert "AWSPENDING" not in str(w.stages())
    for env in w.envs:
        assert w.kube_secret(env)["password"] == now["password"]
    assert w.block_password() == now["password"]
    return now
