"""Stack smoke check: every service the runbooks depend on answers, with our credentials."""

# No `from __future__ import annotations`: served runs pickle the flow function by value,
# and string annotations would lose the names their parameter types need
# (tests/integration/test_served_flows.py).

from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect_aws import AwsCredentials

from blocks.kube import KubeEnvironment
from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from opsflows.errors import VerificationFailed
from procedures.operation import (
    APP_DB,
    AWS,
    BACKUPS,
    load_block,
    operation_log,
    try_load_ops_db,
)
from tasks.kube import read_deployment
from tasks.metrics import check_prometheus
from tasks.postgres import check_database
from tasks.probes import check_health
from tasks.secrets import check_secret
from tasks.storage import check_bucket


@flow(name="stack-smoke", log_prints=True)
def stack_smoke(
    database: str = APP_DB,
    backup_store: str = BACKUPS,
    aws_credentials: str = AWS,
    db_secret: str = "opsflows/app/db",
    environments: list[str] | None = None,
) -> dict[str, Any]:
    """Check PostgreSQL, S3, Secrets Manager, Kubernetes and Prometheus in one run.

    Args:
        database: PostgresTarget block of the application database.
        backup_store: BackupStore block of the backup bucket.
        aws_credentials: AwsCredentials block for Secrets Manager.
        db_secret: Secrets Manager id of the database credential.
        environments: KubeEnvironment blocks to check (default staging and production).
    """
    with operation_log(
        "stack smoke check", "verify the local stack answers", try_load_ops_db()
    ) as rec:
        envs = environments or ["staging", "production"]
        target = load_block(PostgresTarget, database)
        store = load_block(BackupStore, backup_store)
        creds = load_block(AwsCredentials, aws_credentials)
        kube_envs = [load_block(KubeEnvironment, name) for name in envs]
        results: dict[str, Any] = {
            "postgres": check_database(target).as_dict(),
            "s3": check_bucket(store),
            "secrets": check_secret(creds, db_secret),
        }
        for env in kube_envs:
            results[f"kube:{env.environment}"] = read_deployment(env)
            health = check_health(env.service_url)
            results[f"health:{env.environment}"] = health
            if health["status"] != 200:
                raise VerificationFailed(
                    f"{env.environment} health check answered {health['status']}",
                    hint=f"look at the service behind {env.service_url}",
                )
        results["prometheus"] = check_prometheus(kube_envs[0].prometheus_url)
        create_table_artifact(
            key="stack-smoke",
            table=[{"check": k, "result": str(v)} for k, v in results.items()],
            description="What each service answered",
        )
        rec.impact = "none (read-only checks)"
        rec.details = {k: str(v)[:200] for k, v in results.items()}
        return results
