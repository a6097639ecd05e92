"""Runtime settings: one class, one env prefix (``OPSFLOWS_``), no scattered ``os.getenv``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Where the local stack lives and how its services are reached."""

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
        description="Unprivileged OS user running PostgreSQL and Prometheus (initdb refuses root).",
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
