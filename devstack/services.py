"""The long-running services of the local stack and how each is started and probed.

:func:`stack_services` describes them (argv, environment, readiness probe, OS user) for
:func:`devstack.stack.up`; PostgreSQL is started by :mod:`devstack.postgres` itself.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from devstack import postgres, procs
from devstack.stackinfo import PREFECT_AUTH_KEY
from opsflows.settings import Settings

if TYPE_CHECKING:
    from devstack.stack import StackInfo


def prefect_database_env(
    info: StackInfo, settings: Settings, passwords: dict[str, str]
) -> dict[str, str]:
    """The Prefect server's database settings: the stack's PostgreSQL, or SQLite by setting.

    On PostgreSQL (``prefect`` role and database, scram password) the server takes concurrent
    flow runs without the 503s SQLite answers when several writers queue; it is the same
    server setup as the scale-out guide (docs/ci.md). The password reaches the server only
    through its environment, never a log or ``stack.json``.
    """
    prefect_home = Path(info.state_dir) / "prefect"
    if settings.prefect_database == "sqlite":
        return {
            "PREFECT_API_DATABASE_CONNECTION_URL": (
                f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}"
            )
        }
    # Parts rather than a URL: the password stays out of the connection URL (and its errors).
    return {
        "PREFECT_SERVER_DATABASE_DRIVER": "postgresql+asyncpg",
        "PREFECT_SERVER_DATABASE_HOST": info.host,
        "PREFECT_SERVER_DATABASE_PORT": str(info.postgres_port),
        "PREFECT_SERVER_DATABASE_NAME": postgres.PREFECT_DATABASE,
        "PREFECT_SERVER_DATABASE_USER": postgres.PREFECT_ROLE,
        "PREFECT_SERVER_DATABASE_PASSWORD": passwords[postgres.PREFECT_ROLE],
    }


def monitoring_services(
    info: StackInfo, settings: Settings, passwords: dict[str, str]
) -> dict[str, procs.Service]:
    """node, postgres and blackbox exporters, Alertmanager and the TLS endpoint.

    Writes their configuration, the exporter's password file and Alertmanager's bearer token
    (mode 0600, owned by the service user), the stack CA (made once) and the TLS endpoint's
    certificate first; idempotent.
    """
    from devstack import alertmanager, exporters, tlsendpoint

    host, user, root = info.host, settings.os_user, info.service_root
    ca_cert = tlsendpoint.ensure_ca(info.ca_cert_file.parent)
    cert = tlsendpoint.ensure(
        info.tls_cert_file.parent, host, settings.tls_cert_days, info.ca_cert_file.parent
    )
    queries, pass_file = exporters.write_postgres_exporter(
        root / "postgres_exporter", passwords["monitor"]
    )
    blackbox_config = exporters.write_blackbox_config(root / "blackbox_exporter", ca_cert)
    am_dir = info.alertmanager_token_file.parent
    am_config = alertmanager.write_config(
        am_dir,
        info.alert_webhook_url,
        passwords["alertmanager_webhook"],
        group_wait_s=settings.alert_group_wait_s,
        group_interval_s=settings.alert_group_interval_s,
        repeat_interval_s=settings.alert_repeat_interval_s,
    )
    for folder in ("postgres_exporter", "blackbox_exporter", am_dir.name):
        postgres.chown_tree(root / folder, user)

    def ready(port: int, path: str = "/metrics") -> procs.Probe:
        return procs.http_ok(f"{info.url(port)}{path}")

    node_port, pg_port = info.node_exporter_port, info.postgres_exporter_port
    return {
        "node-exporter": procs.Service(
            "node-exporter",
            exporters.node_exporter_command(host, node_port),
            ready(node_port),
            user=user,
        ),
        "postgres-exporter": procs.Service(
            "postgres-exporter",
            exporters.postgres_exporter_command(host, pg_port, queries),
            ready(pg_port),
            env=exporters.postgres_exporter_env(host, info.postgres_port, pass_file),
            user=user,
        ),
        "blackbox-exporter": procs.Service(
            "blackbox-exporter",
            exporters.blackbox_command(blackbox_config, host, info.blackbox_port),
            ready(info.blackbox_port),
            user=user,
        ),
        "alertmanager": procs.Service(
            "alertmanager",
            alertmanager.command(am_config, am_dir / "data", host, info.alertmanager_port),
            ready(info.alertmanager_port, "/-/ready"),
            user=user,
        ),
        "tls-endpoint": procs.Service(
            "tls-endpoint",
            [sys.executable, "-m", "devstack.tlsendpoint", "--host", host]
            + ["--port", str(info.tls_port), "--cert-dir", str(cert.parent)]
            # the consumer of the TLS Secret renew-certificate installs (see tlsendpoint)
            + ["--kube-url", info.kube_url, "--namespace", settings.kube_namespace_production]
            + ["--secret", settings.tls_secret_name],
            procs.tcp_ok(host, info.tls_port),
        ),
    }


def stack_services(
    info: StackInfo, settings: Settings, passwords: dict[str, str]
) -> dict[str, procs.Service]:
    from decisions.alert_rules import render as render_rules
    from devstack import prometheus

    state = Path(info.state_dir)
    py = sys.executable
    host = info.host
    prefect_home = state / "prefect"
    prom_dir = info.service_root / "prometheus"
    apps = {"staging": info.app_staging_port, "production": info.app_production_port}
    prom_config = prometheus.write_config(
        prom_dir,
        {env: f"{host}:{port}" for env, port in apps.items()},
        prometheus.RULES_PATH,
        monitoring=prometheus.Monitoring(
            node=f"{host}:{info.node_exporter_port}",
            postgres=f"{host}:{info.postgres_exporter_port}",
            blackbox=f"{host}:{info.blackbox_port}",
            alertmanager=f"{host}:{info.alertmanager_port}",
            health_urls={env: f"{info.url(port)}/health" for env, port in apps.items()},
            tls_url=info.tls_url + "/",
        ),
        rules_text=(
            None
            if settings.alert_for_s is None
            else render_rules(for_override_s=settings.alert_for_s)
        ),
    )
    postgres.chown_tree(prom_dir, settings.os_user)

    def app(env: str, port: int) -> procs.Service:
        namespace = getattr(settings, f"kube_namespace_{env}")
        argv = [py, "-m", "devstack.sampleapp", "--env", env, "--host", host, "--port", str(port)]
        argv += ["--kube-url", info.kube_url, "--namespace", namespace]
        argv += ["--deployment", settings.app_name]
        argv += ["--volume", str(state / "volumes" / env)]
        argv += ["--volume-size-mb", f"{settings.app_volume_mb:g}"]
        return procs.Service(f"app-{env}", argv, procs.tcp_ok(host, port))

    return {
        "prefect": procs.Service(
            "prefect",
            [
                py,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                host,
                "--port",
                str(info.prefect_port),
            ],
            procs.http_ok(info.prefect_api_url + "/health"),
            env={
                "PREFECT_HOME": str(prefect_home),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                **prefect_database_env(info, settings, passwords),
                # The UI's scripts call the API at this URL: without it they call :4200 whatever
                # port the server was given.
                "PREFECT_UI_API_URL": info.prefect_api_url,
                "PREFECT_LOGGING_SERVER_LEVEL": "WARNING",
                # Every request but GET /health and /ready needs these credentials (401
                # without); clients send them as PREFECT_API_AUTH_STRING (StackInfo.client_env()).
                "PREFECT_SERVER_API_AUTH_STRING": passwords[PREFECT_AUTH_KEY],
                # Concurrency leases on disk: a server restart must not forget who holds a
                # change slot (with in-memory leases the slot would stay taken for good).
                "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": (
                    "prefect.server.concurrency.lease_storage.filesystem"
                ),
            },
            start_timeout=120,
        ),
        "moto": procs.Service(
            "moto",
            [py, "-m", "devstack.moto_server", "--host", host, "--port", str(info.moto_port)],
            procs.tcp_ok(host, info.moto_port),
        ),
        "kubesim": procs.Service(
            "kubesim",
            [py, "-m", "devstack.kubesim", "--host", host, "--port", str(info.kube_port)],
            procs.http_ok(info.kube_url + "/healthz"),
        ),
        "app-staging": app("staging", info.app_staging_port),
        "app-production": app("production", info.app_production_port),
        "prometheus": procs.Service(
            "prometheus",
            prometheus.command(prom_config, prom_dir / "data", host, info.prometheus_port),
            procs.http_ok(info.prometheus_url + "/-/ready"),
            user=settings.os_user,
        ),
        **monitoring_services(info, settings, passwords),
    }
