"""A Kubernetes environment (staging, production) and the thresholds it is judged by."""

from __future__ import annotations

from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import BaseModel, Field, SecretStr

from opsflows.thresholds import THRESHOLDS


class Thresholds(BaseModel):
    """Release thresholds; the defaults are the runbook's (``opsflows.thresholds``), the same
    numbers the alert rules fire on."""

    error_rate: float = Field(
        default=THRESHOLDS.error_rate, description="Max share of 5xx responses (0.5%)."
    )
    p95_latency_s: float = Field(
        default=THRESHOLDS.p95_latency_s, description="Max p95 latency in seconds."
    )


class KubeEnvironment(Block):
    """One environment of the web service: its Deployment, URLs and health thresholds."""

    _block_type_name: ClassVar[str] = "Opsflows Kube Environment"
    _block_type_slug: ClassVar[str] = "opsflows-kube-environment"
    _description: ClassVar[str | None] = "A Kubernetes environment of the web service."
    _documentation_url: ClassVar[Any] = (
        "https://kubernetes.io/docs/concepts/workloads/controllers/deployment/"
    )

    environment: str = Field(description="Environment name, e.g. staging or production.")
    api_url: str = Field(description="Kubernetes API server URL.")
    namespace: str = Field(description="Namespace of the Deployment.")
    deployment: str = Field(default="web-app", description="Deployment name.")
    container: str = Field(default="web", description="Container whose image is deployed.")
    service_url: str = Field(description="Base URL of the service (health and smoke tests).")
    prometheus_url: str = Field(description="Prometheus base URL for gates.")
    alertmanager_url: str = Field(
        default="http://127.0.0.1:19093",
        description="Alertmanager base URL (the pre-shift check asks it whether it is ready).",
    )
    token: SecretStr | None = Field(default=None, description="Bearer token for the API.")
    verify_ssl: bool = Field(default=True, description="Verify the API server certificate.")
    thresholds: Thresholds = Field(default_factory=Thresholds, description="Health thresholds.")
    max_replicas: int = Field(default=10, description="Upper bound for scale operations.")

    def api_client(self) -> Any:
        """An official ``kubernetes.client.ApiClient`` for this environment."""
        from kubernetes import client

        config = client.Configuration(host=self.api_url)
        config.verify_ssl = self.verify_ssl
        if self.token is not None:
            config.api_key = {"authorization": self.token.get_secret_value()}
            config.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(config)
