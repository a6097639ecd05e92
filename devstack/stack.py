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
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from decisions.wal import wal_folder
from devstack import exporters, postgres, procs
from devstack.services import stack_services
from devstack.stackinfo import AWS_REGION as AWS_REGION
from devstack.stackinfo import MOTO_KEYS as MOTO_KEYS
from devstack.stackinfo import PORT_SERVICES, PREFECT_AUTH_KEY
from devstack.stackinfo import StackInfo as StackInfo
from opsflows.settings import REPO_ROOT, Settings
from tasks.wal_config import WalArchive, write_config

BACKUP_BUCKET = "opsflows-backups"
BACKUP_PREFIX = "backups/"
#: The cluster name of the devstack's PostgreSQL in the point-in-time recovery folders.
PITR_CLUSTER = "main"
APP_DB_SECRET = "opsflows/app/db"
#: The monitoring parts (Debian's exporters and Alertmanager, the TLS endpoint they probe).
MONITORING = (
    "node-exporter",
    "postgres-exporter",
    "blackbox-exporter",
    "alertmanager",
    "tls-endpoint",
)
SERVICES = (
    "webhook",
    "runbooks",
    "prefect",
    "moto",
    "kubesim",
    "app-staging",
    "app-production",
    "prometheus",
    *MONITORING,
)


