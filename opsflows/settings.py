"""Runtime settings: one class, one env prefix (``OPSFLOWS_``), no scattered ``os.getenv``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from opsflows.data_path_settings import DataPathSettings

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(DataPathSettings):
    """Where the local stack lives and how its services are reached (and, inherited, the
    bounds of the backup and restore paths: :mod:`opsflows.data_path_settings`)."""

    model_config = SettingsConfigDict(env_prefix="OPSFLOWS_", extra="ignore")

    state_dir: Path = Field(
        default=REPO_ROOT / ".devstack",
        description="Directory holding every devstack service's data, logs, pids and env file.",
    )
    host: str = Field(default="127.0.0.1", description="Address every local service binds.")
    prefect_port: int = Field(default=4200, description="Prefect server/UI port (0 = any free).")
    postgres_port: int = Field(default=55432, description="PostgreSQL port (0 = any free).")
    moto_port: int = Field(default=5055, description="moto S3/Secrets Manager port (0 = any free).")
    kube_port: int = Field(default=18080, description="Kubernetes simulator port (0 = any free).")
    app_staging_port: int = Field(default=18081, description="Sample app, staging (0 = any free).")
    app_production_port: int = Field(
        default=18082, description="Sample app, production (0 = any free)."
    )
    prometheus_port: int = Field(default=19090, description="Prometheus port (0 = any free).")
    webhook_port: int = Field(default=18090, description="CI webhook receiver port.")
    webhook_max_connections: int = Field(
        default=64,
        ge=2,
        le=10_000,
        description=(
            "Open connections the webhook receiver serves at once (uvicorn limit_concurrency): "
            "a request arriving when this many are open, itself included, gets 503."
        ),
    )
    webhook_header_timeout_s: float = Field(
        default=10,
        gt=0,
        le=300,
        description="The webhook receiver closes a connection whose request headers have not "
        "all arrived this many seconds after it opened (or after its first byte).",
    )
    webhook_body_timeout_s: float = Field(
        default=10,
        gt=0,
        le=300,
        description="The webhook receiver answers 408 (and closes) when a request body has not "
        "all arrived this many seconds after its headers.",
    )
    webhook_keep_alive_s: int = Field(
        default=5,
        ge=1,
        le=300,
        description="Idle seconds the webhook receiver keeps a connection open between requests.",
    )
    webhook_max_header_bytes: int = Field(
        default=16 * 1024,
        ge=4096,
        le=1024 * 1024,
        description="Largest request head (request line and headers) the webhook receiver "
        "parses (h11 max_incomplete_event_size); larger ones get 400.",
    )
    node_exporter_port: int = Field(default=19100, description="node_exporter (0 = any free).")
    postgres_exporter_port: int = Field(
        default=19187, description="postgres_exporter port (0 = any free)."
    )
    blackbox_port: int = Field(default=19115, description="blackbox_exporter (0 = any free).")
    alertmanager_port: int = Field(default=19093, description="Alertmanager (0 = any free).")
    tls_port: int = Field(
        default=18443, description="The stack's TLS endpoint, probed for certificate expiry."
    )
    roles_file: Path = Field(
        default=REPO_ROOT / "policy" / "roles.yaml",
        description=(
            "The roles policy (who may approve which gate, in which environment), read each "
            "time a run asks for an approval."
        ),
    )
    oncall_file: Path = Field(
        default=REPO_ROOT / "policy" / "oncall.yaml",
        description=(
            "The on-call schedule (rotation, overrides, the lead, each person's channel), read "
            "each time an incident pages and by `opsflows oncall`. Absent: pages follow the "
            "notification routing's severity routes and channels."
        ),
    )
    postgres_log_file: Path | None = Field(
        default=None,
        description=(
            "The PostgreSQL server log the monthly access-log review reads (it must run on "
            "the machine that holds it). The devstack's env names its own "
            "(<service dir>/postgres/postgres.log); the review's log_file parameter overrides."
        ),
    )
    alert_webhook_url: str = Field(
        default="",
        description=(
            "Where Alertmanager posts alerts (webhook_configs, version-4 JSON, bearer token "
            "from the state dir). Empty: the stack's receiver, "
            "http://<host>:<webhook_port>/alertmanager."
        ),
    )
    alert_group_wait_s: float = Field(
        default=10, gt=0, description="Alertmanager group_wait: first notification delay (s)."
    )
    alert_group_interval_s: float = Field(
        default=60, gt=0, description="Alertmanager group_interval: delay of a group's updates."
    )
    alert_repeat_interval_s: float = Field(
        default=4 * 3600, gt=0, description="Alertmanager repeat_interval for unresolved alerts."
    )
    alert_for_s: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Test stacks: cap every alert rule's `for:` and `keep_firing_for:` at this many "
            "seconds (machine-wide CPU, memory and disk rules keep theirs), so alerts fire and "
            "resolve within seconds. Unset: the rules as committed."
        ),
    )
    tls_cert_days: int = Field(
        default=90, ge=1, description="Validity of the TLS endpoint's first certificate."
    )
    tls_secret_name: str = Field(
        default="web-app-tls",
        description=(
            "The kubernetes.io/tls Secret (production namespace) the stack's TLS endpoint "
            "serves once it exists; renew-certificate installs into it."
        ),
    )
    app_volume_mb: float = Field(
        default=64, gt=0, description="Quota of each sample app's volume (the disk runbook's)."
    )
    prefect_database: Literal["postgres", "sqlite"] = Field(
        default="postgres",
        description=(
            "Where the devstack's Prefect server keeps its state: the stack's own PostgreSQL "
            "(a `prefect` database, as a production server runs; survives concurrent runs) or "
            "SQLite under the state dir (lighter, but answers 503 under concurrent writes)."
        ),
    )
    os_user: str = Field(
        default="opsflows",
        description=(
            "Unprivileged OS user running PostgreSQL, Prometheus, the exporters and "
            "Alertmanager (initdb refuses root)."
        ),
    )
    kube_namespace_staging: str = "staging"
    kube_namespace_production: str = "production"
    app_name: str = Field(default="web-app", description="Name of the sample app's Deployment.")
    change_lease_s: float = Field(
        default=120,
        ge=60,
        le=3600,
        description=(
            "Lease (s) on an environment's change lock, renewed while the change runs: the lock "
            "of a change whose process died is free at most this long after the death (plus "
            "the Prefect server's repossessor interval, 15 s by default). Prefect's minimum: 60. "
            "A backup's upload lease (procedures/upload_lease.py) lasts as long."
        ),
    )
    runner_limit: int = Field(
        default=40,
        ge=5,
        le=500,
        description=(
            "Runs the serving process (deployments/serve.py) runs at once. A run that waits "
            "for a person (a release approval, an incident acknowledgement) keeps its process, "
            "so Prefect's default of 5 let five open incidents hold back the sixth one's page "
            "and every scheduled backup. Runs fork from one preloaded process, so a waiting run "
            "costs little memory."
        ),
    )
    run_heartbeat_s: int = Field(
        default=30,
        ge=30,
        le=600,
        description=(
            "Seconds between the heartbeat events of every served flow run (Prefect's "
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY, set by deployments/serve.py; Prefect's minimum: "
            "30). Heartbeats are how a run whose process died is told from a slow one."
        ),
    )
    unresponsive_after_s: int = Field(
        default=90,
        ge=45,
        le=3600,
        description=(
            "Silence (s) after a flow run's last heartbeat before the 'crash unresponsive runs' "
            "automation marks it Crashed (which pages for production changes and rotations). "
            "Keep it at least 2 heartbeats: a live run that misses one must not be crashed."
        ),
    )

    incident_p2_page_after_s: float = Field(
        default=900,
        gt=0,
        description="A P2 incident pages the on-call this long after it opened unless it was "
        "acknowledged (the runbook: 'P2: page within 15 minutes').",
    )
    incident_secondary_after_s: float = Field(
        default=300,
        gt=0,
        description="No acknowledgement this long after the on-call was paged: page the "
        "secondary (the runbook: 'respond to pages within 5 minutes').",
    )
    incident_lead_after_s: float = Field(
        default=600,
        gt=0,
        description="No acknowledgement this long after the on-call was paged: page the "
        "engineering lead (the runbook's escalation path: 10 minutes).",
    )
    incident_reopen_window_s: float = Field(
        default=1800,
        ge=0,
        description="A group Alertmanager resolved that fires again within this many seconds "
        "flapped: its incident reopens (no second incident, no second page) instead of a new "
        "one opening. A person's resolution is never reopened. 0: every firing opens anew.",
    )
    incident_watch_s: float = Field(
        default=86400,
        gt=0,
        description="How long one incident flow run waits for acknowledgement and resolution; "
        "the incident stays open after that (a resolved notification still closes it).",
    )

    @model_validator(mode="after")
    def _lead_after_secondary(self) -> Settings:
        if self.incident_lead_after_s <= self.incident_secondary_after_s:
            raise ValueError(
                f"incident_lead_after_s ({self.incident_lead_after_s}) must be later than "
                f"incident_secondary_after_s ({self.incident_secondary_after_s})"
            )
        return self

    @model_validator(mode="after")
    def _window_outlasts_heartbeats(self) -> Settings:
        if self.unresponsive_after_s < 2 * self.run_heartbeat_s:
            raise ValueError(
                f"unresponsive_after_s ({self.unresponsive_after_s}) must be at least twice "
                f"run_heartbeat_s ({self.run_heartbeat_s}), or live runs get crashed"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()
