"""Save the blocks and concurrency limits that point the runbooks at the local stack.

Run with the stack's environment exported (``opsflows bootstrap`` does that), because
Prefect reads ``PREFECT_API_URL`` when it is imported.
"""

from __future__ import annotations

from typing import Any

from devstack import postgres
from devstack.stack import AWS_REGION, BACKUP_BUCKET, MOTO_KEYS, StackInfo

#: Strict global concurrency limits: one change per environment at a time (deploys and
#: migrations of an environment share its limit).
CONCURRENCY_LIMITS = ("change-staging", "change-production")


def save_blocks(info: StackInfo, passwords: dict[str, str]) -> list[str]:
    """Register the block types and save every block the runbooks load; their names."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect_aws import AwsCredentials

    from blocks import BackupStore, KubeEnvironment, NotificationRouting, PostgresTarget
    from flows import common

    for cls in (BackupStore, KubeEnvironment, NotificationRouting, PostgresTarget):
        cls.register_type_and_schema()

    saved: list[str] = []

    def save(block: Any, name: str) -> None:
        block.save(name, overwrite=True)
        saved.append(f"{block.get_block_type_slug()}/{name}")

    creds = AwsCredentials(
        aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
        region_name=AWS_REGION,
        aws_client_parameters={"endpoint_url": info.aws_endpoint_url},
    )
    save(creds, common.AWS)
    save(
        BackupStore(bucket=BACKUP_BUCKET, prefix="backups/", aws_credentials=creds), common.BACKUPS
    )
    pg = {"host": info.host, "port": info.postgres_port}
    save(
        PostgresTarget(
            **pg,
            database=postgres.APP_DATABASE,
            user=postgres.APP_ROLE,
            password=passwords[postgres.APP_ROLE],
        ),
        common.APP_DB,
    )
    save(
        PostgresTarget(
            **pg,
            database=postgres.APP_DATABASE,
            user=postgres.ADMIN_USER,
            password=passwords["postgres"],
        ),
        common.APP_DB_ADMIN,
    )
    save(
        PostgresTarget(
            **pg,
            database=postgres.OPS_DATABASE,
            user=postgres.OPS_ROLE,
            password=passwords[postgres.OPS_ROLE],
        ),
        common.OPS_DB,
    )
    for env in ("staging", "production"):
        save(
            KubeEnvironment(
                environment=env,
                api_url=info.kube_url,
                namespace=env,
                deployment="web-app",
                service_url=info.app_url(env),
                prometheus_url=info.prometheus_url,
                verify_ssl=False,
            ),
            env,
        )
    for channel in ("page", "notify"):
        save(
            CustomWebhookNotificationBlock(
                name=f"devstack {channel}",
                url=f"{info.kube_url}/_sink/{channel}",
                json_data={"subject": "{{subject}}", "body": "{{body}}"},
                allow_private_urls=True,
            ),
            channel,
        )
    page, note = "custom-webhook/page", "custom-webhook/notify"
    routing = NotificationRouting(
        routes={"P1": [page, note], "P2": [page, note], "P3": [note], "P4": []}
    )
    save(routing, common.ROUTING)
    return saved


def create_concurrency_limits() -> list[str]:
    """Create (or keep) one strict limit of 1 per environment; their names."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for name in CONCURRENCY_LIMITS:
            client.upsert_global_concurrency_limit_by_name(name, 1)
    return list(CONCURRENCY_LIMITS)


def bootstrap(info: StackInfo, passwords: dict[str, str]) -> dict[str, list[str]]:
    """Everything the local stack needs saved in Prefect."""
    return {"blocks": save_blocks(info, passwords), "limits": create_concurrency_limits()}
