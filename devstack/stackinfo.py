"""Where each service of a running stack answers (``stack.json``), and its client env."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

AWS_REGION = "us-east-1"
# moto accepts any keys; these are public placeholders, not secrets.
MOTO_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
#: The ``secrets.json`` entry holding the Prefect API's credentials (the server's
#: ``PREFECT_SERVER_API_AUTH_STRING``, every client's ``PREFECT_API_AUTH_STRING``).
PREFECT_AUTH_KEY = "prefect_api"


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
    # The monitoring parts (0 in a stack.json written before they existed).
    node_exporter_port: int = 0
    postgres_exporter_port: int = 0
    blackbox_port: int = 0
    alertmanager_port: int = 0
    tls_port: int = 0
    #: Where Alertmanager posts (the ``alert_webhook_url`` setting, or the stack's receiver).
    alert_webhook_url: str = ""

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

    @property
    def alertmanager_url(self) -> str:
        return self.url(self.alertmanager_port)

    @property
    def tls_url(self) -> str:
        """The stack's HTTPS endpoint (its certificate is signed by :attr:`ca_cert_file`)."""
        return f"https://{self.host}:{self.tls_port}"

    @property
    def tls_cert_file(self) -> Path:
        return self.service_root / "tls" / "cert.pem"

    @property
    def ca_cert_file(self) -> Path:
        """The stack CA's certificate: what clients of :attr:`tls_url` trust."""
        return self.service_root / "ca" / "ca.pem"

    @property
    def ca_key_file(self) -> Path:
        """The stack CA's private key (mode 0600): only ``renew-certificate`` reads it."""
        return self.service_root / "ca" / "ca-key.pem"

    @property
    def alertmanager_token_file(self) -> Path:
        """The bearer token Alertmanager sends to :attr:`alert_webhook_url` (mode 0600).

        The same value is ``secrets.json``'s ``alertmanager_webhook`` entry and, after
        ``opsflows bootstrap``, the Prefect Secret block ``alertmanager-webhook-token``.
        """
        return self.service_root / "alertmanager" / "webhook_token"

    @property
    def postgres_log_file(self) -> Path:
        """The PostgreSQL server's log (``pg_ctl -l``): connections, failed logins, slow SQL."""
        return self.service_root / "postgres" / "postgres.log"

    def app_url(self, env: str) -> str:
        return self.url(self.app_staging_port if env == "staging" else self.app_production_port)

    @property
    def prefect_auth_string(self) -> str | None:
        """The Prefect API's credentials (``secrets.json``, mode 0600); None before they exist."""
        try:
            data = json.loads((Path(self.state_dir) / "secrets.json").read_text())
        except (OSError, ValueError):
            return None
        value = data.get(PREFECT_AUTH_KEY) if isinstance(data, dict) else None
        return str(value) if value else None

    def prefect_headers(self) -> dict[str, str]:
        """The ``Authorization`` header a raw HTTP client of the Prefect API sends."""
        auth = self.prefect_auth_string
        if not auth:
            return {}
        return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode("ascii")}

    def client_env(self) -> dict[str, str]:
        """:meth:`env` with the Prefect API's credentials (``PREFECT_API_AUTH_STRING``): the
        environment of every process that calls the API (never written to the env file)."""
        auth = self.prefect_auth_string
        return {**self.env(), **({"PREFECT_API_AUTH_STRING": auth} if auth else {})}

    def env(self) -> dict[str, str]:
        """Environment for clients of this stack (no secret values: the env file)."""
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
            "OPSFLOWS_NODE_EXPORTER_PORT": str(self.node_exporter_port),
            "OPSFLOWS_POSTGRES_EXPORTER_PORT": str(self.postgres_exporter_port),
            "OPSFLOWS_BLACKBOX_PORT": str(self.blackbox_port),
            "OPSFLOWS_ALERTMANAGER_PORT": str(self.alertmanager_port),
            "OPSFLOWS_TLS_PORT": str(self.tls_port),
            "OPSFLOWS_POSTGRES_LOG_FILE": str(self.postgres_log_file),
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "AWS_ENDPOINT_URL": self.aws_endpoint_url,
            "AWS_DEFAULT_REGION": AWS_REGION,
            **MOTO_KEYS,
        }


#: The service behind each port setting, to tell our own running service from a stranger.
PORT_SERVICES = {
    "prefect_port": "prefect",
    "moto_port": "moto",
    "kube_port": "kubesim",
    "app_staging_port": "app-staging",
    "app_production_port": "app-production",
    "prometheus_port": "prometheus",
    "webhook_port": "webhook",
    "node_exporter_port": "node-exporter",
    "postgres_exporter_port": "postgres-exporter",
    "blackbox_port": "blackbox-exporter",
    "alertmanager_port": "alertmanager",
    "tls_port": "tls-endpoint",
}
