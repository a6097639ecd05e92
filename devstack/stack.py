"""Bring the whole local stack up or down, idempotently, and describe it.

State lives under ``Settings.state_dir``: ``stack.json`` (ports, URLs), ``secrets.json``
(generated passwords, mode 0600, never printed), ``env`` (client settings, no secrets),
``logs/`` and ``run/``. Ports come from the settings; a busy one is replaced by a free one
and remembered, so a second ``up`` finds the same services again.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from devstack import postgres, procs
from devstack.services import stack_services
from opsflows.settings import REPO_ROOT, Settings

AWS_REGION = "us-east-1"
BACKUP_BUCKET = "opsflows-backups"
APP_DB_SECRET = "opsflows/app/db"
# moto accepts any keys; these are public placeholders, not secrets.
MOTO_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
SERVICES = (
    "webhook",
    "runbooks",
    "prefect",
    "moto",
    "kubesim",
    "app-staging",
    "app-production",
    "prometheus",
)


@dataclass(frozen=True)
class StackInfo:
    """Where each service of a running stack answers."""

    state_dir: str
    host: str
    prefect_port: int
    postgres_port: int
    moto_port: int
    kube_port: int
    app_staging_port: int
    app_production_port: int
    prometheus_port: int
    webhook_port: int = 0  # stack.json files written before the webhook existed lack it
    #: Where the service user's data lives (PostgreSQL, Prometheus): the state dir, or a
    #: folder under /var/lib when the user cannot reach the state dir.
    service_dir: str = ""

    @property
    def service_root(self) -> Path:
        return Path(self.service_dir or self.state_dir)

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"

    @property
    def prefect_api_url(self) -> str:
        return self.url(self.prefect_port) + "/api"

    @property
    def prefect_ui_url(self) -> str:
        return self.url(self.prefect_port)

    @property
    def aws_endpoint_url(self) -> str:
        return self.url(self.moto_port)

    @property
    def kube_url(self) -> str:
        return self.url(self.kube_port)

    @property
    def prometheus_url(self) -> str:
        return self.url(self.prometheus_port)

    @property
    def webhook_url(self) -> str:
        return self.url(self.webhook_port)

    def app_url(self, env: str) -> str:
        return self.url(self.app_staging_port if env == "staging" else self.app_production_port)

    def env(self) -> dict[str, str]:
        """Environment for clients of this stack (no secret values)."""
        return {
            "OPSFLOWS_STATE_DIR": self.state_dir,
            "OPSFLOWS_HOST": self.host,
            "OPSFLOWS_PREFECT_PORT": str(self.prefect_port),
            "OPSFLOWS_POSTGRES_PORT": str(self.postgres_port),
            "OPSFLOWS_MOTO_PORT": str(self.moto_port),
            "OPSFLOWS_KUBE_PORT": str(self.kube_port),
            "OPSFLOWS_APP_STAGING_PORT": str(self.app_staging_port),
            "OPSFLOWS_APP_PRODUCTION_PORT": str(self.app_production_port),
            "OPSFLOWS_PROMETHEUS_PORT": str(self.prometheus_port),
            "OPSFLOWS_WEBHOOK_PORT": str(self.webhook_port),
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "AWS_ENDPOINT_URL": self.aws_endpoint_url,
            "AWS_DEFAULT_REGION": AWS_REGION,
            **MOTO_KEYS,
        }


def load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def stack_secrets(state_dir: Path) -> dict[str, str]:
    """The generated passwords of this stack (created once, mode 0600)."""
    path = state_dir / "secrets.json"
    data = {k: str(v) for k, v in load_json(path).items()}
    wanted = (
        "postgres",
        postgres.APP_ROLE,
        postgres.OPS_ROLE,
        postgres.PREFECT_ROLE,
        "webhook",
        "alertmanager_token",  # Alertmanager's bearer token for the /alertmanager receiver
    )
    if all(k in data for k in wanted):
        return data
    for key in wanted:
        data.setdefault(key, secrets.token_urlsafe(24))
    state_dir.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps(data))
    return data


#: The service behind each port setting, to tell our own running service from a stranger.
PORT_SERVICES = {
    "prefect_port": "prefect",
    "moto_port": "moto",
    "kube_port": "kubesim",
    "app_staging_port": "app-staging",
    "app_production_port": "app-production",
    "prometheus_port": "prometheus",
    "webhook_port": "webhook",
}


def _plan_ports(settings: Settings, remembered: dict[str, Any]) -> StackInfo:
    state = settings.state_dir

    def ours_running(name: str) -> bool:
        if name == "postgres_port":
            return postgres.is_running(Path(remembered.get("service_dir") or state) / "postgres")
        return procs.read_pid(state, PORT_SERVICES[name]) is not None

    def port(name: str) -> int:
        wanted = int(getattr(settings, name))
        return procs.choose_port(settings.host, wanted, remembered.get(name), ours_running(name))

    return StackInfo(
        state_dir=str(settings.state_dir),
        host=settings.host,
        prefect_port=port("prefect_port"),
        postgres_port=port("postgres_port"),
        moto_port=port("moto_port"),
        kube_port=port("kube_port"),
        app_staging_port=port("app_staging_port"),
        app_production_port=port("app_production_port"),
        prometheus_port=port("prometheus_port"),
        webhook_port=port("webhook_port"),
    )


def up(settings: Settings | None = None) -> StackInfo:
    """Start every service that is not running yet and return where they answer."""
    settings = settings or Settings()
    state = settings.state_dir
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o755)
    # Before anything is chowned to it: a fresh machine has no such user yet.
    postgres.ensure_os_user(settings.os_user)
    info = replace(
        _plan_ports(settings, load_json(state / "stack.json")),
        service_dir=str(postgres.service_root(state, settings.os_user)),
    )
    _save(info)
    passwords = stack_secrets(state)
    services = stack_services(info, settings, passwords)

    launched = {name: procs.spawn(state, services[name]) for name in ("moto", "kubesim")}
    pg_base = info.service_root / "postgres"
    postgres.init_cluster(pg_base, settings.os_user, passwords["postgres"])
    postgres.start(pg_base, settings.os_user, info.host, info.postgres_port)
    postgres.provision(info.host, info.postgres_port, passwords["postgres"], passwords)
    # The Prefect server keeps its state in PostgreSQL: launched once its database exists, and
    # waited for last (it is the slowest to boot).
    launched["prefect"] = procs.spawn(state, services["prefect"])
    for name in ("moto", "kubesim"):
        proc = launched[name]
        if proc is not None:
            procs.await_ready(state, services[name], proc)
    for name in ("app-staging", "app-production", "prometheus"):
        procs.start(state, services[name])
    _seed_aws(info, passwords)
    prefect_proc = launched["prefect"]
    if prefect_proc is not None:
        procs.await_ready(state, services["prefect"], prefect_proc)
    return info


def _seed_aws(info: StackInfo, passwords: dict[str, str]) -> None:
    """The cloud resources a real team would already have: the backup bucket, the DB secret."""
    import boto3
    from botocore.exceptions import ClientError

    kwargs: dict[str, Any] = {
        "endpoint_url": info.aws_endpoint_url,
        "region_name": AWS_REGION,
        "aws_access_key_id": MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
    }
    s3 = boto3.client("s3", **kwargs)
    try:
        s3.head_bucket(Bucket=BACKUP_BUCKET)
    except ClientError:
        s3.create_bucket(Bucket=BACKUP_BUCKET)
    sm = boto3.client("secretsmanager", **kwargs)
    try:
        sm.describe_secret(SecretId=APP_DB_SECRET)
    except ClientError:
        value = {
            "engine": "postgres",
            "host": info.host,
            "port": info.postgres_port,
            "dbname": postgres.APP_DATABASE,
            "username": postgres.APP_ROLE,
            "password": passwords[postgres.APP_ROLE],
        }
        sm.create_secret(Name=APP_DB_SECRET, SecretString=json.dumps(value))


def _save(info: StackInfo) -> None:
    state = Path(info.state_dir)
    (state / "stack.json").write_text(json.dumps(asdict(info), indent=2))
    lines = [f"{key}={value}" for key, value in info.env().items()]
    (state / "env").write_text("\n".join(lines) + "\n")


def load(settings: Settings | None = None) -> StackInfo | None:
    """The stack recorded in the state directory, if any (running or not)."""
    settings = settings or Settings()
    data = load_json(settings.state_dir / "stack.json")
    try:
        return StackInfo(**data)
    except TypeError:
        return None


def down(
    settings: Settings | None = None, purge: bool = False, remove_os_user: bool = False
) -> list[str]:
    """Stop every service (and with ``purge`` delete all state); the names stopped.

    ``remove_os_user`` also deletes the OS user the services ran as (the test stack's own),
    so the next ``up`` creates it again as on a fresh machine.
    """
    settings = settings or Settings()
    state = settings.state_dir
    info = load(settings)
    service_root = info.service_root if info else state
    stopped = [name for name in SERVICES if procs.stop(state, name)]
    if postgres.stop(service_root / "postgres", settings.os_user):
        stopped.append("postgres")
    if purge:
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(service_root, ignore_errors=True)
    if remove_os_user and postgres.remove_os_user(settings.os_user):
        stopped.append(f"os user {settings.os_user}")
    return stopped


def status(settings: Settings | None = None) -> dict[str, str]:
    """``{service: "running on URL" | "stopped"}`` for every service."""
    settings = settings or Settings()
    info = load(settings)
    if info is None:
        return dict.fromkeys((*SERVICES, "postgres"), "stopped")
    state = Path(info.state_dir)
    result: dict[str, str] = {}
    ports = {
        "prefect": info.prefect_port,
        "moto": info.moto_port,
        "kubesim": info.kube_port,
        "app-staging": info.app_staging_port,
        "app-production": info.app_production_port,
        "prometheus": info.prometheus_port,
        "webhook": info.webhook_port,
    }
    for name, port in ports.items():
        alive = procs.read_pid(state, name) is not None and procs.port_open(info.host, port)
        result[name] = f"running on {info.url(port)}" if alive else "stopped"
    result["runbooks"] = "running" if procs.read_pid(state, "runbooks") else "stopped"
    pg_alive = postgres.is_running(info.service_root / "postgres")
    result["postgres"] = f"running on {info.host}:{info.postgres_port}" if pg_alive else "stopped"
    return result


def export_env(info: StackInfo) -> None:
    """Point this process's clients (boto3, Prefect, opsflows settings) at the stack."""
    os.environ.update(info.env())


def serve_runbooks(info: StackInfo, deployment_probe: str = "stack-smoke/stack-smoke") -> bool:
    """Start the process that serves every runbook deployment; True when started now."""
    service = procs.Service(
        "runbooks",
        [sys.executable, "-m", "deployments.serve"],
        procs.http_ok(f"{info.prefect_api_url}/deployments/name/{deployment_probe}", below=400),
        env=info.env(),
        cwd=REPO_ROOT,  # catalog entrypoints are paths relative to the repository root
        start_timeout=120,
    )
    return procs.start(Path(info.state_dir), service)


def serve_webhook(info: StackInfo) -> bool:
    """Start the CI webhook receiver beside the served runbooks; True when started now."""
    if not info.webhook_port:
        raise procs.StartError("no webhook port recorded; run `opsflows devstack up` first")
    state = Path(info.state_dir)
    argv = [sys.executable, "-m", "deployments.webhook_cli", "serve", "--host", info.host]
    argv += ["--port", str(info.webhook_port)]
    argv += ["--replay-db", str(state / "webhook" / "deliveries.sqlite")]
    service = procs.Service(
        "webhook",
        argv,
        procs.http_ok(info.webhook_url + "/healthz"),
        env=info.env(),
        start_timeout=90,
    )
    return procs.start(state, service)
