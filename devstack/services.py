"""The long-running services of the local stack and how each is started and probed.

:func:`stack_services` describes them (argv, environment, readiness probe, OS user) for
:func:`devstack.stack.up`; PostgreSQL is started by :mod:`devstack.postgres` itself.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from devstack import postgres, procs
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


def stack_services(
    info: StackInfo, settings: Settings, passwords: dict[str, str]
) -> dict[str, procs.Service]:
    from devstack import prometheus

    state = Path(info.state_dir)
    py = sys.executable
    host = info.host
    prefect_home = state / "prefect"
    prom_dir = info.service_root / "prometheus"
    prom_config = prometheus.write_config(
        prom_dir,
        {
            "staging": f"{host}:{info.app_staging_port}",
            "production": f"{host}:{info.app_production_port}",
        },
        prometheus.RULES_PATH,
    )
    postgres.chown_tree(prom_dir, settings.os_user)

    def app(env: str, port: int) -> procs.Service:
        namespace = getattr(settings, f"kube_namespace_{env}")
        argv = [py, "-m", "devstack.sampleapp", "--env", env, "--host", host, "--port", str(port)]
        argv += ["--kube-url", info.kube_url, "--namespace", namespace]
        argv += ["--deployment", settings.app_name]
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
    }