def load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def stack_secrets(state_dir: Path) -> dict[str, str]:
    """The generated passwords of this stack (created once, mode 0600).

    ``monitor`` is postgres_exporter's role's; ``alertmanager_webhook`` the bearer token
    Alertmanager sends to the alert receiver.
    """
    path = state_dir / "secrets.json"
    data = {k: str(v) for k, v in load_json(path).items()}
    wanted = (
        "postgres",
        postgres.APP_ROLE,
        postgres.OPS_ROLE,
        postgres.PREFECT_ROLE,
        "webhook",
        "monitor",
        "alertmanager_webhook",
        PREFECT_AUTH_KEY,
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


def _plan_ports(settings: Settings, remembered: dict[str, Any]) -> StackInfo:
    state = settings.state_dir

    def ours_running(name: str) -> bool:
        if name == "postgres_port":
            return postgres.is_running(Path(remembered.get("service_dir") or state) / "postgres")
        return procs.read_pid(state, PORT_SERVICES[name]) is not None

    def port(name: str) -> int:
        wanted = int(getattr(settings, name))
        return procs.choose_port(settings.host, wanted, remembered.get(name), ours_running(name))

    webhook_port = port("webhook_port")  # once: a free port is drawn anew on every call
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
        webhook_port=webhook_port,
        node_exporter_port=port("node_exporter_port"),
        postgres_exporter_port=port("postgres_exporter_port"),
        blackbox_port=port("blackbox_port"),
        alertmanager_port=port("alertmanager_port"),
        tls_port=port("tls_port"),
        alert_webhook_url=settings.alert_webhook_url
        or f"http://{settings.host}:{webhook_port}/alertmanager",
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
    passwords = stack_secrets(state)  # before the env file, which carries the API credentials
    _save(info)
    services = stack_services(info, settings, passwords)

    launched = {name: procs.spawn(state, services[name]) for name in ("moto", "kubesim")}
    if launched["moto"] is not None:
        procs.await_ready(state, services["moto"], launched["moto"])
    # The bucket exists before PostgreSQL archives its first WAL file into it: a fresh stack's
    # archiver never fails (and WalArchiveFailing never fires) while the stack comes up.
    _seed_bucket(info)
    pg_base = info.service_root / "postgres"
    postgres.init_cluster(pg_base, settings.os_user, passwords["postgres"])
    archive = write_config(
        pg_base / "wal-archive",
        WalArchive(
            endpoint=info.aws_endpoint_url,
            bucket=BACKUP_BUCKET,
            prefix=f"{BACKUP_PREFIX}{wal_folder(PITR_CLUSTER)}/",
            region=AWS_REGION,
        ),
        MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
        settings.os_user,
    )
    command = postgres.write_archive_conf(pg_base, archive, settings.wal_archive_timeout_s)
    postgres.start(pg_base, settings.os_user, info.host, info.postgres_port)
    postgres.ensure_archiving(
        pg_base, settings.os_user, info.host, info.postgres_port, passwords["postgres"], command
    )
    postgres.provision(info.host, info.postgres_port, passwords["postgres"], passwords)
    postgres.provision_monitoring(
        info.host, info.postgres_port, passwords["postgres"], passwords, exporters.MONITOR_ROLE
    )
    # The Prefect server keeps its state in PostgreSQL: launched once its database exists, and
    # waited for last (it is the slowest to boot).
    launched["prefect"] = procs.spawn(state, services["prefect"])
    if launched["kubesim"] is not None:
        procs.await_ready(state, services["kubesim"], launched["kubesim"])
    for name in ("app-staging", "app-production", "tls-endpoint", *MONITORING[:-1]):
        procs.start(state, services[name])
    for name, url in (("alertmanager", info.alertmanager_url), ("prometheus", info.prometheus_url)):
        if not procs.start(state, services[name]):
            _reload(name, url)  # running already: read the config this `up` wrote
    _seed_aws(info, passwords)
    prefect_proc = launched["prefect"]
    if prefect_proc is not None:
        procs.await_ready(state, services["prefect"], prefect_proc)
    return info


def _reload(name: str, base_url: str) -> None:
    import httpx

    try:
        httpx.post(f"{base_url}/-/reload", timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        raise procs.StartError(f"{name} refused its new configuration: {exc}") from exc


def _aws_kwargs(info: StackInfo) -> dict[str, Any]:
    return {
        "endpoint_url": info.aws_endpoint_url,
        "region_name": AWS_REGION,
        "aws_access_key_id": MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
    }


def _seed_bucket(info: StackInfo) -> None:
    """The backup bucket a real team would already have (the WAL archive goes there too)."""
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client("s3", **_aws_kwargs(info))
    try:
        s3.head_bucket(Bucket=BACKUP_BUCKET)
    except ClientError:
        s3.create_bucket(Bucket=BACKUP_BUCKET)


def _seed_aws(info: StackInfo, passwords: dict[str, str]) -> None:
    """The cloud resources a real team would already have: the bucket, the DB secret."""
    import boto3
    from botocore.exceptions import ClientError

    _seed_bucket(info)
    sm = boto3.client("secretsmanager", **_aws_kwargs(info))
    try:
        sm.describe_secret(SecretId=APP_DB_SECRET)
    except ClientError:
        # moto keeps nothing across a restart, while PostgreSQL keeps a password a rotation
        # set: with the secret gone nobody knows that password any more, so the stack's own
        # credential is put back in force in both places (a real account keeps its secret).
        postgres.reset_password(
            info.host,
            info.postgres_port,
            passwords["postgres"],
            postgres.APP_ROLE,
            passwords[postgres.APP_ROLE],
        )
        value = {
            "engine": "postgres",
            "host": info.host,
            "port": info.postgres_port,
            "dbname": postgres.APP_DATABASE,
            "username": postgres.APP_ROLE,
            "password": passwords[postgres.APP_ROLE],
        }
        sm.create_secret(Name=APP_DB_SECRET, SecretString=json.dumps(value))


#: The shell file (mode 0600) with the Prefect API's credentials, beside the secret-free env.
API_AUTH_ENV = "api-auth.env"


def _save(info: StackInfo) -> None:
    state = Path(info.state_dir)
    (state / "stack.json").write_text(json.dumps(asdict(info), indent=2))
    lines = [f"{key}={value}" for key, value in info.env().items()]
    (state / "env").write_text("\n".join(lines) + "\n")
    auth = info.prefect_auth_string
    if auth:  # the Prefect API's credentials, for a shell: `. .devstack/api-auth.env`
        auth_file = state / API_AUTH_ENV
        auth_file.touch(mode=0o600)
        auth_file.chmod(0o600)
        auth_file.write_text(f"PREFECT_API_AUTH_STRING={auth}\n")


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
    ports = {name: getattr(info, key) for key, name in PORT_SERVICES.items()}
    for name, port in ports.items():
        alive = procs.read_pid(state, name) is not None and procs.port_open(info.host, port)
        where = info.tls_url if name == "tls-endpoint" else info.url(port)
        result[name] = f"running on {where}" if alive else "stopped"
    result["runbooks"] = "running" if procs.read_pid(state, "runbooks") else "stopped"
    pg_alive = postgres.is_running(info.service_root / "postgres")
    result["postgres"] = f"running on {info.host}:{info.postgres_port}" if pg_alive else "stopped"
    return result


def export_env(info: StackInfo) -> None:
    """Point this process's clients (boto3, Prefect, opsflows settings) at the stack."""
    os.environ.update(info.client_env())


def serve_runbooks(info: StackInfo, deployment_probe: str = "stack-smoke/stack-smoke") -> bool:
    """Start the process that serves every runbook deployment; True when started now."""
    service = procs.Service(
        "runbooks",
        [sys.executable, "-m", "deployments.serve"],
        procs.http_ok(
            f"{info.prefect_api_url}/deployments/name/{deployment_probe}",
            below=400,
            headers=info.prefect_headers(),
        ),
        env=info.client_env(),
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
        env=info.client_env(),
        start_timeout=90,
    )
    return procs.start(state, service)
